"""Everything that speaks to Shopify: session tokens, tokens, webhooks, GraphQL, sync."""
