"""Delivery receipts: update the message they report on, settle unknown outcomes, suppress dead numbers.

A receipt finds its message by the provider's message id, else by our client-ref (Vonage echoes it:
that is how a send whose answer was lost, or a later part of a long SMS, is matched). A client-ref
"m<id>" (models.message.row_ref) names a row that stores none of its own, such as a campaign's or an
automation's, by its id. Applying the same receipt twice changes nothing. Statuses only move forward: "failed" is
final; "delivered" replaces sent / unknown; "accepted" and "buffered" only settle a message still sending or unknown.
"""
from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from typing import Mapping

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.db import utcnow
from kinnekt.models import Message, Subscriber
from kinnekt.models.message import MessageStatus, row_ref_id
from kinnekt.segments import membership
from kinnekt.segments.compiler import ACCEPTED_MESSAGE_STATUSES

log = logging.getLogger(__name__)

RECEIPT_STATUSES = ("delivered", "expired", "failed", "rejected", "accepted", "buffered", "unknown")

# DLR err-code meanings (Vonage support article 204014733).
ERROR_TEXT = {
    "0": "Delivered", "1": "Unknown", "2": "Absent subscriber (temporary)", "3": "Absent subscriber (permanent)",
    "4": "Call barred by user", "5": "Portability error", "6": "Anti-spam rejection", "7": "Handset busy",
    "8": "Network error", "9": "Illegal number (opted out of this service)", "10": "Illegal message",
    "11": "Unroutable", "12": "Destination unreachable", "13": "Subscriber age restriction",
    "14": "Number blocked by carrier", "15": "Prepaid insufficient funds", "99": "General error",
}
SUPPRESS_ERROR_CODES = frozenset({"3", "4", "9"})
"""Permanent for the number: absent for good, barred by the user, opted out at the carrier."""

_FAILED = ("failed", "rejected", "expired")

RECEIPT_ERROR_PREFIX = "dlr-"
"""The start of the error code of a message a receipt reported failed. A receipt exists only for a message the
provider accepted, so such a message was sent and then not delivered (campaign stats count it in Sent); a
message the provider refused at the request has the provider's own code instead."""


class ReceiptError(ValueError):
    """A receipt that is not well formed (nothing is stored)."""


def parse(params: Mapping[str, object]) -> dict:
    """The fields of a receipt, checked; raises ReceiptError when it cannot be one."""
    status = str(params.get("status") or "").strip().lower()
    if status not in RECEIPT_STATUSES:
        raise ReceiptError(f"unknown status {status!r}")
    provider_id = str(params.get("messageId") or params.get("message-id") or "").strip()
    client_ref = str(params.get("client-ref") or "").strip()
    if not provider_id and not client_ref:
        raise ReceiptError("neither messageId nor client-ref")
    if len(provider_id) > 64 or len(client_ref) > 100:
        raise ReceiptError("messageId or client-ref too long")
    err_code = str(params.get("err-code") or "").strip() or None
    if err_code is not None and (not (err_code.isascii() and err_code.isdigit()) or len(err_code) > 4):
        raise ReceiptError(f"bad err-code {err_code!r}")
    price = None
    raw_price = str(params.get("price") or "").strip()
    if raw_price:
        try:
            price = Decimal(raw_price)
        except InvalidOperation:
            raise ReceiptError(f"bad price {raw_price!r}") from None
        if not price.is_finite() or price < 0:
            raise ReceiptError(f"bad price {raw_price!r}")
    return {"status": status, "provider_id": provider_id or None, "client_ref": client_ref or None,
            "err_code": err_code, "price": price}


def find_message(session: OrmSession, receipt: dict) -> Message | None:
    """The message a receipt is about: by provider id, else by client-ref."""
    if receipt["provider_id"]:
        message = session.scalar(select(Message).where(Message.provider_id == receipt["provider_id"])
                                 .execution_options(populate_existing=True))
        if message is not None:
            return message
    ref = receipt["client_ref"]
    if not ref:
        return None
    message = session.scalar(select(Message).where(Message.client_ref == ref).order_by(Message.id).limit(1)
                             .execution_options(populate_existing=True))
    message_id = row_ref_id(ref)
    if message is None and message_id is not None:
        message = session.scalar(select(Message).where(Message.id == message_id, Message.client_ref.is_(None))
                                 .execution_options(populate_existing=True))
    return message


def recompute_last_received(session: OrmSession, subscriber_id: int) -> None:
    """Set the subscriber's `last_received_at` to its newest message accepted and not reported failed (or none).

    The contract's `last_received_sms` looks at accepted messages that no receipt reported failed, so a
    failed receipt takes its message out of the fact. `sent_count` keeps counting it (it was accepted).
    """
    newest = (select(func.max(Message.sent_at))
              .where(Message.subscriber_id == subscriber_id, Message.status.in_(ACCEPTED_MESSAGE_STATUSES))
              .scalar_subquery())
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(last_received_at=newest)
                    .execution_options(synchronize_session=False))


def apply(session: OrmSession, params: Mapping[str, object]) -> str:
    """Apply one receipt; returns what happened ("delivered", "failed", "no message", ...). Commits."""
    receipt = parse(params)
    message = find_message(session, receipt)
    if message is None:
        return "no message"
    status, err = receipt["status"], receipt["err_code"]
    now = utcnow()
    # A receipt exists only for a message Vonage accepted: an unknown outcome was in fact sent (count it once).
    settled_unknown = session.execute(
        update(Message).where(Message.id == message.id, Message.status == MessageStatus.UNKNOWN)
        .values(status=MessageStatus.SENT, sent_at=now, provider_id=message.provider_id or receipt["provider_id"],
                error_code=None, error_reason=None)
        .execution_options(synchronize_session=False)).rowcount
    if settled_unknown and message.subscriber_id is not None:
        session.execute(update(Subscriber).where(Subscriber.id == message.subscriber_id)
                        .values(sent_count=Subscriber.sent_count + 1, last_received_at=now)
                        .execution_options(synchronize_session=False))
    session.refresh(message)

    outcome = "unchanged"
    if status == "delivered" and message.status in (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.UNKNOWN):
        message.status, message.delivered_at, outcome = MessageStatus.DELIVERED, now, "delivered"
    elif status in _FAILED and message.status != MessageStatus.FAILED:
        message.status, outcome = MessageStatus.FAILED, "failed"
        message.error_code = f"{RECEIPT_ERROR_PREFIX}{err or status}"
        message.error_reason = f"{status}: {ERROR_TEXT.get(err or '', 'no reason given')}"
    elif status in ("accepted", "buffered") and message.status == MessageStatus.SENDING:
        message.status, outcome = MessageStatus.SENT, "sent"
    if receipt["price"] is not None and message.price is None:
        message.price = receipt["price"]
    if message.provider_id is None and receipt["provider_id"]:
        message.provider_id = receipt["provider_id"]
    session.commit()

    if message.subscriber_id is not None:
        if outcome == "failed":
            recompute_last_received(session, message.subscriber_id)
            session.commit()
        if settled_unknown or outcome == "failed":
            membership.subscribers_changed(message.shop_id, [message.subscriber_id])
        if status in _FAILED and err in SUPPRESS_ERROR_CODES:
            subscriber = session.get(Subscriber, message.subscriber_id)
            if subscriber is not None:
                signals.announce(signals.number_unreachable, session, subscriber=subscriber,
                                 reason=f"Delivery failed: {ERROR_TEXT[err]}", source="carrier")
    return outcome
