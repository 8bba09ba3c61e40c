"""Old path of the housekeeping jobs, kept for one release (queued jobs name it): see kinnekt/jobs.py and the
domain tasks modules."""
from kinnekt.jobs import RECOVERERS, recover_due_work, refresh_statistics, register_recoverer  # noqa: F401
from kinnekt.shopify.tasks import prune_webhook_events, requeue_unprocessed_webhooks  # noqa: F401
from kinnekt.subscribers.tasks import prune_signup_attempts  # noqa: F401
