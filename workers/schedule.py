"""The periodic jobs, in one list used by `rq cron` (workers/cron.py) and by the in-process queue."""
from __future__ import annotations

from kinnekt import defaults
from kinnekt.queue import Periodic
from kinnekt.segments.tasks import update_lifecycle_stages
from workers.automations import fire_all_automations
from workers.campaigns import start_due_campaigns, watch_senders
from workers.jobs import prune_signup_attempts, prune_webhook_events, recover_due_work, refresh_statistics
from workers.shopify import reconcile_all
from workers.segments import sweep_segments
from workers.sms import prune_signature_nonces
import workers.subscribers  # noqa: F401 (no periodic job; imported so that recovery resumes lost imports)


def periodic_jobs() -> list[Periodic]:
    """Every job that runs on a timer, with its interval in seconds."""
    return [
        Periodic("recover_due_work", recover_due_work, defaults.RECOVERY_INTERVAL_SECONDS),
        Periodic("prune_webhook_events", prune_webhook_events, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("reconcile_shopify", reconcile_all, defaults.RECONCILE_INTERVAL_SECONDS),
        Periodic("sweep_segments", sweep_segments, defaults.SEGMENT_SWEEP_INTERVAL_SECONDS),
        Periodic("update_lifecycle_stages", update_lifecycle_stages, defaults.LIFECYCLE_INTERVAL_SECONDS),
        Periodic("prune_signature_nonces", prune_signature_nonces, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("prune_signup_attempts", prune_signup_attempts, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("start_due_campaigns", start_due_campaigns, defaults.CAMPAIGN_DUE_SCAN_SECONDS),
        Periodic("fire_automations", fire_all_automations, defaults.AUTOMATION_SCAN_SECONDS),
        Periodic("watch_senders", watch_senders, defaults.SENDER_WATCH_SECONDS),
        Periodic("refresh_statistics", refresh_statistics, defaults.STATISTICS_INTERVAL_SECONDS),
    ]
