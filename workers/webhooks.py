"""Job: process one stored Shopify webhook event by its topic's handler."""
from __future__ import annotations

import logging

from kinnekt.db import Session, utcnow
from kinnekt.models import WebhookEvent
from kinnekt.shopify import handlers as _registered_handlers  # noqa: F401  (registers every topic's handler)
from kinnekt.shopify import webhook_handlers
from workers import job

log = logging.getLogger(__name__)


@job
def process_webhook_event(event_id: int) -> str:
    """Run the topic's handler for one event once; returns what happened ("processed", "skipped", ...).

    The handler returns a note (what it did, or why it did nothing) that is kept on the event. A handler
    that raises leaves the event unprocessed with the error and a counted attempt, for recovery to retry.
    """
    event = Session.get(WebhookEvent, event_id)
    if event is None:
        return "missing"
    if event.processed_at is not None:
        return "already processed"
    handler = webhook_handlers.handler_for(event.topic)
    event.attempts += 1
    if handler is None:
        event.processed_at = utcnow()
        event.error = f"no handler for topic {event.topic}"  # a topic we never subscribed to: worth a look
        Session.commit()
        return "skipped"
    Session.commit()  # the attempt counts even if the worker dies inside the handler
    try:
        note = handler(event)
    except Exception as exc:
        Session.rollback()
        event = Session.get(WebhookEvent, event_id)
        if event is not None:
            event.error = f"{type(exc).__name__}: {exc}"[:2000]
            Session.commit()
        log.exception("webhook event %s (%s) failed", event_id, getattr(event, "topic", "?"))
        raise
    event = Session.get(WebhookEvent, event_id)
    if event is None:
        return "processed"
    event.processed_at = utcnow()
    event.error = None
    event.note = note
    Session.commit()
    return "processed"
