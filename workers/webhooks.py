"""Job: process one stored Shopify webhook event by its topic's handler."""
from __future__ import annotations

import logging

from kinnekt.db import Session, utcnow
from kinnekt.models import WebhookEvent
from kinnekt.shopify import webhook_handlers
from workers import job

log = logging.getLogger(__name__)


@job
def process_webhook_event(event_id: int) -> str:
    """Run the topic's handler for one event once; returns what happened ("processed", "skipped", ...)."""
    event = Session.get(WebhookEvent, event_id)
    if event is None:
        return "missing"
    if event.processed_at is not None:
        return "already processed"
    handler = webhook_handlers.handler_for(event.topic)
    event.attempts += 1
    if handler is None:
        event.processed_at = utcnow()
        event.error = f"no handler for topic {event.topic}"
        Session.commit()
        return "skipped"
    try:
        handler(event)
    except Exception as exc:
        Session.rollback()
        event = Session.get(WebhookEvent, event_id)
        event.attempts += 1
        event.error = f"{type(exc).__name__}: {exc}"[:2000]
        Session.commit()
        raise
    event.processed_at = utcnow()
    event.error = None
    Session.commit()
    return "processed"
