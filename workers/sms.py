"""Jobs of the SMS channel: handle inbound texts, send queued texts, retry early receipts, write consent back."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, select, update

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Message, SignatureNonce, Subscriber
from kinnekt.queue import get_queue
from workers import job
from workers.jobs import register_recoverer

log = logging.getLogger(__name__)

CONSENT_MUTATION = """
mutation KinnektSmsOptOut($input: CustomerSmsMarketingConsentUpdateInput!) {
  customerSmsMarketingConsentUpdate(input: $input) {
    customer { id }
    userErrors { field message }
  }
}
"""


@job
def process_inbound(inbound_id: int) -> str:
    """Handle one stored inbound text (STOP, HELP, START, keyword, other); returns its intent."""
    from kinnekt.subscribers.inbound import process
    return process(Session(), inbound_id)


@job
def send_message(message_id: int) -> str:
    """Send one queued reply/confirmation/test message exactly once; returns the outcome."""
    from kinnekt.sms.outgoing import deliver
    return deliver(Session(), message_id)


@job
def process_receipt(params: dict, attempt: int = 1) -> str:
    """Apply a delivery receipt whose message was not found yet; looks again a few times, then logs it."""
    from kinnekt.sms import receipts
    outcome = receipts.apply(Session(), params)
    if outcome == "no message":
        if attempt < defaults.SMS_RECEIPT_MAX_ATTEMPTS:
            get_queue().enqueue_in(dt.timedelta(seconds=defaults.SMS_RECEIPT_RETRY_SECONDS * attempt),
                                   process_receipt, params, attempt + 1)
        else:
            log.warning("delivery receipt for no message of ours: messageId=%s client-ref=%s",
                        params.get("messageId"), params.get("client-ref"))
    return outcome


@job
def write_back_sms_consent(subscriber_id: int) -> str:
    """Tell Shopify that a subscriber linked to a customer opted out here (customerSmsMarketingConsentUpdate)."""
    from kinnekt.models import Customer, Shop
    from kinnekt.shopify.graphql import client_for, gid
    subscriber = Session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.customer_id is None or subscriber.status != "unsubscribed":
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


@job
def prune_signature_nonces() -> int:
    """Delete nonces older than the signature window (a replay that old fails the timestamp check anyway)."""
    cutoff = utcnow() - dt.timedelta(seconds=2 * defaults.SMS_SIGNATURE_MAX_AGE_SECONDS)
    result = Session.execute(delete(SignatureNonce).where(SignatureNonce.seen_at < cutoff))
    Session.commit()
    return result.rowcount or 0


@register_recoverer
def requeue_inbound_sms() -> int:
    """Queue inbound texts stored but not handled, and handle long texts whose missing parts never came."""
    from kinnekt.subscribers.inbound import assemble_overdue, due_for_recovery, queue_handling
    ids = due_for_recovery(Session())
    for inbound_id in ids:
        queue_handling(inbound_id)
    return len(ids) + assemble_overdue(Session())


@register_recoverer
def requeue_due_replies() -> int:
    """Queue pending replies whose send job was lost (and claimed ones whose worker died: nothing was requested),
    and settle replies stuck "sending" as unknown (never resent)."""
    from kinnekt.sms.outgoing import KINDS
    now = utcnow()
    lease = now - dt.timedelta(seconds=defaults.SMS_CLAIM_LEASE_SECONDS)
    Session.execute(
        update(Message).where(Message.kind.in_(KINDS), Message.status == "claimed", Message.updated_at <= lease)
        .values(status="pending", claim_token=None, updated_at=Message.updated_at)  # old: queued below at once
        .execution_options(synchronize_session=False))
    stale = now - dt.timedelta(seconds=defaults.SMS_SENDING_STALE_SECONDS)
    Session.execute(
        update(Message).where(Message.kind.in_(KINDS), Message.status == "sending", Message.updated_at <= stale)
        .values(status="unknown", error_code="worker-lost",
                error_reason="the worker stopped during the send; it may have been sent")
        .execution_options(synchronize_session=False))
    Session.commit()
    grace = now - dt.timedelta(seconds=defaults.SMS_INBOUND_RECOVERY_GRACE_SECONDS)
    rows = Session.execute(
        select(Message.id, Message.attempts).where(
            Message.kind.in_(KINDS), Message.status == "pending", Message.updated_at <= grace,
            (Message.due_at.is_(None)) | (Message.due_at <= now))
        .order_by(Message.id)).all()
    for message_id, attempts in rows:
        get_queue().enqueue(send_message, message_id, job_id=f"sms-send-{message_id}-{attempts + 1}")
    return len(rows)
