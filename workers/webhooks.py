"""Old path of the webhook job, kept for one release (queued jobs name it): see kinnekt/shopify/tasks.py."""
from kinnekt.shopify.tasks import process_webhook_event  # noqa: F401
