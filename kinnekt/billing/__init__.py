"""Billing through Shopify: the shop's plan, usage records for accepted messages, and what sending may spend."""
