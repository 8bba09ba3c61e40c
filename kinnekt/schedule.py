"""The periodic jobs, in one list used by `rq cron` (workers/cron.py) and by the in-process queue, and the start
of the in-process queue's background work."""
from __future__ import annotations

from kinnekt import defaults
from kinnekt.automations.tasks import fire_all_automations
from kinnekt.campaigns.tasks import start_due_campaigns, watch_senders
from kinnekt.jobs import (
    enqueue_recover_due_work,
    enqueue_refresh_statistics,
    import_task_modules,
    recover_due_work,
    refresh_statistics,
)
from kinnekt.queue import InProcessQueue, Periodic
from kinnekt.segments.tasks import sweep_segments
from kinnekt.shopify.tasks import prune_webhook_events, reconcile_all
from kinnekt.sms.tasks import prune_signature_nonces
from kinnekt.subscribers.tasks import prune_signup_attempts


def periodic_jobs() -> list[Periodic]:
    """Every job that runs on a timer, with its interval in seconds."""
    import_task_modules()  # every recoverer registers, for the recovery job run by the timer
    return [
        Periodic("recover_due_work", recover_due_work, defaults.RECOVERY_INTERVAL_SECONDS),
        Periodic("prune_webhook_events", prune_webhook_events, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("reconcile_shopify", reconcile_all, defaults.RECONCILE_INTERVAL_SECONDS),
        Periodic("sweep_segments", sweep_segments, defaults.SEGMENT_SWEEP_INTERVAL_SECONDS),
        Periodic("prune_signature_nonces", prune_signature_nonces, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("prune_signup_attempts", prune_signup_attempts, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("start_due_campaigns", start_due_campaigns, defaults.CAMPAIGN_DUE_SCAN_SECONDS),
        Periodic("fire_automations", fire_all_automations, defaults.AUTOMATION_SCAN_SECONDS),
        Periodic("watch_senders", watch_senders, defaults.SENDER_WATCH_SECONDS),
        Periodic("refresh_statistics", refresh_statistics, defaults.STATISTICS_INTERVAL_SECONDS),
    ]


def start_background(app) -> None:
    """In-process mode: start the periodic jobs and queue start-up recovery (RQ workers do this themselves)."""
    queue = app.extensions.get("kinnekt_queue")
    if not isinstance(queue, InProcessQueue) or app.extensions.get("kinnekt_background_started"):
        return
    app.extensions["kinnekt_background_started"] = True
    queue.start_periodic(periodic_jobs())
    enqueue_recover_due_work(queue)
    # A database from before statistics were kept (or copied in) gets them now, not an interval later.
    enqueue_refresh_statistics(queue)
