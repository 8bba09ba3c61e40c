"""Sending a campaign exactly once, at the allowed rate: claim batches, re-check, send, record, resume after crashes.

A row moves pending -> claimed -> sending -> sent | failed | unknown (or skipped / ended / back to pending):

- **pending** rows whose claim token is HOLD wait for their discount code to exist at Shopify (automations,
  kinnekt/automations/engine.py) and are not claimed until released.
- **claimed**: a sender took a batch of due rows in one UPDATE (keyset order on the (campaign, status, id)
  index; `FOR UPDATE SKIP LOCKED` on PostgreSQL so parallel senders take disjoint batches; SQLite's write
  lock serialises them). The claim carries a random token. Nothing was requested from the provider yet,
  so recovery returns a claimed row whose lease expired to pending; the token makes sure the old sender,
  if it was only slow, can no longer send it.
- **sending**: the batch's texts are rendered and their short links made when the batch is loaded (one
  insert for the batch, committed before any request). After a rate-limiter slot, one conditional UPDATE
  moves the row claimed -> sending *only if* it still holds our token, the subscriber is still subscribed
  and unsuppressed and the campaign is still in progress, and commits; then the provider is called. So a STOP or an End
  that committed before that UPDATE stops the message, and the work between the commit and the request
  leaving is a few microseconds: a worker killed at any moment leaves at most one row "sending" whose
  answer is not known, plus on PostgreSQL at most one whose answer was on its way (below). (When
  that commit was slow, the sender takes a fresh rate-limiter slot first, usually one spacing, ~35 ms at
  30/s: a request sent late would crowd the ones granted after it into one second at the provider. Then
  the same checks run once more on the "sending" row, `_STILL_ALLOWED`, so that a STOP or End committed
  during that wait still stops the message: the row goes back to our claim and is settled as skipped or
  ended.)
- **answers**: the provider's answer ("sent", its id and price, and the subscriber's sent_count and
  last_received_at) need not wait for the disk: lost in a database crash, the row stays "sending" and
  becomes "unknown" (never resent). On PostgreSQL the move to "sending" runs alone in autocommit (one
  round trip, durable before the request leaves: the session has nothing else to commit, the batch's
  links were committed when it was loaded) and an accepted answer is one statement (`_ANSWERED`: the
  message and the subscriber as data-modifying parts of one UPDATE; it holds no check of its own) in
  autocommit on a second connection whose commits do not wait for the disk: two round trips per message
  instead of BEGIN, two updates, the move and COMMIT. A campaign's answers are written by a thread beside
  the sender (`_AnswerWriter`), one at a time, while the sender moves and sends the next message, so only
  the move's round trip lies on the sender's path; the batch ends once its last answer is written. A kill
  may then catch one answer on its way: its row stays "sending" too, so a killed worker leaves at most two
  such rows, both "unknown" later and never resent. (Each answer is handed over only after the previous
  one was written, and its error, if any, stops the batch there.) An automation's answers are written by
  the sender itself: its send-time smart-sending check must see the previous message as sent. The two
  hot statements run on the driver connection, compiled once (kinnekt.db.DriverStatement). On
  SQLite, when nothing else is waiting (no rate limit; not an automation, whose send-time smart-sending
  check must see the previous message as sent), an accepted answer is written in the *same* transaction
  as the next message's move to "sending", one commit per message instead of two; the batch's last
  answer, and any answer before an early end of the batch or an error, is written on its own. On SQLite a
  worker killed at any moment leaves at most one row "sending": the one whose request left last,
  answered or not (an answer waits only while the next message is prepared, well under a millisecond; a
  kill in that moment makes its row "unknown"). Other answers (failures, retries, unknown
  outcomes) are written at once, through the session (with `synchronous_commit` off on PostgreSQL).
- **unknown**: a row left "sending" by a dead worker (after CAMPAIGN_SENDING_STALE_SECONDS), or whose request
  left without an answer (dropped connection). It is never sent again. A delivery receipt settles it
  (kinnekt/sms/receipts.py: sent/delivered/failed). When no receipt ever comes it stays "unknown" and counts
  as done, not remaining: Vonage offers no lookup of a message by our reference, so a resend could only be
  blind, and a duplicate marketing text (a complaint, a carrier flag, a STOP) costs more than one missing
  message; because the window above is tiny, such rows are rare and the progress and statistics show them.
- Retryable failures (throttled, provider busy, no connection) go back to pending with a backoff due_at;
  permanent ones fail with the reason; a number the provider refuses for good is suppressed.

Senders are jobs (kinnekt/campaigns/tasks.py). Each claims and sends batches for up to CAMPAIGN_JOB_SECONDS, then
queues its successor; when nothing is due it schedules a wake-up for the next due row, or completes the
campaign when no row is pending, claimed or sending. Each batch refreshes the campaign's heartbeat; the
periodic recovery re-dispatches a running campaign with due rows and a stale heartbeat (lost jobs, a Redis
restart) and settles expired claims and stale sends.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, case, exists, func, null, select, text, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import scoped_session

from kinnekt import defaults
from kinnekt.campaigns import quiet_hours, tasks
from kinnekt.db import DriverStatement, no_disk_wait_engine, on_postgresql, utcnow
from kinnekt.models import Campaign, Message, Shop, Subscriber
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.message import MessageStatus, row_ref
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.sms import prices
from kinnekt.sms.encoding import size
from kinnekt.sms.gateway import GatewayNotConfigured, SendResult, get_gateway

log = logging.getLogger(__name__)

REMAINING = MessageStatus.OPEN
"""Rows not finished yet: a campaign completes when it has none."""


@dataclass(frozen=True)
class Progress:
    """The campaign's figures for the progress bar: `sent` and `refused` as kinnekt/campaigns/stats.py defines them
    (sent: accepted by the provider, whatever a receipt said later; refused: failed without being accepted)."""

    total: int
    sent: int
    refused: int
    skipped: int
    remaining: int
    unknown: int = 0
    ended: int = 0
    done: bool = False

    @property
    def finished(self) -> int:
        """Rows that need nothing more (everything but remaining)."""
        return self.total - self.remaining

    @property
    def percent(self) -> int:
        """Share of rows finished, 0-100."""
        return 100 if not self.total else int(100 * self.finished / self.total)


def progress(session: OrmSession, campaign: Campaign) -> Progress:
    """Counts of the campaign's rows by outcome; `done` once the campaign is completed, ended or failed."""
    from kinnekt.campaigns.stats import accepted
    sent = accepted()
    by_status: dict[str, int] = {}
    sent_rows = refused = 0
    for status, was_sent, count in session.execute(
            select(Message.status, sent, func.count()).where(Message.campaign_id == campaign.id)
            .group_by(Message.status, sent)):
        by_status[status] = by_status.get(status, 0) + count
        if was_sent:
            sent_rows += count
        elif status == MessageStatus.FAILED:
            refused += count
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign.id))
    return Progress(total=sum(by_status.values()), sent=sent_rows, refused=refused,
                    skipped=by_status.get(MessageStatus.SKIPPED, 0),
                    remaining=sum(by_status.get(s, 0) for s in REMAINING),
                    unknown=by_status.get(MessageStatus.UNKNOWN, 0), ended=by_status.get(MessageStatus.ENDED, 0),
                    done=status in CampaignStatus.FINISHED)


# ---------------------------------------------------------------------------------------------- dispatch

def _successor(campaign_id: int, slot: int, seq: int) -> None:
    tasks.enqueue_send_campaign(campaign_id, slot, seq)


def dispatch_slot(campaign_id: int, slot: int, *, tag: str) -> None:
    """Queue one sender slot of the campaign again (its job was lost); the tag keeps one job per loss."""
    tasks.enqueue_send_campaign(campaign_id, slot, tag=tag)


def release_claims(session: OrmSession, campaign_id: int, token: str) -> int:
    """A lost sender's claimed rows go back to pending, unclaimed (none of them was requested); commits."""
    released = session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CLAIMED,
                              Message.claim_token == token)
        .values(status=MessageStatus.PENDING, claim_token=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount or 0
    session.commit()
    return released


def campaigns_with_due_rows(session: OrmSession, *, now: dt.datetime | None = None) -> list[int]:
    """Running campaigns (and automations) with rows due to be sent now and claimed by nobody."""
    now = now or utcnow()
    due = exists().where(Message.campaign_id == Campaign.id, Message.status == MessageStatus.PENDING,
                         Message.claim_token.is_(None), Message.due_at.is_(None) | (Message.due_at <= now))
    return list(session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.IN_PROGRESS,
                                                          Campaign.snapshot_at.is_not(None), due)
                                .order_by(Campaign.id).execution_options(all_shops=True)))


def wake_at(campaign_id: int, when: dt.datetime) -> None:
    """Queue the campaign's senders for `when` (the next due row); one wake-up per campaign and second."""
    tasks.enqueue_wake_campaign(campaign_id, when)


# ---------------------------------------------------------------------------------------------- the sender

def run(session: OrmSession, campaign_id: int, *, slot: int = 0, seq: int = 0, budget: float | None = None,
        may_yield: bool = False, on_claim=None) -> dict[str, int]:
    """One send job: claim and send batches until nothing is due or the time budget is spent; returns outcomes.

    It hands over to a successor job early, after the message in hand, when its process was asked to stop
    (a worker's warm shutdown), when the rate limiter cannot be reached, or (with `may_yield`, as a queued
    job) when work of a higher lane has waited too long (`higher_lanes_waiting`). `on_claim(token)` is told
    each batch's claim token before the batch is claimed (the job keeps it where a watchdog can find it)."""
    budget = job_budget(slot, seq) if budget is None else budget
    deadline = time.monotonic() + budget
    outcomes: dict[str, int] = {}
    yielding = _Yielding(may_yield)
    while True:
        if not _running(session, campaign_id):
            _stop_if_not_running(session, campaign_id)
            return outcomes
        if yielding.due():
            return _hand_over(campaign_id, slot, seq, outcomes)
        token = uuid.uuid4().hex
        if on_claim is not None:
            on_claim(token)
        ids = claim(session, campaign_id, token=token)
        if not ids:
            settle(session, campaign_id)
            return outcomes
        for outcome, n in send_batch(session, campaign_id, ids, token, yielding=yielding).items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
        if HANDED_OVER in outcomes:
            return _hand_over(campaign_id, slot, seq, outcomes)
        if time.monotonic() >= deadline:
            _successor(campaign_id, slot, seq + 1)
            return outcomes


HANDED_OVER = "handed over"
"""The outcome a sender reports when it stopped early and queued its successor (see `run`)."""


class _Yielding:
    """Whether a sender should stop after the message in hand and hand its campaign over to a successor."""

    def __init__(self, may_yield: bool):
        self.may_yield = may_yield
        self.started = time.monotonic()
        self.next_check = 0.0
        self.limiter_lost = False

    def due(self) -> bool:
        """True when this process must stop, the limiter is gone, or (looked at every SEND_YIELD_CHECK_SECONDS)
        urgent work has waited too long, or default work has, once this job sent for SEND_YIELD_MIN_SECONDS."""
        from kinnekt.queue import stop_requested
        if stop_requested() or self.limiter_lost:
            return True
        now = time.monotonic()
        if not self.may_yield or now < self.next_check:
            return False
        self.next_check = now + defaults.SEND_YIELD_CHECK_SECONDS
        lanes = ("urgent", "default") if now - self.started >= defaults.SEND_YIELD_MIN_SECONDS else ("urgent",)
        return higher_lanes_waiting(lanes)


def higher_lanes_waiting(lanes=("urgent", "default")) -> bool:
    """True when a job of these lanes has waited longer than SEND_YIELD_AFTER_SECONDS allows."""
    from kinnekt.queue import get_queue
    lane_states = getattr(get_queue(), "lane_states", None)
    if lane_states is None:
        return False
    limits = defaults.SEND_YIELD_AFTER_SECONDS
    try:
        states = lane_states(tuple(lane for lane in limits if lane in lanes))
    except Exception:  # Redis unreachable: the send path finds out and stops on its own
        log.debug("could not read the queues' lanes", exc_info=True)
        return False
    return any(state.oldest_seconds is not None and state.oldest_seconds >= limits[state.lane] for state in states)


def _hand_over(campaign_id: int, slot: int, seq: int, outcomes: dict[str, int]) -> dict[str, int]:
    """Queue this sender's successor (a watchdog or recovery does it if Redis cannot take it now)."""
    outcomes[HANDED_OVER] = 1
    try:
        _successor(campaign_id, slot, seq + 1)
    except Exception:
        log.warning("campaign %s: could not queue the next sender; the watchdog will", campaign_id, exc_info=True)
    return outcomes


def job_budget(slot: int, seq: int) -> float:
    """Seconds a send job claims batches for: CAMPAIGN_JOB_SECONDS, but (1 + slot / CAMPAIGN_SENDERS) times that
    for a slot's first job, so that the senders hand over to their successors at different times: while one
    waits for its successor's work horse (about a second), the others keep taking the rate limiter's slots."""
    budget = float(defaults.CAMPAIGN_JOB_SECONDS)
    if seq == 0:
        budget *= 1 + slot / max(1, defaults.CAMPAIGN_SENDERS)
    return budget


def _running(session: OrmSession, campaign_id: int) -> bool:
    return session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)) == CampaignStatus.IN_PROGRESS


def _stop_if_not_running(session: OrmSession, campaign_id: int) -> None:
    """A campaign ended or failed by someone else (uninstall marks only the campaign): its unsent rows end."""
    from kinnekt.campaigns.lifecycle import stop_rows
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if status in CampaignStatus.STOPPED:
        stop_rows(session, campaign_id)
        session.commit()


def claim(session: OrmSession, campaign_id: int, *, token: str, size: int | None = None,
          now: dt.datetime | None = None) -> list[int]:
    """Claim up to `size` due pending rows of the campaign for this token (committed); their ids, ascending."""
    now = now or utcnow()
    size = size or defaults.CAMPAIGN_BATCH_SIZE
    due = (select(Message.id)
           .where(Message.campaign_id == campaign_id, Message.status == MessageStatus.PENDING,
                  Message.claim_token.is_(None),
                  Message.due_at.is_(None) | (Message.due_at <= now))
           .order_by(Message.id).limit(size))
    if on_postgresql(session):
        # Lock first, then update: inside one UPDATE ... IN (SELECT ... SKIP LOCKED LIMIT n) PostgreSQL may run
        # the subquery again per row, skip the rows the statement itself just locked, and claim them all.
        wanted = session.scalars(due.with_for_update(skip_locked=True)).all()
        chosen = Message.id.in_(wanted)
    else:
        # SQLite: one statement (the IN subquery is evaluated once), taking the write lock at once; a separate
        # read first could not upgrade to a write after another sender committed.
        chosen = Message.id.in_(due.scalar_subquery())
    ids = session.scalars(
        update(Message).where(chosen, Message.status == MessageStatus.PENDING, Message.claim_token.is_(None))
        .values(status=MessageStatus.CLAIMED, claim_token=token, updated_at=now)
        .returning(Message.id).execution_options(synchronize_session=False)).all()
    if ids:
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(heartbeat_at=now)
                        .execution_options(synchronize_session=False))
    session.commit()
    return sorted(ids)


def settle(session: OrmSession, campaign_id: int, *, now: dt.datetime | None = None) -> str:
    """Nothing due now: complete the campaign if no row is unfinished, else wake up for the next due row."""
    now = now or utcnow()
    remaining = dict(session.execute(
        select(Message.status, func.count()).where(Message.campaign_id == campaign_id,
                                                   Message.status.in_(REMAINING))
        .group_by(Message.status)).tuples().all())
    if not remaining:
        moved = session.execute(
            update(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.IN_PROGRESS,
                                   Campaign.snapshot_at.is_not(None),
                                   Campaign.kind != "automation",  # an automation sends for as long as it is on
                                   ~exists().where(Message.campaign_id == campaign_id,
                                                   Message.status.in_(REMAINING)))
            .values(status=CampaignStatus.COMPLETED,
                    finished_at=now).execution_options(synchronize_session=False)).rowcount
        session.commit()
        return "completed" if moved else "idle"
    session.commit()
    if remaining.get(MessageStatus.PENDING):
        next_due = session.scalar(select(func.min(Message.due_at)).where(Message.campaign_id == campaign_id,
                                                                         Message.status == MessageStatus.PENDING))
        if next_due is not None and next_due > now:
            wake_at(campaign_id, next_due)
            return "waiting"
        # due but not claimed: another sender's claim raced us, or SKIP LOCKED skipped locked rows
        return "busy"
    return "others sending"


_messages, _subscribers, _campaigns = Message.__table__, Subscriber.__table__, Campaign.__table__


def _param(name: str, column):
    return bindparam(name, type_=column.type)


# The hot path's statements, built once (Core, on the session's connection: no ORM bulk-update machinery
# and no cache key to compute per message).
_ALLOWED = (exists().where(_subscribers.c.id == _messages.c.subscriber_id,
                           _subscribers.c.status == SubscriberStatus.SUBSCRIBED,
                           _subscribers.c.suppressed_at.is_(None)),
            exists().where(_campaigns.c.id == _messages.c.campaign_id,
                           _campaigns.c.status == CampaignStatus.IN_PROGRESS))
"""The row may go out: its subscriber still subscribed and unsuppressed, its campaign still running."""

_TO_SENDING = (
    update(_messages)
    .where(_messages.c.id == bindparam("m_id"), _messages.c.status == MessageStatus.CLAIMED,
           _messages.c.claim_token == bindparam("m_token"), *_ALLOWED)
    .values(status=MessageStatus.SENDING, claim_token=None, body=_param("m_body", _messages.c.body),
            attempts=_messages.c.attempts + 1, encoding=_param("m_encoding", _messages.c.encoding),
            segments=_param("m_segments", _messages.c.segments), updated_at=_param("m_now", _messages.c.updated_at)))
"""claimed -> sending, only if still ours, the subscriber still subscribed and unsuppressed, the campaign running."""

_STILL_ALLOWED = (
    update(_messages).where(_messages.c.id == bindparam("m_id"), _messages.c.status == MessageStatus.SENDING, *_ALLOWED)
    .values(updated_at=_param("m_now", _messages.c.updated_at)))
"""After a fresh rate-limiter slot (`_regrant`): the checks of `_TO_SENDING` again on our "sending" row, since an
opt-out or End may have committed while the sender waited for the slot."""

_TAKEN_BACK = (
    update(_messages).where(_messages.c.id == bindparam("m_id"), _messages.c.status == MessageStatus.SENDING)
    .values(status=MessageStatus.CLAIMED, claim_token=bindparam("m_token"), attempts=_messages.c.attempts - 1,
            updated_at=_param("m_now", _messages.c.updated_at)))
"""A "sending" row found no longer allowed before its request left goes back to our claim (`_why_not` settles it)."""

_SENT = (
    update(_messages).where(_messages.c.id == bindparam("a_id"), _messages.c.status == MessageStatus.SENDING)
    .values(status=MessageStatus.SENT, updated_at=_param("a_now", _messages.c.updated_at),
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
    .values(status=case((_messages.c.status == MessageStatus.SENDING, MessageStatus.SENT), else_=_messages.c.status),
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
class _Answer:
    """An accepted send whose answer is not written yet."""

    message_id: int
    subscriber_id: int | None
    provider_id: str | None
    price: object
    at: dt.datetime


@dataclass
class _Context:
    campaign: Campaign
    shop: Shop
    gateway: object | None
    limiter: object | None
    error: str | None = None
    piggyback: bool = False
    """SQLite: write an accepted answer with the next message's move to "sending" (see the module docstring)."""
    answer: _Answer | None = None
    """The accepted answer waiting for that commit."""
    handoff: object | None = None
    """PostgreSQL: a connection in autocommit for the move to "sending" when nothing else is to be committed
    with it (one round trip instead of BEGIN, UPDATE and COMMIT); None on SQLite."""
    answers: object | None = None
    """PostgreSQL: a connection in autocommit whose commits do not wait for the disk (kinnekt.db's
    no_disk_wait_engine: a pool of its own), for accepted answers (one statement each, `_ANSWERED`); None on
    SQLite."""
    texts: dict[int, str] | None = None
    """The batch's texts by message id, rendered and with their short links (`_texts`)."""
    writer: "_AnswerWriter | None" = None
    """PostgreSQL, campaigns (not automations): writes accepted answers on `answers` beside the sender."""
    yielding: "_Yielding | None" = None
    """Told when the rate limiter cannot be reached, so that the batch stops there."""


class _AnswerWriter:
    """Writes accepted answers (`_ANSWERED`) on the answers connection in a thread of its own, so that the sender
    prepares and moves the next message while the previous answer is on its way to the database: one round
    trip less on the sender's path per message. At most one answer is in flight: `put` first waits for the
    previous one (and raises its error, if it failed), so a worker killed at any moment leaves at most two rows
    "sending" (the answer in flight and the request that left last), both "unknown" later, never resent.
    Not for automations: their send-time smart-sending check must see the previous message as sent."""

    def __init__(self, connection):
        self.connection = connection
        self._statement = _driver(_ANSWERED, connection)
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = False
        self._thread = threading.Thread(target=self._work, name="answers", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (params := self._todo.get()) is not None:
            try:
                self._statement.rowcount(self.connection, params)
                self._done.put(None)
            except BaseException as error:  # handed to the sender, which raises it
                self._done.put(error)

    def put(self, answer: _Answer) -> None:
        """Queue the answer's write, once the previous answer is written. When that one failed its error is
        raised, after this answer was queued all the same (its request left: `close` still tries to write it)."""
        try:
            self.wait()
        finally:
            self._todo.put(_answer_params(answer))
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


def _context(session: OrmSession, campaign_id: int) -> _Context:
    campaign = session.get(Campaign, campaign_id, populate_existing=True)
    shop = session.get(Shop, campaign.shop_id, populate_existing=True)
    try:
        gateway = get_gateway(shop, session)
    except GatewayNotConfigured as exc:
        return _Context(campaign, shop, None, None, error=str(exc))
    limiter = None
    if gateway.rate_limited:
        from kinnekt.sms.ratelimit import limiter_for
        limiter = limiter_for(gateway.api_key, gateway.sender)
        if not limiter.limits:  # every limit is off: there is no slot to take
            limiter = None
        elif hasattr(gateway, "warm"):
            gateway.warm()  # connected before the first slot (see VonageGateway.warm)
    return _Context(campaign, shop, gateway, limiter,
                    piggyback=limiter is None and campaign.kind != "automation" and not on_postgresql(session))


def send_batch(session: OrmSession, campaign_id: int, ids: list[int], token: str, *,
               yielding: _Yielding | None = None) -> dict[str, int]:
    """Send each claimed message of the batch (re-checking before each); returns outcomes by name.

    The batch's rows and subscribers are read once; what can change meanwhile (an opt-out, End, an
    uninstall) is checked again by the conditional UPDATE that moves each row to "sending". When `yielding`
    says so, the batch stops before its next message (outcome HANDED_OVER) and its unsent rows are released.
    """
    context = _context(session, campaign_id)
    loaded = session.execute(
        select(Message, Subscriber).outerjoin(Subscriber, Subscriber.id == Message.subscriber_id)
        .where(Message.id.in_(ids)).order_by(Message.id).execution_options(populate_existing=True)).all()
    context.texts = _texts(session, context, loaded, token)
    session.commit()  # with the batch's links: made before any of its requests leaves
    outcomes: dict[str, int] = {}
    sent_to: list[int] = []
    try:
        if on_postgresql(session):
            context.handoff = session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT")
            context.answers = no_disk_wait_engine(session.get_bind()).connect() \
                .execution_options(isolation_level="AUTOCOMMIT")
            if context.campaign.kind != "automation":
                context.writer = _AnswerWriter(context.answers)
        context.yielding = yielding
        for message, subscriber in loaded:
            if yielding is not None and yielding.due():
                outcomes[HANDED_OVER] = 1
                break
            outcome = _send_one(session, context, message, subscriber, token)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome in ("sent", "unknown", "failed") and message.subscriber_id is not None:
                sent_to.append(message.subscriber_id)
            if outcome == "stopped":
                break
        if context.writer is not None:
            context.writer.close()  # the last answer is written before the batch's end is
    except BaseException:
        if context.writer is not None:
            try:
                context.writer.close()  # the answer of the last request that left, if it can still be written
            except Exception:  # its row stays "sending", later "unknown" (never resent)
                log.exception("campaign %s: could not record an answer", campaign_id)
        _flush_after_error(session, context)
        raise
    finally:
        for connection in (context.handoff, context.answers):
            if connection is not None:
                try:
                    connection.close()
                except Exception:  # a broken connection: the pool drops it; the batch's outcome stands
                    log.warning("campaign %s: could not return a connection to the pool", campaign_id,
                                exc_info=True)
    _flush_answer(session, context)  # the batch's last answer
    _release_claimed(session, ids, token)  # rows left when the campaign stopped or the loop broke off
    if sent_to:
        from kinnekt.segments.membership import subscribers_changed
        subscribers_changed(context.shop.id, sent_to)  # one re-check job per batch, not per message
    return outcomes


def _texts(session: OrmSession, context: _Context, loaded, token: str) -> dict[int, str]:
    """The texts of the batch's messages that may go out, rendered, with their short links made for the whole
    batch at once (links.rewrite_many; a message that is then not sent keeps its links for a later attempt)."""
    from kinnekt.campaigns import composer, links
    items = []
    for message, subscriber in loaded:
        if (message.status != MessageStatus.CLAIMED or message.claim_token != token or _skip_reason(subscriber)
                or context.error):
            continue
        code = message.discount_code or (context.campaign.discount_code
                                         if context.campaign.discount_mode == "shared" else None)
        items.append((message, composer.render(context.campaign.body, shop=context.shop, subscriber=subscriber,
                                               discount_code=code,
                                               first_message=(subscriber.sent_count or 0) == 0)))
    return {message.id: text for (message, _), text in zip(items, links.rewrite_many(session, context.shop, items))}


def _release_claimed(session: OrmSession, ids: list[int], token: str) -> None:
    session.execute(update(Message).where(Message.id.in_(ids), Message.status == MessageStatus.CLAIMED,
                                          Message.claim_token == token)
                    .values(status=MessageStatus.PENDING,
                            claim_token=None).execution_options(synchronize_session=False))
    session.commit()


def _mark(session: OrmSession, message_id: int, token: str, status: str, **values) -> bool:
    """Move one of our claimed rows to `status`; False when it is no longer ours."""
    moved = session.execute(
        update(Message).where(Message.id == message_id, Message.status == MessageStatus.CLAIMED,
                              Message.claim_token == token)
        .values(status=status, claim_token=None, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    return bool(moved)


def _send_one(session: OrmSession, context: _Context, message: Message, subscriber: Subscriber | None,
              token: str) -> str:
    now = utcnow()
    message_id = message.id
    if message.status != MessageStatus.CLAIMED or message.claim_token != token:
        return "not ours"
    reason = _skip_reason(subscriber)
    if reason:
        return "skipped" if _mark(session, message_id, token, MessageStatus.SKIPPED, skip_reason=reason, due_at=None) \
            else "not ours"
    zone = quiet_hours.zone_for(subscriber.timezone, context.shop.timezone)
    if quiet_hours.is_quiet(context.shop, now, zone):
        _mark(session, message_id, token, MessageStatus.PENDING, due_at=quiet_hours.defer(context.shop, now, zone))
        return "deferred"
    reason = _recently_texted(session, context, message)
    if reason:
        return "skipped" if _mark(session, message_id, token, MessageStatus.SKIPPED, skip_reason=reason, due_at=None) \
            else "not ours"
    if context.error:
        _mark(session, message_id, token, MessageStatus.FAILED, error_code="not-configured", error_reason=context.error)
        return "failed"
    text = context.texts.get(message_id)
    if text is None:  # left out when the batch was loaded (not subscribed then), allowed now
        text = _texts(session, context, [(message, subscriber)], token)[message_id]
    encoding, segments = size(text)
    granted_at = None
    if context.limiter is not None:
        # As late as possible, so that only the move to "sending" lies between the slot and the request.
        from kinnekt.sms.ratelimit import RateLimitTimeout, RateLimitUnavailable
        try:
            context.limiter.acquire()
            granted_at = context.limiter.attempt_started  # before Redis granted: its reply's delay counts too
        except RateLimitTimeout as error:
            if isinstance(error, RateLimitUnavailable) and context.yielding is not None:
                context.yielding.limiter_lost = True  # no slot can be had: the batch stops after this row
            _mark(session, message_id, token, MessageStatus.PENDING,
                  due_at=utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_RATE_WAIT_RETRY_SECONDS))
            return "rate-wait"
    values = {"m_id": message_id, "m_token": token, "m_body": text, "m_encoding": encoding,
              "m_segments": segments, "m_now": utcnow()}
    if context.handoff is not None and context.answer is None and not _in_transaction(session):
        # Nothing else to commit with the move (no answer waiting, nothing read): one statement in a
        # transaction of its own, durable before the request. (Not with a waiting answer: inside one
        # statement the answer's updates could wait on a lock while the move's checks keep the snapshot taken
        # before the wait, missing a STOP committed meanwhile.)
        moved = _driver(_TO_SENDING, context.handoff).rowcount(context.handoff, values)
        if not moved:
            return _why_not(session, context, message_id, token)
    else:
        connection = session.connection()
        if context.answer is not None:
            _write_answer(connection, context.answer)  # the previous message's answer rides on this commit
        moved = connection.execute(_TO_SENDING, values).rowcount
        if not moved:
            session.rollback()  # the answer is written on its own
            _flush_answer(session, context)
            return _why_not(session, context, message_id, token)
        session.commit()  # durable, before the request leaves
        context.answer = None
    if granted_at is not None and time.monotonic() - granted_at > defaults.SMS_RATE_REGRANT_AFTER_MS / 1000:
        if not _regrant(session, context, message_id):
            return "rate-wait"
        if not _still_allowed(session, context, message_id, token):
            return _why_not(session, context, message_id, token)

    result = prices.with_price(context.gateway.send(message.to_phone, text, message.client_ref or row_ref(message_id)),
                               message.to_phone, text)
    if result.status == "sent" and context.answers is not None:
        answer = _Answer(message_id, message.subscriber_id, result.provider_id, result.price, utcnow())
        if context.writer is not None:
            context.writer.put(answer)
        else:
            _driver(_ANSWERED, context.answers).rowcount(context.answers, _answer_params(answer))
        return "sent"
    if result.status == "sent" and context.piggyback:
        context.answer = _Answer(message_id, message.subscriber_id, result.provider_id, result.price, utcnow())
        return "sent"
    return record(session, message, result, attempts=(message.attempts or 0) + 1)


@functools.lru_cache(maxsize=16)
def _driver_statement(statement, dialect) -> DriverStatement:
    return DriverStatement(statement, dialect)


def _driver(statement, connection) -> DriverStatement:
    """The hot-path statement compiled for this connection's dialect, run on the driver (kinnekt.db.DriverStatement)."""
    return _driver_statement(statement, connection.dialect)


def _in_transaction(session) -> bool:
    return (session() if isinstance(session, scoped_session) else session).in_transaction()


def _answer_params(answer: _Answer) -> dict:
    return {"a_id": answer.message_id, "a_now": answer.at, "a_provider_id": answer.provider_id,
            "a_price": answer.price, "s_id": answer.subscriber_id, "s_now": answer.at}


def _write_answer(connection, answer: _Answer) -> None:
    """The accepted answer's statements, in the connection's transaction (the caller commits)."""
    params = _answer_params(answer)
    if not connection.execute(_SENT, params).rowcount:
        connection.execute(_SENT_KEEP, params)
    if answer.subscriber_id is not None:
        connection.execute(_RECEIVED, params)


def _flush_answer(session: OrmSession, context: _Context) -> None:
    """Write and commit the waiting answer, if any, on its own (not waiting for the disk on PostgreSQL)."""
    answer = context.answer
    if answer is None:
        return
    _no_disk_wait(session)
    _write_answer(session.connection(), answer)
    session.commit()
    context.answer = None


def _flush_after_error(session: OrmSession, context: _Context) -> None:
    """The batch broke off: still write the answer of the last request that left (else it ends "unknown")."""
    if context.answer is None:
        return
    try:
        session.rollback()
        _flush_answer(session, context)
    except Exception:  # the database is gone: the row stays "sending" and becomes "unknown", never resent
        log.exception("campaign %s: could not record the answer of message %s", context.campaign.id,
                      context.answer.message_id)


def _no_disk_wait(session: OrmSession) -> None:
    """On PostgreSQL, this transaction's commit need not wait for the disk: an answer lost in a database crash
    leaves its row "sending", later "unknown" (never resent). The move to "sending" is always durable."""
    if on_postgresql(session):
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _regrant(session: OrmSession, context: _Context, message_id: int) -> bool:
    """Take a fresh slot for a message whose first one went stale; False (the row is pending again) if none came."""
    from kinnekt.sms.ratelimit import RateLimitTimeout, RateLimitUnavailable
    try:
        context.limiter.acquire()
        return True
    except RateLimitTimeout as error:  # nothing left for the provider: the row can go back safely
        if isinstance(error, RateLimitUnavailable) and context.yielding is not None:
            context.yielding.limiter_lost = True
        session.execute(update(Message).where(Message.id == message_id, Message.status == MessageStatus.SENDING)
                        .values(status=MessageStatus.PENDING, updated_at=utcnow(),
                                due_at=utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_RATE_WAIT_RETRY_SECONDS))
                        .execution_options(synchronize_session=False))
        session.commit()
        return False


def _still_allowed(session: OrmSession, context: _Context, message_id: int, token: str) -> bool:
    """After waiting for a fresh slot, the row may still go out (`_STILL_ALLOWED`); if not, it is ours ("claimed")
    again, for `_why_not`. Autocommit on PostgreSQL when the handoff connection is there, else committed."""
    now = utcnow()
    if context.handoff is not None:
        allowed = _driver(_STILL_ALLOWED, context.handoff).rowcount(context.handoff, {"m_id": message_id, "m_now": now})
        if not allowed:
            _driver(_TAKEN_BACK, context.handoff).rowcount(
                context.handoff, {"m_id": message_id, "m_token": token, "m_now": now})
        return bool(allowed)
    connection = session.connection()
    allowed = connection.execute(_STILL_ALLOWED, {"m_id": message_id, "m_now": now}).rowcount
    if not allowed:
        connection.execute(_TAKEN_BACK, {"m_id": message_id, "m_token": token, "m_now": now})
    session.commit()
    return bool(allowed)


def _skip_reason(subscriber: Subscriber | None) -> str | None:
    if subscriber is None:
        return "no_subscriber"
    if subscriber.status != SubscriberStatus.SUBSCRIBED:
        return "not_subscribed"
    if subscriber.suppressed_at is not None:
        return "suppressed"
    return None


def _recently_texted(session: OrmSession, context: _Context, message: Message) -> str | None:
    """Smart sending of an automation's message, checked as it goes out (it may have waited for its delay):
    "recently_texted" when another campaign or automation message reached the subscriber within the shop's
    smart_sending_hours. Campaign messages were checked at their snapshot; texts without a campaign (the
    double opt-in request, replies) never count."""
    hours = int(context.shop.smart_sending_hours or 0)
    if context.campaign.kind != "automation" or hours <= 0 or message.subscriber_id is None:
        return None
    recent = session.scalar(select(exists().where(
        Message.subscriber_id == message.subscriber_id, Message.campaign_id.is_not(None), Message.id != message.id,
        Message.status.in_(MessageStatus.ACCEPTED), Message.sent_at >= utcnow() - dt.timedelta(hours=hours))))
    return "recently_texted" if recent else None


def _why_not(session: OrmSession, context: _Context, message_id: int, token: str) -> str:
    """The claimed -> sending step found the row no longer allowed: say why and settle it."""
    message = session.get(Message, message_id, populate_existing=True)
    if message is None or message.status != MessageStatus.CLAIMED or message.claim_token != token:
        return "not ours"  # ended by End, or the lease expired and another sender took it
    if not _running(session, context.campaign.id):
        status, uninstalled_at = session.execute(
            select(Campaign.status, Shop.uninstalled_at).join(Shop, Shop.id == Campaign.shop_id)
            .where(Campaign.id == context.campaign.id)).one()
        if status == CampaignStatus.IN_PROGRESS and uninstalled_at is not None:  # pragma: no cover - uninstall ends it
            from kinnekt.campaigns.lifecycle import campaign_status_end_uninstalled
            campaign_status_end_uninstalled(session, context.campaign.id, utcnow())
        _stop_if_not_running(session, context.campaign.id)
        return "stopped"
    subscriber = session.get(Subscriber, message.subscriber_id, populate_existing=True) \
        if message.subscriber_id is not None else None
    reason = _skip_reason(subscriber) or "not_subscribed"
    _mark(session, message_id, token, MessageStatus.SKIPPED, skip_reason=reason, due_at=None)
    return "skipped"


def _settle(session: OrmSession, message_id: int, status: str, **values) -> bool:
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
    _no_disk_wait(session)
    if result.status == "sent":
        _write_answer(session.connection(), _Answer(message_id, message.subscriber_id, result.provider_id,
                                                    result.price, now))
        session.commit()
        return "sent"
    if result.unknown_outcome:
        _settle(session, message_id, MessageStatus.UNKNOWN, error_code=result.error_code,
                error_reason=result.error_text,
                **provider)
        session.commit()
        return "unknown"
    if result.retryable and attempts < defaults.CAMPAIGN_MAX_ATTEMPTS:
        delays = defaults.CAMPAIGN_RETRY_SECONDS
        delay = delays[min(max(attempts, 1) - 1, len(delays) - 1)]
        _settle(session, message_id, MessageStatus.PENDING, error_code=result.error_code,
                error_reason=result.error_text,
                due_at=now + dt.timedelta(seconds=delay))
        session.commit()
        return "retry"
    reason = result.error_text or "the provider refused the message"
    if result.retryable:
        reason = f"{reason} (gave up after {attempts} attempts)"
    _settle(session, message_id, MessageStatus.FAILED, error_code=result.error_code, error_reason=reason, **provider)
    session.commit()
    if result.recipient_unreachable and message.subscriber_id is not None:
        from kinnekt.subscribers.optin import suppress
        subscriber = session.get(Subscriber, message.subscriber_id)
        if subscriber is not None:
            suppress(session, subscriber, reason=f"Vonage refused the number: {result.error_text}", source="provider")
    return "failed"


# ---------------------------------------------------------------------------------------------- recovery

def recover(session: OrmSession, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Settle expired claims and stale sends of running campaigns, and re-dispatch stalled ones; commits.

    Claimed rows whose lease expired go back to pending (never requested). Rows "sending" for longer than
    CAMPAIGN_SENDING_STALE_SECONDS become "unknown" (never resent; see the module docstring). A campaign
    with due rows and no batch claimed within CAMPAIGN_STALL_SECONDS gets its senders queued again.
    """
    now = now or utcnow()
    lease = now - dt.timedelta(seconds=defaults.CAMPAIGN_CLAIM_LEASE_SECONDS)
    stale = now - dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS)
    stall = now - dt.timedelta(seconds=defaults.CAMPAIGN_STALL_SECONDS)
    counts = {"released": 0, "unknown": 0, "dispatched": 0}
    recent = now - dt.timedelta(days=1)
    running = session.execute(
        select(Campaign.id, Campaign.status, Campaign.heartbeat_at, Campaign.snapshot_at, Campaign.kind)
        .where((Campaign.status == CampaignStatus.IN_PROGRESS)
               | (Campaign.status.in_(CampaignStatus.STOPPED) & (Campaign.finished_at >= recent)))
        .order_by(Campaign.id).execution_options(all_shops=True)).all()
    for campaign_id, status, heartbeat_at, snapshot_at, kind in running:
        if status != CampaignStatus.IN_PROGRESS:
            # Ended or failed while a worker died mid-send: its one "sending" row still becomes unknown.
            counts["unknown"] += _stale_sends(session, campaign_id, stale, now)
            session.commit()
            continue
        if snapshot_at is None:
            continue  # still starting: the start job (re-queued by the due scan) finishes it
        counts["released"] += session.execute(
            update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CLAIMED,
                                  Message.updated_at <= lease)
            .values(status=MessageStatus.PENDING, claim_token=None, updated_at=now)
            .execution_options(synchronize_session=False)).rowcount or 0
        counts["unknown"] += _stale_sends(session, campaign_id, stale, now)
        session.commit()
        if heartbeat_at is not None and heartbeat_at > stall:
            continue
        due = session.scalar(select(exists().where(
            Message.campaign_id == campaign_id, Message.status == MessageStatus.PENDING, Message.claim_token.is_(None),
            Message.due_at.is_(None) | (Message.due_at <= now))))
        unfinished = session.scalar(select(exists().where(Message.campaign_id == campaign_id,
                                                          Message.status.in_(REMAINING))))
        if due or (not unfinished and kind != "automation"):  # an idle automation has nothing to complete
            # Fresh job ids: the job of a killed worker still looks "started" in RQ until its timeout passes.
            tasks.enqueue_senders(campaign_id, tag=f"r{int(now.timestamp())}")  # nothing to send: a sender completes it
            counts["dispatched"] += 1
        elif unfinished:
            next_due = session.scalar(select(func.min(Message.due_at)).where(Message.campaign_id == campaign_id,
                                                                             Message.status == MessageStatus.PENDING))
            if next_due is not None:
                wake_at(campaign_id, next_due)
    return counts


def _stale_sends(session: OrmSession, campaign_id: int, stale: dt.datetime, now: dt.datetime) -> int:
    """Rows "sending" since before `stale` lost their worker mid-call: "unknown", never sent again."""
    return session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.SENDING,
                              Message.updated_at <= stale)
        .values(status=MessageStatus.UNKNOWN, error_code="worker-lost", updated_at=now,
                error_reason="the worker stopped during the send; it may have been sent")
        .execution_options(synchronize_session=False)).rowcount or 0


# ---------------------------------------------------------------------------------------------- test send

def send_test(session: OrmSession, shop: Shop, campaign_or_values, phone: str) -> Message:
    """Send the campaign's message once to `phone` (kind "test", no campaign: never in statistics)."""
    from kinnekt.campaigns import composer
    from kinnekt.sms.outgoing import queue_message
    from kinnekt.subscribers.phones import normalise
    if isinstance(campaign_or_values, Campaign):
        body, mode, code = (campaign_or_values.body, campaign_or_values.discount_mode,
                            campaign_or_values.discount_code)
    else:
        values = dict(campaign_or_values)
        body, mode, code = values.get("body") or "", values.get("discount_mode") or "none", values.get("discount_code")
    number = normalise(phone).e164  # raises InvalidPhone (a ValueError) with the reason
    subscriber = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id, Subscriber.phone == number))
    sample_code = None
    if mode == "shared":
        sample_code = code
    elif mode == "unique":
        from kinnekt.shopify.discounts import generate_codes
        sample_code = generate_codes(1, prefix=(code or "").strip().upper())[0]
    text = composer.render(body, shop=shop, subscriber=subscriber, discount_code=sample_code, first_message=True)
    return queue_message(session, shop, None, text, kind="test", to_phone=number)
