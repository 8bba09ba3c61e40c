"""Old path of the campaign jobs, kept for one release (queued jobs name it): see kinnekt/campaigns/tasks.py."""
from kinnekt.campaigns.tasks import (  # noqa: F401
    SEND_CAMPAIGN,
    after_lost_sender,
    requeue_campaigns,
    requeue_lost_senders,
    send_campaign,
    start_campaign,
    start_due_campaigns,
    wake_campaign,
    watch_senders,
)
