"""The periodic jobs, in one list used by `rq cron` (workers/cron.py) and by the in-process queue, and the start
of the in-process queue's background work."""
from __future__ import annotations

from kinnekt import defaults
from kinnekt.audiences.tasks import sync_due_audiences
from kinnekt.automations.tasks import fire_all_automations
from kinnekt.campaigns.tasks import start_due_campaigns, watch_senders
from kinnekt.flows.tasks import run_all_flows
from kinnekt.jobs import (
    enqueue_recover_due_work,
    enqueue_refresh_statistics,
    import_task_modules,
    recover_due_work,
    refresh_statistics,
)
from kinnekt.queue import InProcessQueue, Periodic
from kinnekt.segments.tasks import sweep_segments, update_lifecycle_stages
from kinnekt.shopify.tasks import (prune_webhook_events, reconcile_all, refresh_all_shopify_segments,
                                   sync_all_tag_mirrors)
from kinnekt.sms.tasks import poll_registrations, prune_signature_nonces
from kinnekt.storefront.tasks import prune_storefront_events
from kinnekt.subscribers.tasks import prune_import_drafts, prune_signup_attempts


def periodic_jobs() -> list[Periodic]:
    """Every job that runs on a timer, with its interval in seconds."""
    import_task_modules()  # every recoverer registers, for the recovery job run by the timer
    return [
        Periodic("recover_due_work", recover_due_work, defaults.RECOVERY_INTERVAL_SECONDS),
        Periodic("prune_webhook_events", prune_webhook_events, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("reconcile_shopify", reconcile_all, defaults.RECONCILE_INTERVAL_SECONDS),
        Periodic("sweep_segments", sweep_segments, defaults.SEGMENT_SWEEP_INTERVAL_SECONDS),
        Periodic("update_lifecycle_stages", update_lifecycle_stages, defaults.LIFECYCLE_INTERVAL_SECONDS),
        Periodic("prune_signature_nonces", prune_signature_nonces, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("prune_signup_attempts", prune_signup_attempts, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("prune_import_drafts", prune_import_drafts, defaults.PRUNE_INTERVAL_SECONDS),
        Periodic("start_due_campaigns", start_due_campaigns, defaults.CAMPAIGN_DUE_SCAN_SECONDS),
        Periodic("fire_automations", fire_all_automations, defaults.AUTOMATION_SCAN_SECONDS),
        Periodic("run_flows", run_all_flows, defaults.FLOW_ADVANCE_SECONDS),
        Periodic("watch_senders", watch_senders, defaults.SENDER_WATCH_SECONDS),
        Periodic("refresh_statistics", refresh_statistics, defaults.STATISTICS_INTERVAL_SECONDS),
        Periodic("refresh_shopify_segments", refresh_all_shopify_segments, defaults.SHOPIFY_SEGMENT_REFRESH_SECONDS),
        Periodic("sync_tag_mirrors", sync_all_tag_mirrors, defaults.SHOPIFY_TAG_SAFETY_NET_SECONDS),
        Periodic("prune_storefront_events", prune_storefront_events, defaults.STOREFRONT_PRUNE_INTERVAL_SECONDS),
        Periodic("poll_registrations", poll_registrations, defaults.REGISTRATION_POLL_SECONDS),
        Periodic("sync_audiences", sync_due_audiences, defaults.AUDIENCE_SCAN_INTERVAL_SECONDS),
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
