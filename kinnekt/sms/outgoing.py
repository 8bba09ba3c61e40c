"""Outgoing texts outside campaigns (replies, confirmations, tests): queue the row, then send it exactly once.

The Message row is inserted before anything is sent. A send first claims it (pending -> claimed with a
random token, one conditional UPDATE), so two workers can never both send it; then it waits for the shared
rate limiter; then one conditional UPDATE moves it claimed -> sending *only if* it still holds our token
and, for every kind but a STOP confirmation and a HELP answer, the number has not opted out and is not
suppressed, and commits; then the provider is called. So an opt-out committed before that UPDATE (even one
made while the message waited for the limiter) stops it. A claim whose worker died goes back to pending
after SMS_CLAIM_LEASE_SECONDS (nothing was requested), and the token keeps a merely slow worker from
sending it then. After the provider call the result is recorded on the row; an unknown outcome stays
"unknown" and is never sent again (a delivery receipt settles it). `sent_count` counts messages the
provider accepted.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.db import utcnow
from kinnekt.models import Message, Shop, Subscriber
from kinnekt.models.message import MessageStatus, row_ref
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.sms import prices, tasks
from kinnekt.sms.encoding import analyze
from kinnekt.sms.gateway import GatewayNotConfigured, SendResult, get_gateway

log = logging.getLogger(__name__)

KINDS = ("reply", "confirmation", "test", "help", "stop_confirm")
"""Message.kind values queued here (campaign messages are inserted by the campaign sender)."""

OPT_OUT_EXEMPT_KINDS = frozenset({"stop_confirm", "help"})
"""Sent even to an opted-out number: the one confirmation of a STOP, and the answer to HELP (carrier rules
require both whatever the person's status)."""


def queue_message(session: OrmSession, shop: Shop, subscriber: Subscriber | None, text: str, *, kind: str,
                  to_phone: str | None = None) -> Message:
    """Insert a pending Message (to the subscriber, or to `to_phone`), commit, and queue its send job."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    text = (text or "").strip()
    if not text:
        raise ValueError("an empty message cannot be sent")
    phone = subscriber.phone if subscriber is not None else to_phone
    if not phone:
        raise ValueError("a message needs a subscriber or a phone number")
    info = analyze(text)
    message = Message(shop_id=shop.id, subscriber_id=subscriber.id if subscriber is not None else None, kind=kind,
                      to_phone=phone, body=text, status=MessageStatus.PENDING, encoding=info.encoding,
                      segments=info.segments)
    session.add(message)
    session.flush()
    message.client_ref = row_ref(message.id)
    session.commit()
    _enqueue_send(message.id, attempt=1)
    return message


def deliver(session: OrmSession, message_id: int) -> str:
    """Claim one pending message, wait for the rate limiter, move it to "sending" if the number may still get it,
    send, record; returns the outcome."""
    now = utcnow()
    token = uuid.uuid4().hex
    claimed = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.PENDING,
               or_(Message.due_at.is_(None), Message.due_at <= now))
        .values(status=MessageStatus.CLAIMED, claim_token=token, attempts=Message.attempts + 1, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    if not claimed:
        return "not pending"
    message = session.get(Message, message_id, populate_existing=True)
    shop = session.get(Shop, message.shop_id)
    # Checked here too, so that a message already not allowed neither waits for the limiter nor fails on the
    # gateway; what counts is the check in the move to "sending", after the wait.
    reason = None if message.kind in OPT_OUT_EXEMPT_KINDS else _skip_reason(session, message)
    if shop is None or not shop.installed:
        reason = "shop uninstalled"
    if reason is not None:
        _settle(session, message, MessageStatus.SKIPPED, token=token, skip_reason=reason)
        return "skipped"
    try:
        gateway = get_gateway(shop, session, to=message.to_phone)
    except GatewayNotConfigured as exc:
        _settle(session, message, MessageStatus.FAILED, token=token, error_code="not-configured", error_reason=str(exc))
        return "failed"
    if gateway.rate_limited:
        from kinnekt.sms.ratelimit import RateLimitTimeout, limiter_for
        try:
            limiter_for(gateway.account, gateway.sender, getattr(gateway, "sender_rate", None)).acquire()
        except RateLimitTimeout as exc:
            return _retry_or_fail(session, message, SendResult(None, "failed", error_code="rate-limit",
                                                               error_text=str(exc), retryable=True), token=token)
    if not _to_sending(session, message, token, sender=getattr(gateway, "sender", None)):
        reason = _skip_reason(session, message) or "unsubscribed"
        return "skipped" if _settle(session, message, MessageStatus.SKIPPED, token=token,
                                    skip_reason=reason) else "not ours"
    result = prices.with_price(gateway.send(message.to_phone, message.body, message.client_ref),
                               message.to_phone, message.body)
    return record_result(session, message, result)


def _to_sending(session: OrmSession, message: Message, token: str, *, sender: str | None = None) -> bool:
    """claimed -> sending, only if still ours and (but for OPT_OUT_EXEMPT_KINDS) the number has not opted out
    and is not suppressed, recording the sender it goes out from; committed before the request leaves. False: not
    moved (see `_skip_reason`)."""
    conditions = [Message.id == message.id, Message.status == MessageStatus.CLAIMED, Message.claim_token == token]
    if message.kind not in OPT_OUT_EXEMPT_KINDS:
        if message.subscriber_id is not None:
            person = [Subscriber.id == message.subscriber_id]
            conditions.append(exists().where(*person))  # deleted meanwhile: "no subscriber"
        else:
            person = [Subscriber.shop_id == message.shop_id, Subscriber.phone == message.to_phone]
        opted_out = Subscriber.status == SubscriberStatus.UNSUBSCRIBED
        if message.kind == "confirmation" and message.created_at is not None:
            opted_out = and_(opted_out, ~_asks_opted_out_number_sql(message))
        conditions.append(~exists().where(*person, or_(opted_out, Subscriber.suppressed_at.is_not(None))))
    moved = session.execute(
        update(Message).where(*conditions).values(status=MessageStatus.SENDING, claim_token=None, updated_at=utcnow(),
                                                  sender=(sender or None) and sender[:32])
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    return bool(moved)


def record_result(session: OrmSession, message: Message, result: SendResult) -> str:
    """Write a provider's answer on a "sending" message and the subscriber's facts; returns the outcome."""
    session.refresh(message)  # a delivery receipt may have overtaken the answer; keep what it wrote
    info = analyze(message.body or "")
    common = dict(encoding=info.encoding, segments=info.segments,
                  provider_id=message.provider_id or result.provider_id,
                  price=message.price if message.price is not None else result.price)
    if result.status == "sent":
        now = utcnow()
        _settle(session, message, MessageStatus.SENT, sent_at=now, error_code=None, error_reason=None, **common,
                commit=False)
        if message.subscriber_id is not None:
            # A failed receipt that got here first keeps the message out of `last_received_at` (the contract:
            # accepted and not reported failed); it still counts in `sent_count`.
            received = {"last_received_at": now} if message.status != MessageStatus.FAILED else {}
            session.execute(update(Subscriber).where(Subscriber.id == message.subscriber_id)
                            .values(sent_count=Subscriber.sent_count + 1, **received)
                            .execution_options(synchronize_session=False))
        session.commit()
        # Charged like a campaign's messages: a reply, a confirmation and a test send cost the merchant too.
        signals.announce(signals.messages_accepted, session, shop_id=message.shop_id, message_ids=[message.id])
        _changed(session, message)
        return "sent"
    if result.unknown_outcome:
        _settle(session, message, MessageStatus.UNKNOWN, error_code=result.error_code, error_reason=result.error_text,
                **common)
        return "unknown"
    if result.retryable:
        return _retry_or_fail(session, message, result)
    _settle(session, message, MessageStatus.FAILED, error_code=result.error_code, error_reason=result.error_text,
            **common)
    if result.recipient_unreachable and message.subscriber_id is not None:
        subscriber = session.get(Subscriber, message.subscriber_id)
        if subscriber is not None:
            signals.announce(signals.number_unreachable, session, subscriber=subscriber,
                             reason=f"Vonage refused the number: {result.error_text}", source="provider")
    return "failed"


def _retry_or_fail(session: OrmSession, message: Message, result: SendResult, *, token: str | None = None) -> str:
    """Back to pending for a later attempt, or failed after the last one (from "claimed" when `token` is given)."""
    if message.attempts >= defaults.SMS_SEND_MAX_ATTEMPTS:
        _settle(session, message, MessageStatus.FAILED, token=token, error_code=result.error_code,
                error_reason=f"{result.error_text} (gave up after {message.attempts} attempts)")
        return "failed"
    delays = defaults.SMS_SEND_RETRY_SECONDS
    delay = delays[min(message.attempts - 1, len(delays) - 1)]
    if _settle(session, message, MessageStatus.PENDING, token=token, error_code=result.error_code,
               error_reason=result.error_text, due_at=utcnow() + dt.timedelta(seconds=delay)):
        _enqueue_send(message.id, attempt=message.attempts + 1, delay=delay)
        return "retry"
    return "settled by receipt" if token is None else "not ours"


def _settle(session: OrmSession, message: Message, status: str, *, commit: bool = True, token: str | None = None,
            **values) -> bool:
    """Move our message to `status` with `values`: from "claimed" while it holds `token` (nothing was requested),
    else from "sending"; True when moved.

    A delivery receipt that arrived first already set a better status than "sending": then only `values` are
    written. A claim that is no longer ours (its lease expired) is left alone.
    """
    current = [Message.status == MessageStatus.CLAIMED, Message.claim_token == token] if token is not None \
        else [Message.status == MessageStatus.SENDING]
    moved = session.execute(
        update(Message).where(Message.id == message.id, *current)
        .values(status=status, claim_token=None, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)).rowcount
    if not moved and token is None:
        values = {k: v for k, v in values.items() if v is not None and k not in ("due_at", "skip_reason")}
        if values:
            session.execute(update(Message).where(Message.id == message.id).values(**values)
                            .execution_options(synchronize_session=False))
    if commit:
        session.commit()
    session.refresh(message)
    return bool(moved)


def _skip_reason(session: OrmSession, message: Message) -> str | None:
    """Why this message must not go out now: the number opted out or is suppressed (what `_to_sending` checks)."""
    if message.subscriber_id is not None:
        subscriber = session.get(Subscriber, message.subscriber_id, populate_existing=True)
    else:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.shop_id == message.shop_id,
                                                             Subscriber.phone == message.to_phone))
    if subscriber is None:
        return None if message.subscriber_id is None else "no subscriber"
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED and not _asks_opted_out_number(subscriber, message):
        return "unsubscribed"
    if subscriber.suppressed_at is not None:
        return "suppressed"
    return None


def _asks_opted_out_number(subscriber: Subscriber, message: Message) -> bool:
    """True for the "Reply Y" request a web sign-up queued for a number that had opted out before it.

    Such a number stays unsubscribed until it replies (kinnekt.subscribers.optin), so its request must go
    out; a confirmation queued before the number's latest opt-out is still held back.
    """
    asked, opted_out, queued = subscriber.reoptin_asked_at, subscriber.unsubscribed_at, message.created_at
    return (message.kind == "confirmation" and asked is not None and queued is not None and queued >= asked
            and (opted_out is None or asked >= opted_out))


def _asks_opted_out_number_sql(message: Message):
    """`_asks_opted_out_number` as a condition on Subscriber, for the atomic move to "sending"."""
    asked = Subscriber.reoptin_asked_at
    return and_(asked.is_not(None), asked <= message.created_at,
                or_(Subscriber.unsubscribed_at.is_(None), asked >= Subscriber.unsubscribed_at))


def _enqueue_send(message_id: int, *, attempt: int, delay: float = 0) -> None:
    tasks.enqueue_send_message(message_id, attempt=attempt, delay=delay)


def _changed(session: OrmSession, message: Message) -> None:
    if message.subscriber_id is not None:
        signals.announce(signals.subscribers_changed, session, shop_id=message.shop_id,
                         subscriber_ids=[message.subscriber_id])
