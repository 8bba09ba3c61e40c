"""Old path of the Shopify jobs, kept for one release (queued jobs name it): see kinnekt/shopify/tasks.py."""
from kinnekt.shopify.tasks import (  # noqa: F401
    LOST_ACCESS,
    import_bulk_result,
    install_shop,
    poll_bulk,
    reconcile,
    reconcile_all,
    requeue_shopify_work,
    start_bulk_sync,
)
