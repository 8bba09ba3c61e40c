"""Shopify jobs: install a shop, run and follow the bulk sync, import result files, reconcile changes, process
stored webhook events and prune old ones, and write an opt-out back to Shopify."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, select

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import Customer, Shop, Subscriber, SyncOperation, WebhookEvent
from kinnekt.models.shop import SyncStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.models.sync import OperationStatus
from kinnekt.queue import get_queue
from kinnekt.shopify import bulk, install, webhook_handlers
from kinnekt.shopify import handlers as _registered_handlers  # noqa: F401  (registers every topic's handler)
from kinnekt.shopify import reconcile as reconciliation
from kinnekt.shopify.graphql import client_for, gid
from kinnekt.shopify.tokens import NotConnected

log = logging.getLogger(__name__)

LOST_ACCESS = "Shopify access was lost; open Kinnekt from your Shopify admin, then resync"

CONSENT_MUTATION = """
mutation KinnektSmsOptOut($input: CustomerSmsMarketingConsentUpdateInput!) {
  customerSmsMarketingConsentUpdate(input: $input) {
    customer { id }
    userErrors { field message }
  }
}
"""


def _shop(shop_id: int) -> Shop | None:
    shop = Session.get(Shop, shop_id)
    if shop is None or not shop.installed:
        log.info("shop %s is gone or uninstalled; nothing to do", shop_id)
        return None
    return shop


# ------------------------------------------------------------------------------------------------ install, sync

@job(lane="bulk")
def install_shop(shop_id: int) -> str:
    """Read the shop's details, create its default segments and start its initial sync."""
    shop = _shop(shop_id)
    if shop is None:
        return "skipped"
    try:
        install.complete_install(shop)
    except NotConnected as exc:
        log.warning("install of %s waits for the merchant: %s", shop.domain, exc)
        return "not connected"
    return "installed"


def enqueue_install_shop(shop_id: int) -> None:
    """Queue the install job of a shop (one at a time)."""
    get_queue().enqueue(install_shop, shop_id, job_id=f"install-shop-{shop_id}")


@job(lane="bulk")
def start_bulk_sync(shop_id: int) -> str:
    """Start the bulk queries of a full sync."""
    shop = _shop(shop_id)
    if shop is None:
        return "skipped"
    try:
        bulk.start_sync(shop)
    except NotConnected:
        Session.rollback()
        shop = Session.get(Shop, shop_id)
        shop.sync_status = SyncStatus.FAILED
        Session.commit()
        bulk.fail_sync(shop, LOST_ACCESS)
        return "not connected"
    return "started"


def enqueue_start_bulk_sync(shop_id: int) -> None:
    """Queue the start of a shop's full sync (one at a time)."""
    get_queue().enqueue(start_bulk_sync, shop_id, job_id=f"bulk-start-{shop_id}")


@job(lane="bulk")
def poll_bulk(shop_id: int) -> str:
    """Ask Shopify how the shop's bulk operations are doing and move the sync on."""
    shop = _shop(shop_id)
    if shop is None or shop.sync_status not in SyncStatus.ACTIVE:
        return "skipped"
    try:
        bulk.poll(shop)
    except NotConnected:
        bulk.fail_sync(shop, LOST_ACCESS)
        return "not connected"
    return shop.sync_status


POLL_REASONS = ("finished", "poll", "recover")
"""Why a poll is queued: a bulk operation's finish webhook (one poll per operation), the next poll of a running
sync (one per shop), recovery of a running sync (one per shop)."""


def enqueue_poll_bulk(shop_id: int, *, reason: str, operation_id: int | None = None,
                      delay: dt.timedelta | None = None) -> None:
    """Queue a poll of the shop's bulk operations, after `delay` if given; `reason` (POLL_REASONS) and, for
    "finished", the operation that finished make the job id."""
    if reason not in POLL_REASONS:
        raise ValueError(f"unknown poll reason {reason!r}")
    if (reason == "finished") != (operation_id is not None):
        raise ValueError("an operation id goes with the reason 'finished' only")
    job_id = f"bulk-finished-{operation_id}" if reason == "finished" else f"bulk-{reason}-{shop_id}"
    if delay is None:
        get_queue().enqueue(poll_bulk, shop_id, job_id=job_id)
    else:
        get_queue().enqueue_in(delay, poll_bulk, shop_id, job_id=job_id)


@job(lane="bulk")
def import_bulk_result(operation_id: int) -> int:
    """Stream one finished bulk result file into the database."""
    operation = Session.get(SyncOperation, operation_id)
    if operation is None or operation.status != OperationStatus.IMPORTING:
        return 0
    return bulk.import_result(operation)


def enqueue_import_bulk_result(operation_id: int) -> None:
    """Queue the import of one finished bulk result file (one at a time)."""
    get_queue().enqueue(import_bulk_result, operation_id, job_id=f"bulk-import-{operation_id}")


@job(lane="bulk")
def reconcile(shop_id: int) -> dict:
    """Fetch what changed at Shopify since the shop's last reconciliation."""
    shop = _shop(shop_id)
    if shop is None:
        return {}
    try:
        report = reconciliation.reconcile(shop)
    except NotConnected as exc:
        log.warning("cannot reconcile %s: %s", shop.domain, exc)
        return {}
    return report.counts


def enqueue_reconcile(shop_id: int) -> None:
    """Queue a reconciliation of the shop (one at a time)."""
    get_queue().enqueue(reconcile, shop_id, job_id=f"reconcile-{shop_id}")


@job
def reconcile_all() -> int:
    """Queue a reconciliation for every connected, synced shop (the periodic entry point)."""
    shop_ids = reconciliation.due_shops()
    for shop_id in shop_ids:
        enqueue_reconcile(shop_id)
    return len(shop_ids)


@register_recoverer
def requeue_shopify_work() -> int:
    """Start-up recovery: installs that never ran, queued or running syncs, imports a crash interrupted."""
    queued = 0
    for shop_id in Session.scalars(select(Shop.id).where(
            Shop.installed_at.is_not(None), Shop.uninstalled_at.is_(None), Shop.needs_reauth.is_(False),
            Shop.is_demo.is_(False), Shop.access_token_enc.is_not(None), Shop.sync_status == SyncStatus.NEVER)):
        enqueue_install_shop(shop_id)
        queued += 1
    for shop_id, status in Session.execute(select(Shop.id, Shop.sync_status).where(
            Shop.sync_status.in_(SyncStatus.ACTIVE), Shop.uninstalled_at.is_(None))):
        if status == SyncStatus.QUEUED:
            enqueue_start_bulk_sync(shop_id)
        else:
            enqueue_poll_bulk(shop_id, reason="recover")
        queued += 1
    stale = utcnow() - dt.timedelta(seconds=defaults.BULK_IMPORT_STALE_SECONDS)
    for operation in Session.scalars(select(SyncOperation).where(
            SyncOperation.status == OperationStatus.IMPORTING, SyncOperation.updated_at < stale)):
        enqueue_import_bulk_result(operation.id)
        queued += 1
    return queued


# ------------------------------------------------------------------------------------------------ webhooks

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


def webhook_job_id(event_id: int) -> str:
    """The job id of an event's processing (recovery asks the queue which of them are still waiting)."""
    return f"webhook-{event_id}"


def enqueue_process_webhook_event(event_id: int) -> None:
    """Queue processing of a stored event (one job per event id, the id recovery uses too)."""
    get_queue().enqueue(process_webhook_event, event_id, job_id=webhook_job_id(event_id))


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
    queue = get_queue()
    waiting = queue.unfinished(webhook_job_id(event_id) for event_id in ids)  # a backlog, not lost: left alone
    lost = [event_id for event_id in ids if webhook_job_id(event_id) not in waiting]
    for event_id in lost:
        queue.enqueue(process_webhook_event, event_id, job_id=webhook_job_id(event_id))
    return len(lost)


@job
def prune_webhook_events() -> int:
    """Delete processed webhook events older than the retention period; returns how many."""
    cutoff = utcnow() - dt.timedelta(days=defaults.WEBHOOK_RETENTION_DAYS)
    result = Session.execute(
        delete(WebhookEvent).where(WebhookEvent.processed_at.is_not(None), WebhookEvent.received_at < cutoff))
    Session.commit()
    return result.rowcount or 0


# ------------------------------------------------------------------------------------------------ consent

@job
def write_back_sms_consent(subscriber_id: int) -> str:
    """Tell Shopify that a subscriber linked to a customer opted out here (customerSmsMarketingConsentUpdate)."""
    subscriber = Session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.customer_id is None or subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        return "nothing to write"
    customer = Session.get(Customer, subscriber.customer_id)
    shop = Session.get(Shop, subscriber.shop_id)
    if customer is None or shop is None or shop.is_demo or not shop.installed:
        return "nothing to write"
    when = (subscriber.unsubscribed_at or utcnow()).astimezone(dt.timezone.utc)
    data = client_for(shop).query(CONSENT_MUTATION, {"input": {
        "customerId": gid("Customer", customer.shopify_id),
        "smsMarketingConsent": {"marketingState": "UNSUBSCRIBED",
                                "consentUpdatedAt": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }})
    errors = ((data or {}).get("customerSmsMarketingConsentUpdate") or {}).get("userErrors") or []
    if errors:
        log.warning("subscriber %s: Shopify refused the opt-out: %s", subscriber_id, errors)
        return "refused: " + "; ".join(str(e.get("message")) for e in errors)
    return "written"


def enqueue_write_back_sms_consent(subscriber_id: int) -> None:
    """Queue the write-back of a subscriber's opt-out to Shopify (one at a time)."""
    get_queue().enqueue(write_back_sms_consent, subscriber_id, job_id=f"sms-consent-{subscriber_id}")
