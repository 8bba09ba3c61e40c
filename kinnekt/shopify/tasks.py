"""Shopify jobs: install a shop, run and follow the bulk sync, import result files, reconcile changes, process
stored webhook events and prune old ones, write SMS consent changed here back to Shopify, and create or update the
web pixel."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from sqlalchemy import delete, select

from kinnekt import defaults, signals
from kinnekt.db import Session, utcnow
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import Shop, SyncOperation, WebhookEvent
from kinnekt.models.shop import SyncStatus
from kinnekt.models.sync import OperationStatus
from kinnekt.queue import get_queue
from kinnekt.shopify import bulk, consent, install, webhook_handlers
from kinnekt.shopify import handlers as _registered_handlers  # noqa: F401  (registers every topic's handler)
from kinnekt.shopify import reconcile as reconciliation
from kinnekt.shopify.errors import ShopifyError
from kinnekt.shopify.tokens import NotConnected

log = logging.getLogger(__name__)

LOST_ACCESS = "Shopify access was lost; open Kinnekt from your Shopify admin, then resync"



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
    """Write a subscriber's SMS consent (an opt-in or opt-out made here) to its Shopify customer.

    A change made while this job runs is not queued again (its id is taken), so the job writes until the state
    it wrote is still the subscriber's (at most a few rounds: each round writes the newest state).
    """
    outcome = "nothing to write"
    for _ in range(defaults.CONSENT_WRITE_ROUNDS):
        try:
            result = consent.write(Session, subscriber_id)
        except NotConnected as exc:
            log.info("subscriber %s: consent not written, shop not connected: %s", subscriber_id, exc)
            return "not connected"
        if not result.startswith("written"):
            return result if outcome == "nothing to write" else outcome
        outcome = result
    return outcome


def enqueue_write_back_sms_consent(subscriber_id: int) -> None:
    """Queue the write-back of a subscriber's SMS consent to Shopify (one job per subscriber at a time)."""
    get_queue().enqueue(write_back_sms_consent, subscriber_id, job_id=f"sms-consent-{subscriber_id}")


@signals.sms_consent_changed.connect
def _consent_changed_here(session, *, subscriber_id: int) -> None:
    """Receiver of kinnekt.signals.sms_consent_changed (sent by kinnekt.subscribers.optin)."""
    enqueue_write_back_sms_consent(subscriber_id)


# -------------------------------------------------------------------------------------------------- web pixel

@job
def connect_web_pixel(shop_id: int) -> str:
    """Create or update the shop's web pixel with its key and the ingest endpoint (kinnekt.shopify.pixel)."""
    from kinnekt.shopify import pixel
    shop = _shop(shop_id)
    if shop is None or shop.is_demo:
        return "skipped"
    try:
        return pixel.connect(Session, shop)
    except NotConnected as exc:
        log.warning("web pixel of %s waits for the merchant: %s", shop.domain, exc)
        return "not connected"


def enqueue_connect_web_pixel(shop_id: int) -> None:
    """Queue the web pixel's creation or update for a shop (one queued job per shop)."""
    get_queue().enqueue(connect_web_pixel, shop_id, job_id=web_pixel_job_id(shop_id))


def web_pixel_job_id(shop_id: int) -> str:
    """The job id of a shop's web pixel job (the Settings card asks whether it is still queued or running)."""
    return f"web-pixel-{shop_id}"


# -------------------------------------------------------------------------------------------------- Shopify segments

@job(lane="bulk")
def refresh_shopify_segments(shop_id: int) -> dict | str:
    """List the shop's Shopify customer segments and read their members (kinnekt.shopify.customer_segments); the
    Kinnekt segments that use a changed one are re-checked."""
    from kinnekt.shopify import customer_segments
    shop = _shop(shop_id)
    if shop is None or shop.is_demo:
        return "skipped"
    try:
        result = customer_segments.refresh(Session, shop)
    except NotConnected as exc:
        log.warning("Shopify segments of %s wait for the merchant: %s", shop.domain, exc)
        return "not connected"
    return dataclasses.asdict(result)


def enqueue_refresh_shopify_segments(shop_id: int) -> None:
    """Queue a refresh of the shop's Shopify segments (one queued or running per shop)."""
    get_queue().enqueue(refresh_shopify_segments, shop_id, job_id=f"shopify-segments-{shop_id}")


@job
def refresh_all_shopify_segments() -> int:
    """The periodic refresh: queue one for every connected shop; returns how many."""
    shop_ids = list(Session.scalars(select(Shop.id).where(
        Shop.installed_at.is_not(None), Shop.uninstalled_at.is_(None), Shop.needs_reauth.is_(False),
        Shop.is_demo.is_(False), Shop.access_token_enc.is_not(None)).order_by(Shop.id)))
    for shop_id in shop_ids:
        enqueue_refresh_shopify_segments(shop_id)
    return len(shop_ids)


# -------------------------------------------------------------------------------------------------- tag mirrors

def tag_mirror_group(shop_id: int) -> str:
    """The name under which a shop's segments owing a tag mirror sync pile up (kinnekt.queue's batched jobs)."""
    return f"tag-mirror:{shop_id}"


@job(lane="bulk")
def sync_tag_mirrors(shop_id: int) -> dict:
    """Sync the tag mirrors of the shop's segments that piled up (kinnekt.shopify.tag_mirror), until none is left;
    returns the customers tagged and untagged. One run per shop at a time takes them all."""
    from kinnekt.shopify import tag_mirror
    queue = get_queue()
    shop = Session.get(Shop, shop_id)
    totals = {"added": 0, "removed": 0, "requests": 0, "failed": 0, "skipped": 0, "errors": 0}
    while segment_ids := queue.take_batch(tag_mirror_group(shop_id)):
        if shop is None or not shop.installed or shop.is_demo:
            continue
        for segment_id in segment_ids:
            try:
                result = tag_mirror.sync(Session, shop, segment_id)
            except NotConnected as exc:
                log.warning("tag mirror of segment %s waits for the merchant: %s", segment_id, exc)
                continue
            except ShopifyError as exc:  # recorded on the mirror; the safety net tries again within the hour
                log.warning("tag mirror of segment %s failed: %s", segment_id, exc)
                totals["errors"] += 1
                continue
            for key in ("added", "removed", "requests", "failed"):
                totals[key] += getattr(result, key)
            totals["skipped"] += int(result.skipped)
    return totals


def enqueue_sync_tag_mirrors(shop_id: int, segment_ids: list[int]) -> None:
    """Add these segments to the shop's pending tag mirror syncs; one run per shop at a time takes them."""
    get_queue().enqueue_batched(sync_tag_mirrors, tag_mirror_group(shop_id), shop_id, segment_ids)


@register_recoverer
def requeue_pending_tag_mirrors() -> int:
    """Queue a run for every shop with tag mirror syncs pending (a run lost with its worker leaves them)."""
    pending_batches = getattr(get_queue(), "pending_batches", None)  # a test's stand-in queue has none
    groups = pending_batches("tag-mirror:") if pending_batches else []
    for group in groups:
        get_queue().enqueue(sync_tag_mirrors, int(group.split(":", 1)[1]))
    return len(groups)


@job
def sync_all_tag_mirrors() -> int:
    """The hourly safety net: queue a sync of every mirror (one found out of step is put right); returns how many."""
    from kinnekt.shopify import tag_mirror
    found = tag_mirror.all_mirrors(Session)
    for shop_id, segment_ids in found.items():
        enqueue_sync_tag_mirrors(shop_id, segment_ids)
    return sum(len(ids) for ids in found.values())
