"""Delivery receipts (the Messages API's status webhook): update the message they report on, settle unknown
outcomes, suppress dead numbers.

A receipt finds its message by the provider's message_uuid, else by our client_ref (Vonage echoes it:
that is how a send whose answer was lost is matched). A client-ref
"m<id>" (models.message.row_ref) names a row that stores none of its own, such as a campaign's or an
automation's, by its id. Applying the same receipt twice changes nothing. Statuses only move forward: "failed" is
final ("rejected", "undeliverable" and "failed" make it); "delivered" replaces sent / unknown; "submitted" only
settles a message still sending or unknown.
"""
from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Mapping

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.db import utcnow
from kinnekt.models import Message, Subscriber
from kinnekt.models.message import MessageStatus, row_ref_id

log = logging.getLogger(__name__)

RECEIPT_STATUSES = ("submitted", "delivered", "rejected", "undeliverable", "failed")
"""The Messages API's SMS statuses (its status webhook)."""

ERROR_TEXT = {
    "1000": "Throttled", "1020": "Invalid params", "1030": "Internal error", "1040": "Invalid message",
    "1050": "Number barred", "1060": "Partner account barred", "1070": "Partner quota exceeded",
    "1120": "Illegal sender address - rejected", "1160": "Non-whitelisted destination",
    "1170": "Invalid or missing msisdn", "1180": "Absent subscriber (temporary)",
    "1190": "Absent subscriber (permanent)", "1200": "Call barred by user", "1210": "Anti-spam rejection",
    "1220": "Handset busy", "1230": "Network error", "1240": "Illegal number (opted out of this service)",
    "1250": "Unroutable", "1260": "Destination unreachable", "1270": "Subscriber age restriction",
    "1280": "Number blocked by carrier", "1290": "Pre-paid insufficient funds", "1330": "Unknown error",
}
"""Error codes of a status webhook (the `title` of its `error`, https://developer.vonage.com/api-errors/messages)."""
SUPPRESS_ERROR_CODES = frozenset({"1050", "1190", "1200", "1240"})
"""Permanent for the number: barred, absent for good, barred by the user, opted out at the carrier."""

MAX_PRICE = Decimal(100)
"""A larger price for one text is no price Vonage charges: the receipt is refused (it would not fit the column)."""

PRICE_CURRENCY = "USD"
"""The currency of every price the app records and shows (kinnekt/sms/prices.py); a receipt priced in another
currency (a Vonage account billed in euros) keeps the price the table gave the message when it was accepted."""

_FAILED = ("rejected", "undeliverable", "failed")

RECEIPT_ERROR_PREFIX = "dlr-"
"""The start of the error code of a message a receipt reported failed. A receipt exists only for a message the
provider accepted, so such a message was sent and then not delivered (campaign stats count it in Sent); a
message the provider refused at the request has the provider's own code instead."""


class ReceiptError(ValueError):
    """A receipt that is not well formed (nothing is stored)."""


def parse(body: Mapping[str, object]) -> dict:
    """The fields of a Messages API status webhook (its JSON object), checked; raises ReceiptError when it cannot
    be one."""
    if not isinstance(body, Mapping):
        raise ReceiptError("the body is not a JSON object")
    channel = body.get("channel")
    if channel not in (None, "sms"):
        raise ReceiptError(f"not an SMS status (channel {str(channel)[:20]!r})")
    status = str(body.get("status") or "").strip().lower()
    if status not in RECEIPT_STATUSES:
        raise ReceiptError(f"unknown status {status[:30]!r}")
    provider_id = _text(body.get("message_uuid"), "message_uuid")
    client_ref = _text(body.get("client_ref"), "client_ref")
    if not provider_id and not client_ref:
        raise ReceiptError("neither message_uuid nor client_ref")
    if len(provider_id) > 64 or len(client_ref) > 100:
        raise ReceiptError("message_uuid or client_ref too long")
    error = body.get("error")
    if error is not None and not isinstance(error, Mapping):
        raise ReceiptError("error is not an object")
    err_code = _text((error or {}).get("title"), "error title") or None
    if err_code is None and error:
        from kinnekt.sms.vonage import problem_code
        err_code = problem_code(dict(error))
    if err_code is not None and not re.fullmatch(r"[0-9]{1,5}", err_code):
        raise ReceiptError(f"bad error code {err_code[:20]!r}")
    detail = _text((error or {}).get("detail"), "error detail")[:300] or None
    usage = body.get("usage")
    if usage is not None and not isinstance(usage, Mapping):
        raise ReceiptError("usage is not an object")
    price = None
    raw_price = str((usage or {}).get("price") or "").strip()
    currency = str((usage or {}).get("currency") or PRICE_CURRENCY).strip().upper()
    if currency != PRICE_CURRENCY:
        raw_price = ""  # the app's prices are US dollars: an amount in the account's EUR is not one of them
    if raw_price:
        try:
            price = Decimal(raw_price)
        except InvalidOperation:
            raise ReceiptError(f"bad price {raw_price[:20]!r}") from None
        if not price.is_finite() or not 0 <= price <= MAX_PRICE:
            raise ReceiptError(f"bad price {raw_price[:20]!r}")
    return {"status": status, "provider_id": provider_id or None, "client_ref": client_ref or None,
            "err_code": err_code, "detail": detail, "price": price}


def _text(value, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        raise ReceiptError(f"{name} is not a single value")
    return str(value).strip()


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
              .where(Message.subscriber_id == subscriber_id, Message.status.in_(MessageStatus.ACCEPTED))
              .scalar_subquery())
    session.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(last_received_at=newest)
                    .execution_options(synchronize_session=False))


def apply(session: OrmSession, body: Mapping[str, object]) -> str:
    """Apply one status webhook; returns what happened ("delivered", "failed", "no message", ...). Commits."""
    receipt = parse(body)
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
        message.error_reason = f"{status}: {ERROR_TEXT.get(err or '') or receipt['detail'] or 'no reason given'}"
    elif status == "submitted" and message.status == MessageStatus.SENDING:
        message.status, outcome = MessageStatus.SENT, "sent"
    if receipt["price"] is not None and message.price is None:
        message.price = receipt["price"]
    if message.provider_id is None and receipt["provider_id"]:
        message.provider_id = receipt["provider_id"]
    session.commit()
    if settled_unknown:  # accepted after all, now committed: charged as any accepted message
        signals.announce(signals.messages_accepted, session, shop_id=message.shop_id, message_ids=[message.id])

    if message.subscriber_id is not None:
        if outcome == "failed":
            recompute_last_received(session, message.subscriber_id)
            session.commit()
        if settled_unknown or outcome == "failed":
            signals.announce(signals.subscribers_changed, session, shop_id=message.shop_id,
                             subscriber_ids=[message.subscriber_id])
        if status in _FAILED and err in SUPPRESS_ERROR_CODES:
            subscriber = session.get(Subscriber, message.subscriber_id)
            if subscriber is not None:
                signals.announce(signals.number_unreachable, session, subscriber=subscriber,
                                 reason=f"Delivery failed: {ERROR_TEXT.get(err, err)}", source="carrier")
    return outcome
