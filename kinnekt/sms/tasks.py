"""Jobs of the SMS channel: send queued texts, retry early delivery receipts, prune signature nonces, and recover
replies whose send job was lost."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, select, update

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import Message, SignatureNonce
from kinnekt.models.message import MessageStatus
from kinnekt.queue import get_queue
from kinnekt.sms import outgoing, receipts

log = logging.getLogger(__name__)


@job(lane="urgent")
def send_message(message_id: int) -> str:
    """Send one queued reply/confirmation/test message exactly once; returns the outcome."""
    return outgoing.deliver(Session(), message_id)


def enqueue_send_message(message_id: int, *, attempt: int, delay: float = 0) -> None:
    """Queue attempt number `attempt` to send a message, after `delay` seconds if given (one job per attempt)."""
    job_id = f"sms-send-{message_id}-{attempt}"
    if delay:
        get_queue().enqueue_in(dt.timedelta(seconds=delay), send_message, message_id, job_id=job_id)
    else:
        get_queue().enqueue(send_message, message_id, job_id=job_id)


@job
def process_receipt(params: dict, attempt: int = 1) -> str:
    """Apply a delivery receipt whose message was not found yet; looks again a few times, then logs it."""
    outcome = receipts.apply(Session(), params)
    if outcome == "no message":
        if attempt < defaults.SMS_RECEIPT_MAX_ATTEMPTS:
            enqueue_process_receipt(params, attempt + 1)
        else:
            log.warning("delivery receipt for no message of ours: message_uuid=%s client_ref=%s",
                        params.get("message_uuid"), params.get("client_ref"))
    return outcome


def enqueue_process_receipt(params: dict, attempt: int) -> None:
    """Queue look number `attempt` (2 and up) at a receipt whose message was not found, after a growing wait."""
    get_queue().enqueue_in(dt.timedelta(seconds=defaults.SMS_RECEIPT_RETRY_SECONDS * (attempt - 1)),
                           process_receipt, params, attempt)


@job
def prune_signature_nonces() -> int:
    """Delete nonces older than the signature window (a replay that old fails the timestamp check anyway)."""
    cutoff = utcnow() - dt.timedelta(seconds=2 * defaults.SMS_SIGNATURE_MAX_AGE_SECONDS)
    result = Session.execute(delete(SignatureNonce).where(SignatureNonce.seen_at < cutoff))
    Session.commit()
    return result.rowcount or 0


@register_recoverer
def requeue_due_replies() -> int:
    """Queue pending replies whose send job was lost (and claimed ones whose worker died: nothing was requested),
    and settle replies stuck "sending" as unknown (never resent)."""
    kinds = outgoing.KINDS
    now = utcnow()
    lease = now - dt.timedelta(seconds=defaults.SMS_CLAIM_LEASE_SECONDS)
    Session.execute(
        update(Message).where(Message.kind.in_(kinds), Message.status == MessageStatus.CLAIMED,
                              Message.updated_at <= lease)
        .values(status=MessageStatus.PENDING, claim_token=None,
                updated_at=Message.updated_at)  # old: queued below at once
        .execution_options(synchronize_session=False))
    stale = now - dt.timedelta(seconds=defaults.SMS_SENDING_STALE_SECONDS)
    Session.execute(
        update(Message).where(Message.kind.in_(kinds), Message.status == MessageStatus.SENDING,
                              Message.updated_at <= stale)
        .values(status=MessageStatus.UNKNOWN, error_code="worker-lost",
                error_reason="the worker stopped during the send; it may have been sent")
        .execution_options(synchronize_session=False))
    Session.commit()
    grace = now - dt.timedelta(seconds=defaults.SMS_INBOUND_RECOVERY_GRACE_SECONDS)
    rows = Session.execute(
        select(Message.id, Message.attempts).where(
            Message.kind.in_(kinds), Message.status == MessageStatus.PENDING, Message.updated_at <= grace,
            (Message.due_at.is_(None)) | (Message.due_at <= now))
        .order_by(Message.id)).all()
    for message_id, attempts in rows:
        enqueue_send_message(message_id, attempt=attempts + 1)
    return len(rows)


@job
def poll_registrations() -> int:
    """Ask Vonage about every US registration waiting for the carriers (periodic); returns how many were decided
    (approved or rejected) this time. Without Vonage's API key and secret there is nothing to ask with."""
    from flask import current_app

    from kinnekt.models.sender import RegistrationStatus, SenderRegistration
    from kinnekt.sms import registration
    from kinnekt.sms.registration_client import RegistrationApiError, RegistrationClient
    ids = registration.pending_ids(Session)
    if not ids:
        return 0
    try:
        client = RegistrationClient.from_config(current_app.config)
    except RegistrationApiError as exc:
        log.warning("%s registrations wait for the carriers, but %s", len(ids), exc)
        return 0
    decided = 0
    for registration_id in ids:
        row = Session.get(SenderRegistration, registration_id)
        if row is None:
            continue
        try:
            decided += registration.refresh(Session, row, client) != RegistrationStatus.PENDING
        except RegistrationApiError as exc:  # one registration's trouble never stops the others
            Session.rollback()
            log.warning("registration %s: Vonage did not answer its status: %s", registration_id, exc)
    return decided
