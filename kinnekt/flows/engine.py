"""Running flows: triggers start runs set-based, and a worker advances due runs in batches, exactly once.

**Entering** (`enter`): for each flow of the shop that is on, one INSERT ... SELECT per trigger reads its source
since the last read (less FLOW_TRIGGER_LOOKBACK_SECONDS, so a row stamped before its transaction committed is
never missed) and starts a run per person per occurrence: `segment_events` (enter / leave of the flow's segment,
as automations read them), `subscription_events` (subscribed, confirmed or resubscribed; any source, or one
keyword), `checkouts` not completed (the buyer's subscriber by customer, else by phone), `orders` placed or
fulfilled (written since, placed after the flow was switched on), `storefront_events` of the web pixel
(`product_viewed`, `product_added_to_cart`) attributed to a subscriber: received since, or received within
BROWSING_LATE_SECONDS and attributed since (their browser identified in the window), the latest per person, the
run carrying the event's product for `{product_title}`. The run's `trigger_key` ("checkout:<token>",
"order:<id>", ...) is unique per flow, so reading an occurrence twice starts nothing; the partial unique index
allows one active run per (flow, subscriber), and a person whose last run began within the flow's re-entry
cool-down is left out. Only subscribed people enter. A new run stands at the first step of the flow's current
version, due at once. Entering also ends the runs of people who left the flow's segment since the last read (the
"left_segment" exit). The other exits during a wait follow the changed subscribers (`exit_subscribers`, from the
re-check's signal through the batched exits job kinnekt.flows.tasks.exit_flows), so that an order placed during a
wait ends the run then (and not only when its wait is over) at a cost that follows the changes, not the number of
waiting runs.

**Advancing** (`advance`): a batch of a shop's due active runs is taken (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
so two workers take disjoint batches; on SQLite the batch's first statement takes the write lock), and in ONE
transaction, round after round while runs are due: the exit conditions in the flow's order (`EXITS`), then each
step for all runs standing at it:

- wait: move on, due after the duration, or at the next time the recipient's clock shows `wait_until_minute`
  (kinnekt/campaigns/quiet_hours.local_instant: DST gaps and repeats resolved as quiet hours resolve them);
- send: runs whose recipient is inside quiet hours stay, due at the window's end (deferred, never dropped; the
  exits are checked again then); runs whose recipient is a US number stay too, due FLOW_US_HOLD_SECONDS later, while
  the shop has senders of its own and no approved US sender (kinnekt.sms.registration.us_block_reason: a flow
  switched on before the hold began); the others get their message by one INSERT ... SELECT ... ON CONFLICT DO
  NOTHING on the backing campaign's (campaign, subscriber, occurrence = run id) key, and move on;
- condition: the step's segment definition compiled for the batch's subscribers (kinnekt/segments/compiler)
  sends each run to the first step of its yes or no branch;
- end, or no step left: the run is completed.

Discount codes are the automations' (kinnekt/automations/engine.give_and_hold_codes / release_codes): a unique
code per new row, given in the batch's transaction, and the rows held until Shopify has the code; after the
commit the codes are created and the rows released (a code refused skips its row; rows of a worker that died
before Shopify answered are settled by the automations' recovery, `settle_stale_holds`).

A run's message and its move commit together, so a worker killed at any point either left both or neither:
the batch is taken again and the key makes a second insert a no-op. Every move is conditional on the run still
standing at that step, active. The campaigns' senders then send the rows (kinnekt/campaigns/sending.py: exactly
once, at the shared rate, smart sending checked as each goes out). Nothing is held in memory between batches,
so a restarted worker resumes every run where the database says it is.

A flow that is off takes no new runs and advances none (its runs wait where they are until it is on again).
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from sqlalchemy import String, and_, case, cast, exists, func, literal, null, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, shared_cache, signals
from kinnekt.automations.engine import QUIET_CAUSES, fire_skip_reason, give_and_hold_codes, release_codes
from kinnekt.campaigns import quiet_hours
from kinnekt.campaigns import tasks as campaign_tasks
from kinnekt.casefold import fold
from kinnekt.db import UTCDateTime, aware_utc, begin_writing, on_postgresql
from kinnekt.flows import tasks
from kinnekt.models import (Checkout, Flow, FlowRun, FlowStep, LineItem, Message, Order, SegmentEvent, SegmentMember,
                            Shop, Subscriber, SubscriptionEvent)
from kinnekt.models.base import IdType
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from kinnekt.models.flow import FlowStatus, RunState
from kinnekt.models.message import MessageStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.models.subscriber_key import before_inserting_messages
from kinnekt.segments import compiler
from kinnekt.sms import registration
from kinnekt.subscribers.phones import gate_country

log = logging.getLogger(__name__)

SUBSCRIBE_KINDS = ("subscribed", "confirmed", "resubscribed")
"""subscription_events kinds that make someone a subscriber (the "subscribed" trigger)."""

BROWSING_EVENTS = {"product_viewed": ("product_viewed", "viewed:"), "added_to_cart": ("product_added_to_cart", "cart:")}
"""The browsing triggers: the storefront event each reads, and the prefix of its runs' trigger keys."""

BROWSING_LATE_SECONDS = 86400
"""How old an event may be when its browser is identified (attributed later) and still start a run."""

BROWSING_CLOCK_MARGIN_SECONDS = 3600
"""How far before the read's window a browsing event's own time (the shopper's clock) may lie and still be read
when it arrives in the window: the bound that lets the read use the index on (shop_id, occurred_at) instead of
scanning the shop's events. An event stamped more than this before its arrival is read only when its browser is
identified (again) in a later window."""


# ---------------------------------------------------------------------------------------------- steps

@dataclass
class Steps:
    """The steps of one version of one flow, with the order between them worked out."""

    by_id: dict[int, FlowStep]
    first: int | None
    after: dict[int, int | None] = field(default_factory=dict)  # step -> the step that follows it (None: done)
    yes: dict[int, int | None] = field(default_factory=dict)  # condition -> first step of its yes branch
    no: dict[int, int | None] = field(default_factory=dict)


def load_steps(session: OrmSession, flow_id: int, version: int) -> Steps:
    """The steps of this version of the flow, with each one's successor and each condition's branches."""
    rows = session.scalars(select(FlowStep).where(FlowStep.flow_id == flow_id, FlowStep.version == version)
                           .order_by(FlowStep.position, FlowStep.id)).all()
    lanes: dict[tuple[int | None, str | None], list[FlowStep]] = defaultdict(list)
    for step in rows:
        lanes[(step.parent_id, step.branch if step.parent_id is not None else None)].append(step)
    steps = Steps(by_id={step.id: step for step in rows}, first=None)

    def follow(lane_key, index_after: int, parent_id: int | None) -> int | None:
        lane = lanes.get(lane_key, [])
        if index_after + 1 < len(lane):
            return lane[index_after + 1].id
        return steps.after.get(parent_id) if parent_id is not None else None

    # Parents before children: a branch's last step continues after its condition.
    def walk(parent_id: int | None, branch: str | None) -> None:
        lane = lanes.get((parent_id, branch), [])
        for index, step in enumerate(lane):
            steps.after[step.id] = follow((parent_id, branch), index, parent_id)
        for step in lane:
            if step.kind == "condition":
                for name, target in (("yes", steps.yes), ("no", steps.no)):
                    children = lanes.get((step.id, name), [])
                    walk(step.id, name)
                    target[step.id] = children[0].id if children else steps.after[step.id]

    walk(None, None)
    top = lanes.get((None, None), [])
    steps.first = top[0].id if top else None
    return steps


# ---------------------------------------------------------------------------------------------- entering

def enter(session: OrmSession, shop_id: int, *, now: dt.datetime | None = None) -> int:
    """Start the runs of every flow of the shop that is on, for its trigger's occurrences since the last read, and
    end waiting runs whose exit condition holds; commits; returns how many runs were started."""
    now = aware_utc(now)
    shop = session.get(Shop, shop_id, populate_existing=True)
    if shop is None or not shop.installed:
        session.rollback()
        return 0
    flow_ids = session.scalars(select(Flow.id).where(Flow.shop_id == shop_id, Flow.status == FlowStatus.ON)
                               .order_by(Flow.id)).all()
    session.commit()
    started = 0
    for flow_id in flow_ids:
        try:
            entered, low = _enter_flow(session, shop, flow_id, now)
            started += entered
            if low is not None:
                _exit_segment_leavers(session, flow_id, low, now)
        except Exception:  # one broken flow must not hold up the others; the next scan tries it again
            session.rollback()
            log.exception("flow %s of shop %s: entering failed", flow_id, shop_id)
    return started


def _enter_flow(session: OrmSession, shop: Shop, flow_id: int, now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """One flow's entries since its last read, then the read moves on; one transaction. Returns how many runs were
    started and where the read began (None: the flow is not on)."""
    flow = session.get(Flow, flow_id, populate_existing=True)
    if flow is None or flow.status != FlowStatus.ON:
        session.rollback()
        return 0, None
    steps = load_steps(session, flow.id, flow.version)
    low = _window_start(flow, now)
    started = 0
    source = _trigger_source(flow, low, now) if steps.first is not None else None
    if source is not None:
        started = _insert_runs(session, shop, flow, steps.first, source, now)
    session.execute(update(Flow).where(Flow.id == flow.id)
                    .values(scanned_through=now, updated_at=Flow.updated_at)  # reading is not an edit
                    .execution_options(synchronize_session=False))
    session.commit()
    return started, low


def _window_start(flow: Flow, now: dt.datetime) -> dt.datetime:
    """Where this read of the trigger's source starts: the last read less the lookback, never before switching on."""
    enabled = aware_utc(flow.enabled_at) if flow.enabled_at else now
    if flow.scanned_through is None:
        return enabled
    lookback = dt.timedelta(seconds=max(0, defaults.FLOW_TRIGGER_LOOKBACK_SECONDS))
    return max(enabled, aware_utc(flow.scanned_through) - lookback)


def _key(prefix: str, column):
    return literal(prefix, String) + cast(column, String)


def _trigger_source(flow: Flow, low: dt.datetime, now: dt.datetime):
    """A Select of (subscriber_id, trigger_key, checkout_token, order_id, product_id), one row per occurrence."""
    shop_id = flow.shop_id
    none_text, none_id = literal(None, String), literal(None, IdType)
    if flow.trigger in ("segment_enter", "segment_leave"):
        if flow.segment_id is None:
            return None
        return (select(SegmentEvent.subscriber_id, _key("event:", SegmentEvent.id), none_text, none_id, none_id)
                .where(SegmentEvent.shop_id == shop_id, SegmentEvent.segment_id == flow.segment_id,
                       SegmentEvent.kind == ("enter" if flow.trigger == "segment_enter" else "leave"),
                       SegmentEvent.cause.not_in(QUIET_CAUSES), SegmentEvent.at > low, SegmentEvent.at <= now))
    if flow.trigger == "subscribed":
        query = (select(SubscriptionEvent.subscriber_id, _key("subscribed:", SubscriptionEvent.id), none_text,
                        none_id, none_id)
                 .join(Subscriber, Subscriber.id == SubscriptionEvent.subscriber_id)
                 .where(SubscriptionEvent.shop_id == shop_id, SubscriptionEvent.kind.in_(SUBSCRIBE_KINDS),
                        SubscriptionEvent.at > low, SubscriptionEvent.at <= now))
        keyword = ((flow.trigger_config or {}).get("keyword") or "").strip()
        if keyword:
            query = query.where(Subscriber.keyword_folded == fold(keyword))
        return query
    if flow.trigger == "checkout_started":
        buyer = or_(and_(Checkout.customer_id.is_not(None), Subscriber.customer_id == Checkout.customer_id),
                    and_(Checkout.customer_id.is_(None), Subscriber.phone == Checkout.phone))
        return (select(Subscriber.id, literal("checkout:", String) + Checkout.token, Checkout.token, none_id, none_id)
                .select_from(Checkout).join(Subscriber, and_(Subscriber.shop_id == Checkout.shop_id, buyer))
                .where(Checkout.shop_id == shop_id, Checkout.completed_at.is_(None),
                       Checkout.updated_at > low, Checkout.updated_at <= now))
    if flow.trigger in ("order_placed", "order_fulfilled"):
        # Orders of before the flow was on start nothing (a sync brings the past in); Shopify's times are to the
        # second, and its clock is not ours: the lookback's margin.
        enabled = (aware_utc(flow.enabled_at) if flow.enabled_at else now) - dt.timedelta(
            seconds=max(0, defaults.FLOW_TRIGGER_LOOKBACK_SECONDS))
        first_product = (select(LineItem.product_id).where(LineItem.order_id == Order.id)
                         .order_by(LineItem.id).limit(1).scalar_subquery())
        query = (select(Subscriber.id, _key("order:" if flow.trigger == "order_placed" else "fulfilled:", Order.id),
                        none_text, Order.id, first_product)
                 .select_from(Order).join(Subscriber, and_(Subscriber.shop_id == Order.shop_id,
                                                           Subscriber.customer_id == Order.customer_id))
                 .where(Order.shop_id == shop_id, Order.customer_id.is_not(None), Order.cancelled_at.is_(None),
                        Order.test.is_(False), Order.updated_at > low, Order.updated_at <= now))
        if flow.trigger == "order_placed":
            return query.where(Order.created_at >= enabled)  # not the orders of the past a sync brings in
        return query.where(Order.fulfillment_status == "fulfilled", Order.shopify_updated_at >= enabled)
    if flow.trigger in BROWSING_EVENTS:
        return _browsing_source(flow, low, now)
    return None


def _browsing_source(flow: Flow, low: dt.datetime, now: dt.datetime):
    """The storefront events of a browsing trigger attributed since `low`: received in the window (read through the
    index on (shop_id, occurred_at): the event's own time at most BROWSING_CLOCK_MARGIN_SECONDS before the window),
    or received lately (BROWSING_LATE_SECONDS, never before the flow was on) by a browser identified in the window
    (read through the browsers identified, then their events); the newest per subscriber by the event's own time
    (one run per person at a time: the product they saw last)."""
    name, prefix = BROWSING_EVENTS[flow.trigger]
    event, browser = StorefrontEvent.__table__, StorefrontBrowser.__table__
    enabled = aware_utc(flow.enabled_at) if flow.enabled_at else now
    late_since = max(enabled, now - dt.timedelta(seconds=BROWSING_LATE_SECONDS))
    margin = dt.timedelta(seconds=BROWSING_CLOCK_MARGIN_SECONDS)
    columns = (event.c.id, event.c.subscriber_id, event.c.occurred_at)
    received = select(*columns).where(
        event.c.shop_id == flow.shop_id, event.c.occurred_at > low - margin, event.c.name == name,
        event.c.subscriber_id.is_not(None), event.c.received_at > low, event.c.received_at <= now)
    attributed = (select(*columns)
                  .select_from(browser.join(event, and_(event.c.shop_id == browser.c.shop_id,
                                                        event.c.client_id == browser.c.client_id)))
                  .where(browser.c.shop_id == flow.shop_id, browser.c.identified_at > low,
                         browser.c.identified_at <= now, event.c.name == name, event.c.subscriber_id.is_not(None),
                         event.c.received_at >= late_since, event.c.received_at <= now))
    both = union_all(received, attributed).subquery()
    newest_first = func.row_number().over(partition_by=both.c.subscriber_id,
                                          order_by=(both.c.occurred_at.desc(), both.c.id.desc()))
    ranked = select(both.c.id, newest_first.label("newness")).subquery()
    latest = select(ranked.c.id).where(ranked.c.newness == 1)
    return select(event.c.subscriber_id, _key(prefix, event.c.id), literal(None, String), literal(None, IdType),
                  event.c.product_id).where(event.c.id.in_(latest))


def _insert_runs(session: OrmSession, shop: Shop, flow: Flow, first_step: int, source, now: dt.datetime) -> int:
    """INSERT ... SELECT the new runs (subscribed people, not in the flow now, past the cool-down) ON CONFLICT DO
    NOTHING; returns how many were started."""
    occurrences = source.subquery()
    subscriber_id, trigger_key, checkout_token, order_id, product_id = occurrences.c
    earlier = FlowRun.__table__.alias("earlier")
    cooldown = dt.timedelta(seconds=max(0, int(flow.reentry_cooldown_seconds or 0)))
    # Shopify's order times are its own, to the second, and the webhook that starts a run may be handled after the
    # order that ends it was placed: the "order" exit counts orders from a lookback before the run began.
    orders_since = now - dt.timedelta(seconds=max(0, defaults.FLOW_TRIGGER_LOOKBACK_SECONDS))
    blocked = exists().where(earlier.c.flow_id == flow.id, earlier.c.subscriber_id == subscriber_id,
                             or_(earlier.c.state == RunState.ACTIVE, earlier.c.started_at > now - cooldown))
    rows = (select(literal(shop.id, IdType), literal(flow.id, IdType), subscriber_id, literal(flow.version),
                   literal(RunState.ACTIVE), literal(first_step, IdType), literal(now, UTCDateTime), trigger_key,
                   checkout_token, order_id, product_id, literal(now, UTCDateTime),
                   literal(orders_since, UTCDateTime))
            .select_from(occurrences).join(Subscriber, Subscriber.id == subscriber_id)
            .where(Subscriber.shop_id == shop.id, Subscriber.status == SubscriberStatus.SUBSCRIBED,
                   Subscriber.suppressed_at.is_(None), ~blocked))
    dialect = postgresql if on_postgresql(session) else sqlite
    statement = (dialect.insert(FlowRun.__table__)
                 .from_select(["shop_id", "flow_id", "subscriber_id", "version", "state", "current_step_id", "due_at",
                               "trigger_key", "checkout_token", "order_id", "product_id", "started_at",
                               "orders_since"], rows)
                 .on_conflict_do_nothing()
                 .returning(FlowRun.__table__.c.id))
    return len(session.scalars(statement).all())


EXIT_CHUNK = 1000
"""Subscribers whose runs one exit statement checks (their ids in one IN list)."""


def _exit_segment_leavers(session: OrmSession, flow_id: int, low: dt.datetime, now: dt.datetime) -> int:
    """End the flow's active runs of the people who left its segment since `low` (any cause: a re-check, a build,
    an edit), when "no longer in the segment" is one of its exits; the other exits of a waiting run follow the
    re-check of its subscriber (`exit_subscribers`). Set-based, proportional to the leaves; commits."""
    flow = session.get(Flow, flow_id)
    if flow is None or flow.segment_id is None or "left_segment" not in (flow.exit_conditions or []):
        session.commit()
        return 0
    runs = FlowRun.__table__
    left = (select(SegmentEvent.subscriber_id)
            .where(SegmentEvent.shop_id == flow.shop_id, SegmentEvent.segment_id == flow.segment_id,
                   SegmentEvent.kind == "leave", SegmentEvent.at > low, SegmentEvent.at <= now))
    ended = len(_apply_exits(session, flow, [runs.c.subscriber_id.in_(left)], now))
    session.commit()
    return ended


def exit_subscribers(session: OrmSession, shop_id: int, subscriber_ids: Iterable[int], *,
                     now: dt.datetime | None = None) -> int:
    """Apply the exit conditions of the shop's flows that are on to the active runs of these subscribers (whose
    data just changed: an order, a completed checkout, consent, segments), each flow's conditions in its order;
    one UPDATE per condition per chunk of EXIT_CHUNK subscribers, so the cost follows the changed people, never
    the number of waiting runs. Commits after each chunk; returns how many runs left their flow."""
    now = aware_utc(now)
    ids = sorted({int(i) for i in subscriber_ids if i is not None})
    flows = session.scalars(select(Flow).where(Flow.shop_id == shop_id, Flow.status == FlowStatus.ON,
                                               Flow.exit_conditions.is_not(None)).order_by(Flow.id)).all()
    flows = [flow for flow in flows if flow.exit_conditions]
    session.commit()
    runs = FlowRun.__table__
    ended = 0
    for start in range(0, len(ids) if flows else 0, EXIT_CHUNK):
        chunk = ids[start:start + EXIT_CHUNK]
        for flow in flows:
            ended += len(_apply_exits(session, flow, [runs.c.shop_id == shop_id, runs.c.subscriber_id.in_(chunk)],
                                      now))
        session.commit()
    return ended


# ---------------------------------------------------------------------------------------------- exits

def _exit_condition(flow: Flow, name: str):
    """The SQL condition (correlated to flow_runs) under which a run of this flow leaves for `name`, or None."""
    runs = FlowRun.__table__
    if name == "unsubscribed":
        return exists().where(Subscriber.id == runs.c.subscriber_id,
                              or_(Subscriber.status != SubscriberStatus.SUBSCRIBED,
                                  Subscriber.suppressed_at.is_not(None)))
    if name == "order":
        ordered = exists().where(Subscriber.id == runs.c.subscriber_id, Order.shop_id == runs.c.shop_id,
                                 Order.customer_id == Subscriber.customer_id, Order.created_at >= runs.c.orders_since,
                                 Order.cancelled_at.is_(None),
                                 or_(runs.c.order_id.is_(None), Order.id != runs.c.order_id))
        completed = exists().where(Checkout.shop_id == runs.c.shop_id, Checkout.token == runs.c.checkout_token,
                                   Checkout.completed_at.is_not(None))
        return or_(ordered, completed)
    if name in ("added_to_cart", "started_checkout"):
        event = StorefrontEvent.__table__
        browsed = exists().where(event.c.subscriber_id == runs.c.subscriber_id, event.c.shop_id == runs.c.shop_id,
                                 event.c.name == ("product_added_to_cart" if name == "added_to_cart"
                                                  else "checkout_started"),
                                 event.c.received_at >= runs.c.orders_since)
        if name == "added_to_cart":
            return browsed
        buyer = or_(and_(Checkout.customer_id.is_not(None), Checkout.customer_id == Subscriber.customer_id),
                    Checkout.phone == Subscriber.phone)
        checkout = exists().where(Subscriber.id == runs.c.subscriber_id, Checkout.shop_id == runs.c.shop_id, buyer,
                                  Checkout.started_at >= runs.c.orders_since)
        return or_(browsed, checkout)
    if name == "left_segment":
        if flow.segment_id is None:
            return None
        return ~exists().where(SegmentMember.segment_id == flow.segment_id,
                               SegmentMember.subscriber_id == runs.c.subscriber_id)
    return None


def _apply_exits(session: OrmSession, flow: Flow, where: list, now: dt.datetime) -> list[int]:
    """Exit the flow's active runs matching `where` whose exit condition holds, each condition in the flow's order
    (a run meeting two leaves with the first one's reason); returns the ids of the runs that left. Does not
    commit."""
    runs = FlowRun.__table__
    ended: list[int] = []
    for name in flow.exit_conditions or []:
        condition = _exit_condition(flow, name)
        if condition is None:
            continue
        ended.extend(session.scalars(
            update(runs).where(*where, runs.c.flow_id == flow.id, runs.c.state == RunState.ACTIVE, condition)
            .values(state=RunState.EXITED, exit_reason=name, finished_at=now, due_at=None).returning(runs.c.id)))
    return ended


# ---------------------------------------------------------------------------------------------- advancing

@dataclass
class Pass:
    """What one batch did."""

    runs: int = 0
    sent: int = 0
    exited: int = 0
    completed: int = 0
    campaigns: set[int] = field(default_factory=set)
    held: list[tuple[int, list, list[int]]] = field(default_factory=list)  # (campaign, codes given, rows held)
    us_held: int = 0  # runs kept at a send step: a US recipient and no approved US sender
    us_blocked: bool | None = None  # whether the shop's texts to US numbers are held (asked once per batch)


def advance(session: OrmSession, shop_id: int, *, now: dt.datetime | None = None, limit: int | None = None,
            fail_after_decision=None) -> Pass:
    """Advance one batch of the shop's due runs (see the module docstring); one transaction, committed; then
    wakes the senders of the campaigns that got messages. `fail_after_decision` (tests) is called after the
    batch's messages and moves are written and before the commit, as a worker killed there would be."""
    now = aware_utc(now)
    shop = session.get(Shop, shop_id, populate_existing=True)
    session.commit()
    if shop is None or not shop.installed:
        return Pass()
    size = max(1, int(limit or defaults.FLOW_RUN_BATCH))
    try:
        result = _advance_batch(session, shop, now, size)
        if fail_after_decision is not None and result.runs:
            fail_after_decision()
        session.commit()
    except BaseException:
        session.rollback()
        raise
    for campaign_id, codes, held in result.held:  # their codes created at Shopify, the rows released
        release_codes(session, shop, campaign_id, codes, held, now)
    for campaign_id in sorted(result.campaigns):
        campaign_tasks.enqueue_senders(campaign_id, tag=f"f{int(now.timestamp() * 1000)}")
    return result


def _take_batch(session: OrmSession, shop_id: int, now: dt.datetime, size: int) -> list[int]:
    """The ids of up to `size` due active runs of the shop's flows that are on, held for this transaction."""
    due = (select(FlowRun.id).join(Flow, Flow.id == FlowRun.flow_id)
           .where(FlowRun.shop_id == shop_id, FlowRun.state == RunState.ACTIVE, FlowRun.due_at <= now,
                  Flow.status == FlowStatus.ON)
           .order_by(FlowRun.due_at, FlowRun.id).limit(size))
    if on_postgresql(session):
        before_inserting_messages(session, shop_id)  # before the first row lock (see subscriber_key)
        return list(session.scalars(due.with_for_update(of=FlowRun.__table__, skip_locked=True)))
    begin_writing(session)  # SQLite: the write lock, held to the commit, so no other worker moves these runs
    return list(session.scalars(due))


def _advance_batch(session: OrmSession, shop: Shop, now: dt.datetime, size: int) -> Pass:
    result = Pass()
    ids = _take_batch(session, shop.id, now, size)
    if not ids:
        return result
    result.runs = len(ids)
    runs = FlowRun.__table__
    steps_cache: dict[tuple[int, int], Steps] = {}
    flows = {flow.id: flow for flow in session.scalars(
        select(Flow).where(Flow.id.in_(select(FlowRun.flow_id).where(FlowRun.id.in_(ids)).distinct())))}
    zone_name = func.coalesce(Subscriber.timezone, literal(shop.timezone or "UTC", String))
    for _ in range(max(1, defaults.FLOW_STEPS_PER_PASS)):
        # The runs of the batch due in this round; then their exits (only theirs, only flows that have exits).
        standing = session.execute(
            select(FlowRun.id, FlowRun.flow_id, FlowRun.version, FlowRun.current_step_id, zone_name)
            .join(Subscriber, Subscriber.id == FlowRun.subscriber_id)
            .where(FlowRun.id.in_(ids), FlowRun.state == RunState.ACTIVE, FlowRun.due_at <= now)).all()
        if not standing:
            break
        exited: set[int] = set()
        for flow_id in sorted({row[1] for row in standing}):
            flow = flows[flow_id]
            if flow.exit_conditions:
                due_ids = [row[0] for row in standing if row[1] == flow_id]
                exited.update(_apply_exits(session, flow, [runs.c.id.in_(due_ids)], now))
        result.exited += len(exited)
        standing = [row for row in standing if row[0] not in exited]
        at_step: dict[tuple[int, int, int | None], list[tuple[int, str]]] = defaultdict(list)
        for run_id, flow_id, version, step_id, zone in standing:
            at_step[(flow_id, version, step_id)].append((run_id, zone))
        for (flow_id, version, step_id), group in sorted(at_step.items(), key=lambda item: str(item[0])):
            steps = steps_cache.get((flow_id, version))
            if steps is None:
                steps = steps_cache[(flow_id, version)] = load_steps(session, flow_id, version)
            _run_step(session, shop, steps, step_id, group, now, result)
    return result


def _run_step(session: OrmSession, shop: Shop, steps: Steps, step_id: int | None, group: list[tuple[int, str]],
              now: dt.datetime, result: Pass) -> None:
    """Execute one step for the runs standing at it (all due)."""
    step = steps.by_id.get(step_id) if step_id is not None else None
    run_ids = [run_id for run_id, _ in group]
    if step is None or step.kind == "end":
        result.completed += _move(session, run_ids, step_id, None, now, now)
        return
    if step.kind == "wait":
        by_due: dict[dt.datetime, list[int]] = defaultdict(list)
        for run_id, zone in group:
            by_due[wait_end(step, now, quiet_hours.zone_for(zone, shop.timezone))].append(run_id)
        for due, ids in by_due.items():
            _move(session, ids, step_id, steps.after.get(step_id), due, now)
        return
    if step.kind == "condition":
        yes = _matching(session, shop, step.condition or {}, run_ids, now)
        _move(session, [r for r in run_ids if r in yes], step_id, steps.yes.get(step_id), now, now)
        _move(session, [r for r in run_ids if r not in yes], step_id, steps.no.get(step_id), now, now)
        return
    if step.kind == "send":
        ready, later = [], defaultdict(list)
        for run_id, zone in group:
            when = quiet_hours.defer(shop, now, quiet_hours.zone_for(zone, shop.timezone))
            (ready.append(run_id) if when <= now else later[when].append(run_id))
        for when, ids in later.items():  # quiet hours: the run stays at its send step, due when they end
            _move(session, ids, step_id, step_id, when, now)
        ready = _hold_us(session, shop, step_id, ready, now, result)
        if ready and step.campaign_id is not None:
            pending = _insert_messages(session, shop, step.campaign_id, ready, now)
            result.sent += len(pending)
            result.campaigns.add(step.campaign_id)
            codes, held = give_and_hold_codes(session, shop, step.campaign_id, [Message.id.in_(pending)])
            if held:
                result.held.append((step.campaign_id, codes, held))
        if ready:
            _move(session, ready, step_id, steps.after.get(step_id), now, now)
        return
    raise ValueError(f"flow step {step.id} has an unknown kind {step.kind!r}")


def _hold_us(session: OrmSession, shop: Shop, step_id: int, ready: list[int], now: dt.datetime,
             result: Pass) -> list[int]:
    """The runs of `ready` that may have their text now: while the shop's texts to US numbers are held
    (kinnekt.sms.registration.us_block_reason), runs of US recipients stay at the send step, due again
    FLOW_US_HOLD_SECONDS later (never dropped; the exits are checked again then)."""
    if not ready:
        return ready
    if result.us_blocked is None:
        result.us_blocked = registration.us_block_reason(session, shop.id) is not None
    if not result.us_blocked:
        return ready
    us = set(session.scalars(select(FlowRun.id).join(Subscriber, Subscriber.id == FlowRun.subscriber_id)
                             .where(FlowRun.id.in_(ready),
                                    gate_country(Subscriber.country, Subscriber.phone) == "US")))
    if us:
        _move(session, sorted(us), step_id, step_id, now + dt.timedelta(seconds=defaults.FLOW_US_HOLD_SECONDS), now)
        result.us_held += len(us)
    return [run_id for run_id in ready if run_id not in us]


def _move(session: OrmSession, run_ids: list[int], from_step: int | None, to_step: int | None, due: dt.datetime,
          now: dt.datetime) -> int:
    """Move these runs, if still active at `from_step`, to `to_step` due at `due` (None: completed)."""
    if not run_ids:
        return 0
    runs = FlowRun.__table__
    at = runs.c.current_step_id.is_(None) if from_step is None else runs.c.current_step_id == from_step
    values = (dict(state=RunState.COMPLETED, finished_at=now, due_at=None) if to_step is None
              else dict(current_step_id=to_step, due_at=due))
    return session.execute(update(runs).where(runs.c.id.in_(run_ids), runs.c.state == RunState.ACTIVE, at)
                           .values(**values)).rowcount or 0


def wait_end(step: FlowStep, now: dt.datetime, zone) -> dt.datetime:
    """When a wait step begun at `now` is over: after its duration, or at the next instant the recipient's clock
    (`zone`) shows `wait_until_minute` (on a day the clocks change, as kinnekt/campaigns/quiet_hours resolves it)."""
    if step.wait_until_minute is None:
        return now + dt.timedelta(seconds=max(0, int(step.wait_seconds or 0)))
    minute = int(step.wait_until_minute) % 1440
    day = now.astimezone(zone).date()
    for offset in range(3):
        when = quiet_hours.local_instant(day + dt.timedelta(days=offset), minute, zone)
        if when > now:
            return when
    return now  # pragma: no cover - a wall-clock time recurs every day


def _matching(session: OrmSession, shop: Shop, definition: dict, run_ids: list[int], now: dt.datetime) -> set[int]:
    """The runs (of `run_ids`) whose subscriber matches the segment definition at `now`."""
    members = compiler.compile_definition(definition, shop=shop, now=now, session=session,
                                          shape=compiler.PROBE).subquery()
    return set(session.scalars(select(FlowRun.id).where(FlowRun.id.in_(run_ids),
                                                        FlowRun.subscriber_id.in_(select(members.c.id)))))


def _insert_messages(session: OrmSession, shop: Shop, campaign_id: int, run_ids: list[int],
                     now: dt.datetime) -> list[int]:
    """One message row per run, INSERT ... SELECT ... ON CONFLICT DO NOTHING on (campaign, subscriber, occurrence
    = run id), pending and due now (or skipped with the campaigns' reason); returns the ids of the pending rows
    inserted."""
    reason = fire_skip_reason(shop)
    source = (select(literal(shop.id, IdType), literal(campaign_id, IdType), FlowRun.subscriber_id, literal("flow"),
                     FlowRun.id, Subscriber.phone,
                     case((reason.is_(None), literal(MessageStatus.PENDING)), else_=literal(MessageStatus.SKIPPED)),
                     reason, case((reason.is_(None), literal(now, UTCDateTime)), else_=null()),
                     literal(0), literal(now, UTCDateTime), literal(now, UTCDateTime))
              .join(Subscriber, Subscriber.id == FlowRun.subscriber_id)
              .where(FlowRun.id.in_(run_ids)))
    dialect = postgresql if on_postgresql(session) else sqlite
    statement = (dialect.insert(Message.__table__)
                 .from_select(["shop_id", "campaign_id", "subscriber_id", "kind", "occurrence", "to_phone", "status",
                               "skip_reason", "due_at", "attempts", "created_at", "updated_at"], source)
                 .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id", "occurrence"])
                 .returning(Message.__table__.c.id, Message.__table__.c.status))
    return [message_id for message_id, status in session.execute(statement) if status == MessageStatus.PENDING]


# ---------------------------------------------------------------------------------------------- shops and requests

def shops_with_flows_on(session: OrmSession) -> list[int]:
    """Ids of the installed shops with at least one flow switched on."""
    shop_ids = list(session.scalars(
        select(Flow.shop_id).distinct().join(Shop, Shop.id == Flow.shop_id)
        .where(Flow.status == FlowStatus.ON, Shop.uninstalled_at.is_(None), Shop.installed_at.is_not(None))
        .order_by(Flow.shop_id).execution_options(all_shops=True)))
    session.commit()
    return shop_ids


def has_due_runs(session: OrmSession, shop_id: int, *, now: dt.datetime | None = None) -> bool:
    """True when a run of a flow of the shop that is on is due."""
    now = aware_utc(now)
    found = session.scalar(select(exists().where(
        FlowRun.shop_id == shop_id, FlowRun.state == RunState.ACTIVE, FlowRun.due_at <= now,
        Flow.id == FlowRun.flow_id, Flow.status == FlowStatus.ON)))
    session.commit()
    return bool(found)


def next_due(session: OrmSession, shop_id: int) -> dt.datetime | None:
    """When the shop's next active run is due (flows that are on), or None."""
    when = session.scalar(select(func.min(FlowRun.due_at)).join(Flow, Flow.id == FlowRun.flow_id).where(
        FlowRun.shop_id == shop_id, FlowRun.state == RunState.ACTIVE, Flow.status == FlowStatus.ON))
    session.commit()
    return when


_flows_on: shared_cache.SharedCache[bool] = shared_cache.SharedCache("flow-status")


def any_flow_on(session: OrmSession, shop_id: int) -> bool:
    """Whether a flow of the shop is on, remembered per process while no flow of the shop is added, switched or
    removed in any process (kinnekt.shared_cache): every re-check and every batch of storefront events with
    subscribers asks, and the query took a connection of its own each time."""
    return _flows_on.get(shop_id, lambda: read_any_flow_on(session, shop_id))


def read_any_flow_on(session: OrmSession, shop_id: int) -> bool:
    """Whether a flow of the shop is on, read from the database (on a connection of its own: the caller's
    transaction stays as it is)."""
    with session.get_bind().connect() as conn:
        return bool(conn.scalar(select(exists().where(Flow.shop_id == shop_id, Flow.status == FlowStatus.ON))))


def request_entries(session: OrmSession, shop_id: int) -> bool:
    """Queue the shop's flows job when a flow of the shop is on (call after commit); True when queued."""
    on = any_flow_on(session, shop_id)
    if on:
        tasks.enqueue_run_flows(shop_id)
    return bool(on)


@signals.subscribers_rechecked.connect
def _enter_after_recheck(session: OrmSession, *, shop_id: int, subscriber_ids: Iterable[int] = ()) -> bool:
    """Receiver of kinnekt.signals.subscribers_rechecked: data of these subscribers changed (an order, a checkout,
    consent) and their segments are up to date: the shop's flows may have entries, and these subscribers' waiting
    runs exits (their ids pile up for the shop's exits job, `tasks.exit_flows`)."""
    queued = request_entries(session, shop_id)
    ids = sorted({int(i) for i in subscriber_ids if i is not None})
    if queued and ids:
        tasks.enqueue_exit_flows(shop_id, ids)
    return queued


@signals.storefront_activity.connect
def _enter_after_browsing(session: OrmSession, *, shop_id: int, subscriber_ids: Iterable[int] = ()) -> bool:
    """Receiver of kinnekt.signals.storefront_activity: storefront events of these subscribers were stored or
    attributed: the shop's browsing flows may have entries, and these subscribers' waiting runs exits (a cart, a
    checkout started)."""
    return _enter_after_recheck(session, shop_id=shop_id, subscriber_ids=subscriber_ids)


@signals.segment_members_changed.connect
def _enter_after_segment_change(session: OrmSession, *, segment_ids: Iterable[int]) -> int:
    """Receiver of kinnekt.signals.segment_members_changed: flows on these segments may have entries."""
    ids = sorted({int(i) for i in segment_ids})
    if not ids:
        return 0
    with session.get_bind().connect() as conn:
        shop_ids = conn.scalars(select(Flow.shop_id).distinct().where(
            Flow.status == FlowStatus.ON, Flow.segment_id.in_(ids))).all()
    for shop_id in shop_ids:
        tasks.enqueue_run_flows(shop_id)
    return len(shop_ids)

