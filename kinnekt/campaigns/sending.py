"""Sending a campaign exactly once, at the allowed rate: claim batches, re-check, send, hand the answers over.

How a message moves between its statuses, and why a crash never sends one twice: docs/sending.md. The
provider's answers are written by kinnekt/campaigns/answers.py, lost work is picked up by
kinnekt/campaigns/recovery.py, and the progress figures are kinnekt/campaigns/stats.py's.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import scoped_session

from kinnekt import defaults, signals
from kinnekt.campaigns import answers, quiet_hours, tasks
from kinnekt.db import driver_statement as _driver
from kinnekt.db import no_disk_wait_engine, on_postgresql, utcnow
from kinnekt.models import Campaign, Message, Shop, Subscriber
from kinnekt.models.campaign import TRIGGERED_KINDS, CampaignStatus
from kinnekt.models.message import MessageStatus, row_ref
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.sms import prices
from kinnekt.sms.encoding import size
from kinnekt.sms.gateway import GatewayNotConfigured, get_gateway

log = logging.getLogger(__name__)

REMAINING = MessageStatus.OPEN
"""Rows not finished yet: a campaign completes when it has none."""


# ---------------------------------------------------------------------------------------------- dispatch

def _successor(campaign_id: int, slot: int, seq: int) -> None:
    tasks.enqueue_send_campaign(campaign_id, slot, seq)


def dispatch_slot(campaign_id: int, slot: int, *, tag: str) -> None:
    """Queue one sender slot of the campaign again (its job was lost); the tag keeps one job per loss."""
    tasks.enqueue_send_campaign(campaign_id, slot, tag=tag)


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
        if billing_stop(session, campaign_id):
            # Never sent unbilled: the rows stay pending; a plan that reopens wakes the campaign (or this does).
            wake_at(campaign_id, utcnow() + dt.timedelta(seconds=defaults.BILLING_BLOCKED_RECHECK_SECONDS))
            outcomes[BILLING_STOPPED] = 1
            return outcomes
        token = uuid.uuid4().hex
        if on_claim is not None:
            on_claim(token)
        ids = claim(session, campaign_id, token=token)
        if not ids:
            complete_or_wake(session, campaign_id)
            return outcomes
        for outcome, n in send_batch(session, campaign_id, ids, token, yielding=yielding).items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
        if HANDED_OVER in outcomes:
            return _hand_over(campaign_id, slot, seq, outcomes)
        if time.monotonic() >= deadline:
            _successor(campaign_id, slot, seq + 1)
            return outcomes


BILLING_STOPPED = "stopped by billing"
"""The outcome of a sender that found the shop's plan not letting it send (kinnekt.billing.allowance)."""


def billing_stop(session: OrmSession, campaign_id: int) -> str | None:
    """Why the campaign's shop may not send now (billing's answer to `sending_allowed`: no plan, pending, frozen,
    cancelled, cap used up), or None."""
    shop = session.scalar(select(Shop).join(Campaign, Campaign.shop_id == Shop.id).where(Campaign.id == campaign_id)
                          .execution_options(populate_existing=True))
    if shop is None:
        return None
    return next((reason for _, reason in signals.announce(signals.sending_allowed, session, shop=shop) if reason),
                None)


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


def complete_or_wake(session: OrmSession, campaign_id: int, *, now: dt.datetime | None = None) -> str:
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
                                   Campaign.kind.not_in(TRIGGERED_KINDS),  # sends for as long as it is on
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
            segments=_param("m_segments", _messages.c.segments), sender=_param("m_sender", _messages.c.sender),
            updated_at=_param("m_now", _messages.c.updated_at)))
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
"""A "sending" row found no longer allowed before its request left goes back to our claim (`_why_not` marks it)."""


@dataclass
class _Context:
    campaign: Campaign
    shop: Shop
    gateway: object | None
    limiter: object | None
    error: str | None = None
    piggyback: bool = False
    """SQLite: write an accepted answer with the next message's move to "sending" (see docs/sending.md)."""
    answer: answers.Answer | None = None
    """The accepted answer waiting for that commit."""
    handoff: object | None = None
    """PostgreSQL: a connection in autocommit for the move to "sending" when nothing else is to be committed
    with it (one round trip instead of BEGIN, UPDATE and COMMIT); None on SQLite."""
    answers: object | None = None
    """PostgreSQL: a connection in autocommit whose commits do not wait for the disk (kinnekt.db's
    no_disk_wait_engine: a pool of its own), for accepted answers (one statement each, `answers.write`); None on
    SQLite."""
    texts: dict[int, str] | None = None
    """The batch's texts by message id, rendered and with their short links (`_texts`)."""
    writer: answers.Writer | None = None
    """PostgreSQL, campaigns (not automations): writes accepted answers on `answers` beside the sender."""
    yielding: "_Yielding | None" = None
    """Told when the rate limiter cannot be reached, so that the batch stops there."""
    senders: list | None = None
    """The shop's own usable senders (kinnekt.sms.senders), when the gateway can send from each; None: every
    message goes out from `gateway`'s sender."""
    routes: dict | None = None
    """(gateway, limiter) per own sender used so far in the batch (`_route`)."""


def _context(session: OrmSession, campaign_id: int) -> _Context:
    campaign = session.get(Campaign, campaign_id, populate_existing=True)
    shop = session.get(Shop, campaign.shop_id, populate_existing=True)
    try:
        gateway = get_gateway(shop, session)
    except GatewayNotConfigured as exc:
        return _Context(campaign, shop, None, None, error=str(exc))
    limiter = _limiter(gateway)
    if limiter is not None and hasattr(gateway, "warm"):
        gateway.warm()  # connected before the first slot (see VonageGateway.warm)
    own = None
    if hasattr(gateway, "with_sender"):
        from kinnekt.sms import senders
        own = senders.usable(session, shop.id) or None
    return _Context(campaign, shop, gateway, limiter,
                    piggyback=limiter is None and campaign.kind not in TRIGGERED_KINDS and not on_postgresql(session),
                    senders=own, routes={})


def _limiter(gateway):
    """The rate limiter of a gateway's sends (the account's and its sender's limits), None when it has none."""
    if not gateway.rate_limited:
        return None
    from kinnekt.sms.ratelimit import limiter_for
    limiter = limiter_for(gateway.account, gateway.sender, getattr(gateway, "sender_rate", None))
    return limiter if limiter.limits else None  # every limit off: there is no slot to take


def _route(context: _Context, to_phone: str):
    """The gateway and limiter of one message: from the shop's sender for the recipient's country
    (kinnekt.sms.senders.pick), each sender with its own limit beside the account's."""
    if not context.senders:
        return context.gateway, context.limiter
    from kinnekt.sms import senders
    chosen = senders.pick(context.senders, prices.country_of(to_phone))
    if chosen is None or senders.address(chosen) == context.gateway.sender:
        return context.gateway, context.limiter
    route = context.routes.get(chosen.id)
    if route is None:
        gateway = context.gateway.with_sender(senders.address(chosen), senders.rate_for(chosen))
        route = context.routes[chosen.id] = (gateway, _limiter(gateway))
    return route


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
    accepted: list[int] = []
    try:
        if on_postgresql(session):
            context.handoff = session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT")
            context.answers = no_disk_wait_engine(session.get_bind()).connect() \
                .execution_options(isolation_level="AUTOCOMMIT")
            if context.campaign.kind not in TRIGGERED_KINDS:
                context.writer = answers.Writer(context.answers)
        context.yielding = yielding
        for message, subscriber in loaded:
            if yielding is not None and yielding.due():
                outcomes[HANDED_OVER] = 1
                break
            outcome = _send_one(session, context, message, subscriber, token)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "sent":
                accepted.append(message.id)
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
    if accepted:  # charged by a bulk job beside the senders (kinnekt.billing.tasks)
        signals.announce(signals.messages_accepted, session, shop_id=context.shop.id, message_ids=accepted)
    if sent_to:
        from kinnekt.segments.membership import subscribers_changed
        subscribers_changed(context.shop.id, sent_to)  # one re-check job per batch, not per message
    return outcomes


def _texts(session: OrmSession, context: _Context, loaded, token: str) -> dict[int, str]:
    """The texts of the batch's messages that may go out, rendered, with their short links made for the whole
    batch at once (links.rewrite_many; a message that is then not sent keeps its links for a later attempt)."""
    from kinnekt.campaigns import composer, links, trigger_tags
    chosen = [(message, subscriber) for message, subscriber in loaded
              if not (message.status != MessageStatus.CLAIMED or message.claim_token != token
                      or _skip_reason(subscriber) or context.error)]
    extra = trigger_tags.values_for(session, context.campaign, [message for message, _ in chosen])
    items = []
    for message, subscriber in chosen:
        code = message.discount_code or (context.campaign.discount_code
                                         if context.campaign.discount_mode == "shared" else None)
        items.append((message, composer.render(context.campaign.body, shop=context.shop, subscriber=subscriber,
                                               discount_code=code, first_message=(subscriber.sent_count or 0) == 0,
                                               extra=extra.get(message.id))))
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
    gateway, limiter = _route(context, message.to_phone)
    granted_at = None
    if limiter is not None:
        # As late as possible, so that only the move to "sending" lies between the slot and the request.
        from kinnekt.sms.ratelimit import RateLimitTimeout, RateLimitUnavailable
        try:
            limiter.acquire()
            granted_at = limiter.attempt_started  # before Redis granted: its reply's delay counts too
        except RateLimitTimeout as error:
            if isinstance(error, RateLimitUnavailable) and context.yielding is not None:
                context.yielding.limiter_lost = True  # no slot can be had: the batch stops after this row
            _mark(session, message_id, token, MessageStatus.PENDING,
                  due_at=utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_RATE_WAIT_RETRY_SECONDS))
            return "rate-wait"
    values = {"m_id": message_id, "m_token": token, "m_body": text, "m_encoding": encoding,
              "m_segments": segments, "m_sender": (getattr(gateway, "sender", None) or "")[:32] or None,
              "m_now": utcnow()}
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
            answers.write(connection, context.answer)  # the previous message's answer rides on this commit
        moved = connection.execute(_TO_SENDING, values).rowcount
        if not moved:
            session.rollback()  # the answer is written on its own
            _flush_answer(session, context)
            return _why_not(session, context, message_id, token)
        session.commit()  # durable, before the request leaves
        context.answer = None
    if granted_at is not None and time.monotonic() - granted_at > defaults.SMS_RATE_REGRANT_AFTER_MS / 1000:
        if not _regrant(session, context, message_id, limiter):
            return "rate-wait"
        if not _still_allowed(session, context, message_id, token):
            return _why_not(session, context, message_id, token)

    result = prices.with_price(gateway.send(message.to_phone, text, message.client_ref or row_ref(message_id)),
                               message.to_phone, text)
    if result.status == "sent" and context.answers is not None:
        answer = answers.Answer(message_id, message.subscriber_id, result.provider_id, result.price, utcnow())
        if context.writer is not None:
            context.writer.put(answer)
        else:
            answers.write(context.answers, answer)
        return "sent"
    if result.status == "sent" and context.piggyback:
        context.answer = answers.Answer(message_id, message.subscriber_id, result.provider_id, result.price, utcnow())
        return "sent"
    return answers.record(session, message, result, attempts=(message.attempts or 0) + 1)


def _in_transaction(session) -> bool:
    return (session() if isinstance(session, scoped_session) else session).in_transaction()


def _flush_answer(session: OrmSession, context: _Context) -> None:
    """Write and commit the waiting answer, if any, on its own (not waiting for the disk on PostgreSQL)."""
    answer = context.answer
    if answer is None:
        return
    answers.no_disk_wait(session)
    answers.write(session.connection(), answer)
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


def _regrant(session: OrmSession, context: _Context, message_id: int, limiter) -> bool:
    """Take a fresh slot for a message whose first one went stale; False (the row is pending again) if none came."""
    from kinnekt.sms.ratelimit import RateLimitTimeout, RateLimitUnavailable
    try:
        limiter.acquire()
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
    if context.campaign.kind not in TRIGGERED_KINDS or hours <= 0 or message.subscriber_id is None:
        return None
    recent = session.scalar(select(exists().where(
        Message.subscriber_id == message.subscriber_id, Message.campaign_id.is_not(None), Message.id != message.id,
        Message.status.in_(MessageStatus.ACCEPTED), Message.sent_at >= utcnow() - dt.timedelta(hours=hours))))
    return "recently_texted" if recent else None


def _why_not(session: OrmSession, context: _Context, message_id: int, token: str) -> str:
    """The claimed -> sending step found the row no longer allowed: say why, and mark it skipped or end the rows."""
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
