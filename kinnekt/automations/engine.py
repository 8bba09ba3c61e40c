"""Firing automations: read the segment enter/leave log past each automation's cursor and queue one message per entry.

An automation switched on reads its segment's `segment_events` with ids above `last_event_id` (the cursor),
of its trigger kind (enter or leave) and of a cause that fires (everything but a first `build` and a plain
`edit`). Each such entry becomes one `messages` row of the automation's backing campaign, with
`occurrence` = the event id, inserted by one INSERT ... SELECT ... ON CONFLICT DO NOTHING on the unique
(campaign, subscriber, occurrence): running it twice, resetting the cursor or crashing before the cursor
moved can never give one entry a second message; leaving and entering again is a new event, so a new
message. The rows and the advanced cursor commit in one transaction, AUTOMATION_FIRE_CHUNK events at a time.

A pending row is due at the event's time plus the delay, pushed past quiet hours in the recipient's zone;
someone unsubscribed, suppressed or never clicking gets a skipped row with the campaigns' skip reasons. Smart
sending is checked when the message goes out (kinnekt/campaigns/sending.py), since a delayed message may
meet a newer text. The backing campaign's senders (kinnekt/campaigns/sending.py) then send the rows,
exactly once, at the shared rate.

Events are read only while the segment row is locked (kinnekt/segments/membership.lock_segments), the lock
every writer of the log holds until it commits: so no event id below the cursor can still be uncommitted
when the cursor moves past it (PostgreSQL hands out ids before commit, not in commit order).

Discount codes: a shared code is created at Shopify by the first fire that queues a message; in unique mode
each new pending row gets its own code, stored on the row with the row, then created at Shopify (the first
time with the discount, later added to it). Until Shopify has the code, the rows that carry it are held
(claim token `models.message.HOLD`: no sender claims them, not even one of the same automation already running);
Shopify's answer releases them, and a code Shopify refuses leaves its row skipped ("no_discount_code"). A
worker that dies before that answer leaves its rows held: after AUTOMATION_HOLD_SECONDS the recovery
releases them if the shared code exists by then, and otherwise skips them ("no_discount_code"), since
whether their codes reached Shopify is unknown and a text must never carry a code that does not work.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Iterable

from sqlalchemy import Integer, String, and_, case, exists, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.automations import tasks
from kinnekt.campaigns import lifecycle, quiet_hours
from kinnekt.campaigns import tasks as campaign_tasks
from kinnekt.db import UTCDateTime, aware_utc, on_postgresql
from kinnekt.models import Automation, Campaign, Message, Segment, SegmentEvent, Shop, Subscriber
from kinnekt.models.base import IdType
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.message import HOLD, MessageStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.models.subscriber_key import before_inserting_messages
from kinnekt.segments import membership

log = logging.getLogger(__name__)

QUIET_CAUSES = ("build", "edit")
"""Log causes that never fire an automation: a segment's first build, and an edit the merchant did not let fire."""


@dataclass
class _Chunk:
    """What one transaction of a fire did."""

    queued: int = 0
    codes: list[tuple[int, str]] = field(default_factory=list)  # (message id, code) given in this chunk
    pending_ids: list[int] = field(default_factory=list)
    full: bool = False
    campaign_id: int | None = None


# ---------------------------------------------------------------------------------------------- firing

def fire(session: OrmSession, shop_id: int, *, now: dt.datetime | None = None) -> int:
    """Queue the messages of every automation of the shop that is on, for the log entries since its cursor.

    Commits; returns how many messages were queued (pending rows created; skipped ones not counted).
    """
    now = aware_utc(now)
    shop = session.get(Shop, shop_id, populate_existing=True)
    if shop is None or not shop.installed:
        return 0
    automation_ids = session.scalars(
        select(Automation.id).join(Campaign, Campaign.id == Automation.campaign_id)
        .join(Segment, Segment.id == Automation.segment_id)
        .where(Automation.shop_id == shop_id, Automation.enabled.is_(True),
               Campaign.status == CampaignStatus.IN_PROGRESS)
        .order_by(Automation.id)).all()
    session.commit()
    queued = 0
    for automation_id in automation_ids:
        try:
            queued += fire_automation(session, shop, automation_id, now=now)
        except Exception:  # one broken automation must not hold up the others; the next fire tries it again
            session.rollback()
            log.exception("automation %s of shop %s did not fire", automation_id, shop_id)
    return queued


def fire_automation(session: OrmSession, shop: Shop, automation_id: int, *, now: dt.datetime | None = None) -> int:
    """Fire one automation: work through its segment's log past the cursor, then wake its senders; commits."""
    now = aware_utc(now)
    queued = 0
    last_seen = None
    while True:
        chunk = _fire_chunk(session, shop, automation_id, now)
        if chunk is None:
            break
        queued += chunk.queued
        last_seen = chunk
        if chunk.codes or chunk.pending_ids:
            _discounts(session, shop, chunk.campaign_id, chunk, now)
        if not chunk.full:
            break
    if last_seen is not None and queued:
        _wake_senders(session, automation_id, now)
    return queued


def _fire_chunk(session: OrmSession, shop: Shop, automation_id: int, now: dt.datetime) -> _Chunk | None:
    """One transaction: the next events past the cursor become messages and the cursor moves; None when idle."""
    segment_id = session.scalar(select(Automation.segment_id).where(Automation.id == automation_id))
    if segment_id is None:
        session.rollback()
        return None
    before_inserting_messages(session, shop.id)  # before the segment and automation locks: see subscriber_key
    membership.lock_segments(session, [segment_id])  # every writer of this segment's log has committed (see module doc)
    automation = session.execute(
        select(Automation.segment_id, Automation.trigger, Automation.delay_seconds, Automation.last_event_id,
               Automation.campaign_id, Campaign.status)
        .join(Campaign, Campaign.id == Automation.campaign_id)
        .where(Automation.id == automation_id, Automation.enabled.is_(True))
        .with_for_update(of=Automation.__table__)).one_or_none()
    if automation is None or automation.segment_id != segment_id or automation.status != CampaignStatus.IN_PROGRESS:
        session.rollback()
        return None
    cursor, campaign_id = automation.last_event_id or 0, automation.campaign_id
    in_log = [SegmentEvent.shop_id == shop.id, SegmentEvent.segment_id == segment_id, SegmentEvent.id > cursor]
    size = max(1, defaults.AUTOMATION_FIRE_CHUNK)
    upper = session.scalar(select(SegmentEvent.id).where(*in_log).order_by(SegmentEvent.id)
                           .offset(size - 1).limit(1))
    full = upper is not None
    if upper is None:
        upper = session.scalar(select(func.max(SegmentEvent.id)).where(*in_log))
    if upper is None:
        session.rollback()
        return None
    firing = [*in_log, SegmentEvent.id <= upper, SegmentEvent.kind == automation.trigger,
              SegmentEvent.cause.not_in(QUIET_CAUSES)]
    chunk = _Chunk(full=full, campaign_id=campaign_id)
    chunk.queued = _insert_messages(session, shop, campaign_id, firing, automation.delay_seconds or 0, now)
    new_rows = [Message.campaign_id == campaign_id, Message.occurrence > cursor, Message.occurrence <= upper,
                Message.status == MessageStatus.PENDING]
    chunk.pending_ids = list(session.scalars(select(Message.id).where(*new_rows).order_by(Message.id)))
    mode, prefix, discount_id = session.execute(
        select(Campaign.discount_mode, Campaign.discount_code, Campaign.discount_shopify_id)
        .where(Campaign.id == campaign_id)).one()
    if mode == "unique":
        chunk.codes = _give_codes(session, new_rows, prefix)
    if not shop.is_demo and (mode == "unique" or (mode == "shared" and not discount_id)):
        # Held until Shopify has the code (see the module docstring); the demo creates nothing at Shopify.
        session.execute(update(Message).where(*new_rows).values(claim_token=HOLD)
                        .execution_options(synchronize_session=False))
    moved = session.execute(
        update(Automation).where(Automation.id == automation_id, Automation.last_event_id == cursor,
                                 Automation.enabled.is_(True))
        .values(last_event_id=upper, updated_at=Automation.updated_at)  # reading the log is not an edit
        .execution_options(synchronize_session=False)).rowcount
    if not moved:  # switched off, or another fire moved the cursor first: its rows are the same rows
        session.rollback()
        return None
    session.commit()
    return chunk


def _insert_messages(session: OrmSession, shop: Shop, campaign_id: int, firing: list, delay: int,
                     now: dt.datetime) -> int:
    """INSERT ... SELECT one row per firing event (ON CONFLICT DO NOTHING); returns the pending rows inserted."""
    zone = func.coalesce(Subscriber.timezone, literal(shop.timezone or "UTC", String))
    events = select(SegmentEvent).join(Subscriber, Subscriber.id == SegmentEvent.subscriber_id).where(*firing)
    pairs = session.execute(events.with_only_columns(SegmentEvent.at, zone).distinct()).all()
    if not pairs:
        return 0
    wait = dt.timedelta(seconds=max(0, int(delay)))
    dues = {(at, name): quiet_hours.defer(shop, at + wait, quiet_hours.zone_for(name, shop.timezone))
            for at, name in pairs}
    # Each (event time, zone) has its due instant; a zone changed since the read above gets the latest one.
    due = case(*[(and_(SegmentEvent.at == literal(at, UTCDateTime), zone == literal(name, String)),
                  literal(when, UTCDateTime)) for (at, name), when in dues.items()],
               else_=literal(max(dues.values()), UTCDateTime))
    reason = fire_skip_reason(shop)
    source = events.with_only_columns(
        literal(shop.id, IdType), literal(campaign_id, IdType), SegmentEvent.subscriber_id,
        literal("automation"), SegmentEvent.id, Subscriber.phone,
        case((reason.is_(None), literal(MessageStatus.PENDING)), else_=literal(MessageStatus.SKIPPED)),
        reason,
        case((reason.is_(None), due), else_=literal(None, UTCDateTime)),
        literal(0, Integer),
        literal(now, UTCDateTime), literal(now, UTCDateTime))
    dialect = postgresql if on_postgresql(session) else sqlite
    statement = (dialect.insert(Message.__table__)
                 .from_select(["shop_id", "campaign_id", "subscriber_id", "kind", "occurrence", "to_phone", "status",
                               "skip_reason", "due_at", "attempts", "created_at", "updated_at"], source)
                 .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id", "occurrence"])
                 .returning(Message.__table__.c.status))
    return sum(1 for status in session.scalars(statement) if status == MessageStatus.PENDING)


def fire_skip_reason(shop: Shop):
    """Each subscriber's skip reason at fire time (NULL = to be sent), as campaigns give them; smart sending
    is left to the send (a delayed message meets the texts sent meanwhile)."""
    whens = [(Subscriber.status != SubscriberStatus.SUBSCRIBED, literal("not_subscribed")),
             (Subscriber.suppressed_at.is_not(None), literal("suppressed"))]
    threshold = int(shop.suppression_threshold or 0)
    if threshold > 0:
        whens.append((and_(Subscriber.sent_count >= threshold, Subscriber.clicks_count == 0), literal("no_clicks")))
    return case(*whens, else_=literal(None, String))


def _give_codes(session: OrmSession, new_rows: list, prefix: str | None) -> list[tuple[int, str]]:
    """Unique mode: a code for each new pending row without one, in the fire's own transaction."""
    from kinnekt.shopify.discounts import generate_codes
    missing = session.scalars(select(Message.id).where(*new_rows, Message.discount_code.is_(None))
                              .order_by(Message.id)).all()
    if not missing:
        return []
    given = list(zip(missing, generate_codes(len(missing), prefix=(prefix or "").strip().upper())))
    session.execute(update(Message), [{"id": m, "discount_code": c} for m, c in given])
    return given


# ---------------------------------------------------------------------------------------------- discounts

def _discounts(session: OrmSession, shop: Shop, campaign_id: int, chunk: _Chunk, now: dt.datetime) -> None:
    """Create the chunk's discount at Shopify, skip the rows whose code was refused, release the others; commits."""
    try:
        _create_discounts(session, shop, campaign_id, chunk, now)
    finally:
        _release(session, chunk.pending_ids)


def give_and_hold_codes(session: OrmSession, shop: Shop, campaign_id: int, new_rows: list) -> tuple[list, list[int]]:
    """In the caller's transaction: a unique code for each new pending row (`new_rows`: conditions on messages)
    without one, and the rows held (HOLD) until Shopify has their code (not in the demo, nothing to wait for);
    returns ((message id, code) given, the new pending rows' ids) for `release_codes` after the commit."""
    pending_ids = list(session.scalars(select(Message.id).where(*new_rows, Message.status == MessageStatus.PENDING)
                                       .order_by(Message.id)))
    mode, prefix, discount_id = session.execute(
        select(Campaign.discount_mode, Campaign.discount_code, Campaign.discount_shopify_id)
        .where(Campaign.id == campaign_id)).one()
    if not pending_ids or mode not in ("shared", "unique"):
        return [], []
    held = [Message.id.in_(pending_ids)]
    codes = _give_codes(session, held, prefix) if mode == "unique" else []
    if not shop.is_demo and (mode == "unique" or not discount_id):
        session.execute(update(Message).where(*held).values(claim_token=HOLD)
                        .execution_options(synchronize_session=False))
    return codes, pending_ids


def release_codes(session: OrmSession, shop: Shop, campaign_id: int, codes: list, pending_ids: list[int],
                  now: dt.datetime) -> None:
    """After the rows of `give_and_hold_codes` committed: create their codes at Shopify (refused ones skip their
    row, "no_discount_code") and release the rest; commits."""
    if codes or pending_ids:
        _discounts(session, shop, campaign_id, _Chunk(codes=codes, pending_ids=pending_ids, campaign_id=campaign_id),
                   now)


def _release(session: OrmSession, message_ids: list[int]) -> None:
    """Held rows still pending may be claimed now; commits."""
    if message_ids:
        session.rollback()  # whatever the Shopify step left open
        session.execute(update(Message).where(Message.id.in_(message_ids), Message.status == MessageStatus.PENDING,
                                              Message.claim_token == HOLD)
                        .values(claim_token=None).execution_options(synchronize_session=False))
        session.commit()


def _create_discounts(session: OrmSession, shop: Shop, campaign_id: int, chunk: _Chunk,
                      now: dt.datetime) -> None:
    """Create the chunk's discount at Shopify (shared: once; unique: its new codes); refused rows are skipped."""
    campaign = session.get(Campaign, campaign_id, populate_existing=True)
    if campaign is None or shop.is_demo:
        return
    if campaign.discount_mode == "shared" and chunk.pending_ids and not campaign.discount_shopify_id:
        try:
            reason = lifecycle.create_shared_discount(session, campaign, shop, now)
        except Exception as exc:  # no token, no scope: no code can be created either
            session.rollback()
            reason = f"Shopify refused the discount code: {exc}"
        session.refresh(campaign)
        if reason and not campaign.discount_shopify_id:  # not created by a concurrent fire either
            log.warning("campaign %s: %s", campaign_id, reason)
            _skip_refused(session, chunk.pending_ids)
        return
    if campaign.discount_mode != "unique" or not chunk.codes:
        return
    from kinnekt.shopify.discounts import add_codes, create_unique_codes
    codes = [code for _, code in chunk.codes]
    try:
        if campaign.discount_shopify_id:
            _, failed = add_codes(shop, campaign.discount_shopify_id, codes)
        else:
            created = create_unique_codes(shop, codes, **lifecycle.discount_terms(campaign, now))
            failed = created.failed
            session.execute(update(Campaign).where(Campaign.id == campaign.id)
                            .values(discount_shopify_id=created.discount_id)
                            .execution_options(synchronize_session=False))
            session.commit()
    except Exception as exc:  # refused, or not reachable with a token (through the client's retries)
        session.rollback()
        log.warning("campaign %s: Shopify refused the discount codes: %s", campaign_id, exc)
        _skip_refused(session, [message_id for message_id, _ in chunk.codes])
        return
    refused = {code for code, _ in failed}
    if refused:
        _skip_refused(session, [message_id for message_id, code in chunk.codes if code in refused])


def _skip_refused(session: OrmSession, message_ids: list[int]) -> None:
    """Rows whose code Shopify refused, still pending, are skipped with that reason; commits."""
    if message_ids:
        session.execute(update(Message).where(Message.id.in_(message_ids), Message.status == MessageStatus.PENDING)
                        .values(status=MessageStatus.SKIPPED, skip_reason="no_discount_code", due_at=None,
                                claim_token=None)
                        .execution_options(synchronize_session=False))
    session.commit()


def settle_stale_holds(session: OrmSession, *, now: dt.datetime | None = None) -> int:
    """Rows held for their discount code longer than AUTOMATION_HOLD_SECONDS (their fire died before Shopify
    answered): released when their campaign's shared code exists now, else skipped ("no_discount_code");
    all shops; commits; returns how many rows were settled."""
    now = aware_utc(now)
    stale = [Message.status == MessageStatus.PENDING, Message.claim_token == HOLD,
             Message.updated_at <= now - dt.timedelta(seconds=defaults.AUTOMATION_HOLD_SECONDS)]
    shared = select(Campaign.id).where(Campaign.discount_mode == "shared", Campaign.discount_shopify_id.is_not(None))
    released = session.execute(update(Message).where(*stale, Message.campaign_id.in_(shared))
                               .values(claim_token=None).execution_options(synchronize_session=False,
                                                                           all_shops=True)).rowcount or 0
    skipped = session.execute(update(Message).where(*stale)
                              .values(status=MessageStatus.SKIPPED, skip_reason="no_discount_code", due_at=None,
                                      claim_token=None)
                              .execution_options(synchronize_session=False, all_shops=True)).rowcount or 0
    session.commit()
    if skipped:
        log.warning("automations: %s messages skipped, their discount codes never confirmed by Shopify", skipped)
    return released + skipped


# ---------------------------------------------------------------------------------------------- senders

def _wake_senders(session: OrmSession, automation_id: int, now: dt.datetime) -> None:
    """Queue the backing campaign's senders when a row is due now, else a wake-up for the earliest one."""
    campaign_id = session.scalar(select(Automation.campaign_id).where(Automation.id == automation_id))
    earliest = session.scalar(select(func.min(Message.due_at)).where(Message.campaign_id == campaign_id,
                                                                     Message.status == MessageStatus.PENDING))
    session.commit()
    if campaign_id is None or earliest is None:
        return
    if earliest <= now:
        # A tag of its own: a sender that is just finishing must not swallow this dispatch as a duplicate.
        campaign_tasks.enqueue_senders(campaign_id, tag=f"a{int(now.timestamp() * 1000)}")
    else:
        campaign_tasks.enqueue_wake_campaign(campaign_id, earliest)


# ---------------------------------------------------------------------------------------------- requests

def request_fire(session: OrmSession, segment_ids: Iterable[int]) -> int:
    """Queue a fire of each shop with an automation switched on for one of these segments (call after commit).

    Reads on a connection of its own, leaving the caller's session as it was; returns how many were queued.
    """
    ids = sorted({int(i) for i in segment_ids})
    if not ids:
        return 0
    with session.get_bind().connect() as conn:
        shop_ids = conn.scalars(select(Automation.shop_id).distinct()
                                .where(Automation.enabled.is_(True), Automation.segment_id.in_(ids))).all()
    for shop_id in shop_ids:
        enqueue_fire(shop_id)
    return len(shop_ids)


@signals.segment_members_changed.connect
def _fire_for_changed_segments(session: OrmSession, *, segment_ids: Iterable[int]) -> int:
    """Receiver of kinnekt.signals.segment_members_changed (sent by kinnekt.segments.membership)."""
    return request_fire(session, segment_ids)


def enqueue_fire(shop_id: int) -> None:
    """Queue the shop's fire job; one already waiting in the queue covers this request too."""
    tasks.enqueue_fire_automations(shop_id)


def has_unread_entries(session: OrmSession, shop_id: int) -> bool:
    """True when an automation of the shop that is on has log entries of its segment past its cursor."""
    found = session.scalar(select(exists().where(
        Automation.shop_id == shop_id, Automation.enabled.is_(True),
        SegmentEvent.shop_id == shop_id, SegmentEvent.segment_id == Automation.segment_id,
        SegmentEvent.id > Automation.last_event_id)))
    session.commit()
    return bool(found)


def shops_with_automations(session: OrmSession) -> list[int]:
    """Ids of the installed shops with at least one automation switched on."""
    return list(session.scalars(
        select(Automation.shop_id).distinct().join(Shop, Shop.id == Automation.shop_id)
        .where(Automation.enabled.is_(True), Shop.uninstalled_at.is_(None), Shop.installed_at.is_not(None))
        .order_by(Automation.shop_id).execution_options(all_shops=True)))
