"""What shoppers do on the storefront, from the app's web pixel: checking batches, storing them, who did it,
rate limits and retention."""
