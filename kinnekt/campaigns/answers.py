"""The provider's answers to a campaign's requests, written on the message rows: one way for an accepted one.

An accepted answer ("sent", the provider's id and price, and the subscriber's `sent_count` and
`last_received_at`) is written by `write`, whoever writes it: the sender itself (`record`; on SQLite with
the next message's move to "sending"), or on PostgreSQL the answers connection, directly (automations) or
from the `Writer` thread beside the sender (campaigns). Other answers (failures, retries, unknown outcomes)
are written by `record`. Why an answer may wait and what a crash leaves: docs/sending.md.
"""
from __future__ import annotations

import datetime as dt
import queue
import threading
from dataclasses import dataclass

from sqlalchemy import bindparam, case, exists, func, null, text, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import driver_statement, on_postgresql, utcnow
from kinnekt.models import Message, Subscriber
from kinnekt.sms.gateway import SendResult
from kinnekt.models.message import MessageStatus

_messages, _subscribers = Message.__table__, Subscriber.__table__


def _param(name: str, column):
    return bindparam(name, type_=column.type)


_SENT = (
    update(_messages).where(_messages.c.id == bindparam("a_id"), _messages.c.status == MessageStatus.SENDING)
    .values(status="sent", updated_at=_param("a_now", _messages.c.updated_at),
            sent_at=_param("a_now", _messages.c.sent_at), error_code=None, error_reason=None,
            provider_id=_param("a_provider_id", _messages.c.provider_id),
            price=_param("a_price", _messages.c.price)))
"""sending -> sent with the provider's id and price."""

_SENT_KEEP = (
    update(_messages).where(_messages.c.id == bindparam("a_id"))
    .values(provider_id=func.coalesce(_param("a_provider_id", _messages.c.provider_id), _messages.c.provider_id),
            price=func.coalesce(_param("a_price", _messages.c.price), _messages.c.price),
            updated_at=_param("a_now", _messages.c.updated_at)))
"""A receipt got there first and keeps its status: the answer's id and price are still written."""

_LAST_RECEIVED = case(
    (exists().where(_messages.c.id == bindparam("a_id"), _messages.c.status == MessageStatus.FAILED),
     _subscribers.c.last_received_at),
    else_=_param("s_now", _subscribers.c.last_received_at))
"""The subscriber's `last_received_at` after an accepted answer: now, unless a receipt that got there first reported
the message failed (segments' `last_received_sms` looks at accepted messages no receipt reported failed)."""

_RECEIVED = (
    update(_subscribers).where(_subscribers.c.id == bindparam("s_id"))
    .values(sent_count=_subscribers.c.sent_count + 1, last_received_at=_LAST_RECEIVED,
            updated_at=_param("s_now", _subscribers.c.updated_at)))
"""The subscriber got one more message (counted even when a receipt already reported it failed)."""

_ANSWERED = (
    update(_messages).where(_messages.c.id == bindparam("a_id"))
    .values(status=case((_messages.c.status == MessageStatus.SENDING, "sent"), else_=_messages.c.status),
            sent_at=case((_messages.c.status == MessageStatus.SENDING, _param("a_now", _messages.c.sent_at)),
                         else_=_messages.c.sent_at),
            error_code=case((_messages.c.status == MessageStatus.SENDING, null()), else_=_messages.c.error_code),
            error_reason=case((_messages.c.status == MessageStatus.SENDING, null()), else_=_messages.c.error_reason),
            provider_id=func.coalesce(_param("a_provider_id", _messages.c.provider_id), _messages.c.provider_id),
            price=func.coalesce(_param("a_price", _messages.c.price), _messages.c.price),
            updated_at=_param("a_now", _messages.c.updated_at))
    .add_cte(update(_subscribers).where(_subscribers.c.id == bindparam("s_id"))
             .values(sent_count=_subscribers.c.sent_count + 1, last_received_at=_LAST_RECEIVED,
                     updated_at=_param("s_now", _subscribers.c.updated_at))
             .returning(_subscribers.c.id).cte("received")))
"""PostgreSQL: _SENT (or _SENT_KEEP when a receipt got there first: its status stays; a lock wait re-reads
the row, so the CASEs see the receipt) and _RECEIVED in one statement. The answer's updates only: the move
to "sending" and its checks are never part of it. The unreferenced WITH part runs after the main update,
so the message row is locked before the subscriber's, in the order receipts and the SQLite path take them."""


@dataclass(frozen=True)
class Answer:
    """An accepted send whose answer is not written yet."""

    message_id: int
    subscriber_id: int | None
    provider_id: str | None
    price: object
    at: dt.datetime


def _params(answer: Answer) -> dict:
    return {"a_id": answer.message_id, "a_now": answer.at, "a_provider_id": answer.provider_id,
            "a_price": answer.price, "s_id": answer.subscriber_id, "s_now": answer.at}


def write(connection, answer: Answer) -> None:
    """Write an accepted answer on `connection`: the message sending -> sent with the provider's id and price (a
    receipt that got there first keeps its status, the id and price are still written), and the subscriber's
    `sent_count` and `last_received_at`. In the connection's transaction (the caller commits), or at once on a
    connection in autocommit. PostgreSQL: one statement (`_ANSWERED`) run on the driver; SQLite: `_SENT` (or
    `_SENT_KEEP`) and `_RECEIVED`."""
    params = _params(answer)
    if connection.dialect.name == "postgresql":
        driver_statement(_ANSWERED, connection).rowcount(connection, params)
        return
    if not connection.execute(_SENT, params).rowcount:
        connection.execute(_SENT_KEEP, params)
    if answer.subscriber_id is not None:
        connection.execute(_RECEIVED, params)


class Writer:
    """Writes accepted answers (`write`) on the answers connection in a thread of its own, so that the sender
    prepares and moves the next message while the previous answer is on its way to the database: one round
    trip less on the sender's path per message. At most one answer is in flight: `put` first waits for the
    previous one (and raises its error, if it failed), so a worker killed at any moment leaves at most two rows
    "sending" (the answer in flight and the request that left last), both "unknown" later, never resent.
    Not for automations: their send-time smart-sending check must see the previous message as sent."""

    def __init__(self, connection):
        self.connection = connection
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = False
        self._thread = threading.Thread(target=self._work, name="answers", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (answer := self._todo.get()) is not None:
            try:
                write(self.connection, answer)
                self._done.put(None)
            except BaseException as error:  # handed to the sender, which raises it
                self._done.put(error)

    def put(self, answer: Answer) -> None:
        """Queue the answer's write, once the previous answer is written. When that one failed its error is
        raised, after this answer was queued all the same (its request left: `close` still tries to write it)."""
        try:
            self.wait()
        finally:
            self._todo.put(answer)
            self._in_flight = True

    def wait(self) -> None:
        """Wait for the answer in flight; raise its error, if its write failed."""
        if self._in_flight:
            self._in_flight = False
            error = self._done.get()
            if error is not None:
                raise error

    def close(self) -> None:
        """Write the last answer, then stop the thread (it stops even when that write failed, then raises).
        Closing again does nothing."""
        try:
            self.wait()
        finally:
            if self._thread.is_alive():
                self._todo.put(None)
                self._thread.join()


def no_disk_wait(session: OrmSession) -> None:
    """On PostgreSQL, this transaction's commit need not wait for the disk: an answer lost in a database crash
    leaves its row "sending", later "unknown" (never resent). The move to "sending" is always durable."""
    if on_postgresql(session):
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _move_from_sending(session: OrmSession, message_id: int, status: str, **values) -> bool:
    """Move a "sending" row to `status`; a receipt that got there first keeps its status (values still written)."""
    moved = session.execute(
        update(Message).where(Message.id == message_id, Message.status == MessageStatus.SENDING)
        .values(status=status, updated_at=utcnow(), **values).execution_options(synchronize_session=False)).rowcount
    if not moved:
        kept = {k: v for k, v in values.items() if v is not None and k not in ("due_at", "skip_reason", "sent_at")}
        if kept:
            session.execute(update(Message).where(Message.id == message_id).values(**kept)
                            .execution_options(synchronize_session=False))
    return bool(moved)


def record(session: OrmSession, message: Message, result: SendResult, *, attempts: int) -> str:
    """Write the provider's answer on a "sending" row (and the subscriber's facts); commits; returns the outcome.

    `attempts` counts this call. A delivery receipt that overtook the answer keeps the status it set.
    """
    now = utcnow()
    message_id = message.id
    provider = dict(provider_id=result.provider_id, price=result.price)
    no_disk_wait(session)
    if result.status == "sent":
        write(session.connection(), Answer(message_id, message.subscriber_id, result.provider_id, result.price, now))
        session.commit()
        return "sent"
    if result.unknown_outcome:
        _move_from_sending(session, message_id, "unknown", error_code=result.error_code,
                           error_reason=result.error_text, **provider)
        session.commit()
        return "unknown"
    if result.retryable and attempts < defaults.CAMPAIGN_MAX_ATTEMPTS:
        delays = defaults.CAMPAIGN_RETRY_SECONDS
        delay = delays[min(max(attempts, 1) - 1, len(delays) - 1)]
        _move_from_sending(session, message_id, "pending", error_code=result.error_code,
                           error_reason=result.error_text, due_at=now + dt.timedelta(seconds=delay))
        session.commit()
        return "retry"
    reason = result.error_text or "the provider refused the message"
    if result.retryable:
        reason = f"{reason} (gave up after {attempts} attempts)"
    _move_from_sending(session, message_id, "failed", error_code=result.error_code, error_reason=reason, **provider)
    session.commit()
    if result.recipient_unreachable and message.subscriber_id is not None:
        from kinnekt.subscribers.optin import suppress
        subscriber = session.get(Subscriber, message.subscriber_id)
        if subscriber is not None:
            suppress(session, subscriber, reason=f"Vonage refused the number: {result.error_text}", source="provider")
    return "failed"
