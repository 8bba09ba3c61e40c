"""Shopify data ingestion: source-neutral rows and the upserts that store them."""
