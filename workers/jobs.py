"""Jobs that belong to no single domain: start-up recovery of due work and housekeeping."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, select

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import WebhookEvent
from kinnekt.queue import get_queue
from workers import job

log = logging.getLogger(__name__)

# Domain modules add (name, function) pairs here; each function returns how many jobs it queued again.
RECOVERERS: list = []


def register_recoverer(func):
    """Add a function that finds unfinished work in the database and queues it again (used at start-up)."""
    RECOVERERS.append(func)
    return func


@job
def recover_due_work() -> dict[str, int]:
    """Queue again everything the database says is due or unfinished; safe to run any number of times."""
    import workers.schedule  # noqa: F401  (imports every job module, so each registers its recoverer)
    counts = {}
    for func in RECOVERERS:
        counts[func.__name__] = func()
    log.info("start-up recovery queued: %s", counts)
    return counts


@register_recoverer
def requeue_unprocessed_webhooks() -> int:
    """Queue webhook events stored but not processed (a crash or a lost in-process queue)."""
    cutoff = utcnow() - dt.timedelta(seconds=defaults.WEBHOOK_RECOVERY_GRACE_SECONDS)
    ids = Session.scalars(
        select(WebhookEvent.id)
        .where(WebhookEvent.processed_at.is_(None), WebhookEvent.received_at <= cutoff,
               WebhookEvent.attempts < defaults.WEBHOOK_MAX_ATTEMPTS)
        .order_by(WebhookEvent.id)
    ).all()
    from workers.webhooks import process_webhook_event
    queue = get_queue()
    waiting = queue.unfinished(f"webhook-{event_id}" for event_id in ids)  # a backlog, not lost: left alone
    lost = [event_id for event_id in ids if f"webhook-{event_id}" not in waiting]
    for event_id in lost:
        queue.enqueue(process_webhook_event, event_id, job_id=f"webhook-{event_id}")
    return len(lost)


@job
def prune_webhook_events() -> int:
    """Delete processed webhook events older than the retention period; returns how many."""
    cutoff = utcnow() - dt.timedelta(days=defaults.WEBHOOK_RETENTION_DAYS)
    result = Session.execute(
        delete(WebhookEvent).where(WebhookEvent.processed_at.is_not(None), WebhookEvent.received_at < cutoff))
    Session.commit()
    return result.rowcount or 0


@job
def prune_signup_attempts() -> int:
    """Delete sign-up attempts older than the popup's limits look back; returns how many."""
    from kinnekt.subscribers import signup_limits
    return signup_limits.prune(Session())


@job
def refresh_statistics() -> float | None:
    """Gather SQLite's planner statistics again (PostgreSQL: nothing, autovacuum does it); seconds taken."""
    from kinnekt import db_statistics
    return db_statistics.refresh(Session)
