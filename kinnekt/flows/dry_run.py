"""The dry run of a flow: "if this subscriber entered now, they would get …", step by step, sending nothing and
saving nothing.

`simulate` walks the flow's current version for one subscriber from now, as `engine.advance` would run it: a wait
ends when `engine.wait_end` says (on the subscriber's clock), a message inside quiet hours is deferred to their end
(`quiet_hours.defer`), a condition is the segment compiler's answer for the subscriber with their data as it is
now (the data may change while they wait), and a message is rendered for them (`composer.render`) with the
trigger's tags from their latest occurrence (their last viewed product, open checkout, last order) or, when they
have none, the editor's samples; its encoding, parts and cost as the composer counts them. Whether they would
enter at all (subscribed, already in the flow, the cool-down) is said first. Only SELECTs are issued.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.campaigns import composer, quiet_hours, trigger_tags
from kinnekt.db import aware_utc
from kinnekt.flows import engine
from kinnekt.models import Campaign, Checkout, Flow, FlowRun, LineItem, Order, Product, Shop, Subscriber
from kinnekt.models.flow import RunState
from kinnekt.models.storefront import StorefrontEvent
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.segments import compiler
from kinnekt.sms import encoding

SEARCH_LIMIT = 8
"""Subscribers the dry run's search offers at most."""


@dataclass
class Outcome:
    """One step as the subscriber would meet it: what happens, when (UTC and on their clock), and for a message
    its text and analysis."""

    kind: str
    depth: int
    summary: str
    at: dt.datetime
    local: str
    branch: str | None = None
    text: str | None = None
    facts: dict = field(default_factory=dict)


@dataclass
class DryRun:
    """The whole dry run: the subscriber, whether they would enter now (and why not), the steps, the tags used."""

    subscriber: Subscriber
    zone: str
    enters: bool
    why_not: str | None
    outcomes: list[Outcome]
    tags_from: str


def search(session: OrmSession, shop: Shop, query: str) -> list[Subscriber]:
    """Up to SEARCH_LIMIT of the shop's subscribers whose phone holds the query's digits or whose name starts with
    it (case-insensitive); none for a query of fewer than 2 characters."""
    query = (query or "").strip()[:64]
    if len(query) < 2:
        return []
    digits = "".join(ch for ch in query if ch.isdigit())
    escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    matches = [func.lower(Subscriber.first_name).like(escaped + "%", escape="\\"),
               func.lower(Subscriber.last_name).like(escaped + "%", escape="\\")]
    if len(digits) >= 3 and len(digits) == len(query.replace("+", "").replace(" ", "").replace("-", "")):
        matches.append(Subscriber.phone.like(f"%{digits}%"))
    return list(session.scalars(select(Subscriber).where(Subscriber.shop_id == shop.id, or_(*matches))
                                .order_by(Subscriber.first_name, Subscriber.id).limit(SEARCH_LIMIT)))


def _entry_check(session: OrmSession, flow: Flow, subscriber: Subscriber, now: dt.datetime) -> str | None:
    """Why the subscriber would not enter the flow now, or None."""
    if subscriber.status != SubscriberStatus.SUBSCRIBED or subscriber.suppressed_at is not None:
        return "They are not subscribed, so they would not enter."
    if session.scalar(select(exists().where(FlowRun.flow_id == flow.id, FlowRun.subscriber_id == subscriber.id,
                                            FlowRun.state == RunState.ACTIVE))):
        return "They are in this flow now, so they would not enter again until that run ends."
    cooldown = dt.timedelta(seconds=max(0, int(flow.reentry_cooldown_seconds or 0)))
    if cooldown and session.scalar(select(exists().where(FlowRun.flow_id == flow.id,
                                                         FlowRun.subscriber_id == subscriber.id,
                                                         FlowRun.started_at > now - cooldown))):
        return "They entered this flow within its cool-down, so they would not enter yet."
    return None


def _trigger_values(session: OrmSession, shop: Shop, flow: Flow, subscriber: Subscriber) -> tuple[dict, str]:
    """The trigger tags from the subscriber's latest occurrence of the flow's trigger, else the samples; and where
    they came from, in words."""
    values: dict[str, str] = {}
    if flow.trigger in engine.BROWSING_EVENTS:
        name = engine.BROWSING_EVENTS[flow.trigger][0]
        title = session.scalar(
            select(Product.title).join(StorefrontEvent, and_(StorefrontEvent.shop_id == Product.shop_id,
                                                             StorefrontEvent.product_id == Product.shopify_id))
            .where(Product.shop_id == shop.id, StorefrontEvent.subscriber_id == subscriber.id,
                   StorefrontEvent.name == name)
            .order_by(StorefrontEvent.occurred_at.desc(), StorefrontEvent.id.desc()).limit(1))
        if title:
            values["product_title"] = title
    elif flow.trigger == "checkout_started":
        buyer = (Checkout.customer_id == subscriber.customer_id) if subscriber.customer_id else (
            Checkout.phone == subscriber.phone)
        url = session.scalar(select(Checkout.recovery_url).where(
            Checkout.shop_id == shop.id, buyer, Checkout.completed_at.is_(None), Checkout.recovery_url.is_not(None))
            .order_by(Checkout.started_at.desc(), Checkout.id.desc()).limit(1))
        if url:
            values["checkout_url"] = url
    elif flow.trigger in ("order_placed", "order_fulfilled") and subscriber.customer_id:
        order = session.execute(select(Order.id, Order.name).where(
            Order.shop_id == shop.id, Order.customer_id == subscriber.customer_id, Order.cancelled_at.is_(None))
            .order_by(Order.created_at.desc(), Order.id.desc()).limit(1)).first()
        if order:
            values["order_name"] = order.name or ""
            values["product_title"] = session.scalar(select(LineItem.title).where(
                LineItem.order_id == order.id).order_by(LineItem.id).limit(1)) or ""
    if values:
        return values, "their latest " + {"product_viewed": "viewed product", "added_to_cart": "cart addition",
                                          "checkout_started": "open checkout"}.get(flow.trigger, "order")
    return dict(trigger_tags.SAMPLES), "samples (they have no occurrence of this trigger yet)"


def _local(when: dt.datetime, zone) -> str:
    return when.astimezone(zone).strftime("%a %d %b %Y, %H:%M")


def _wait_words(step) -> str:
    if step.wait_until_minute is not None:
        return f"Waits until {step.wait_until_minute // 60:02d}:{step.wait_until_minute % 60:02d} on their clock"
    seconds = int(step.wait_seconds or 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"Waits {count} {unit}{'s' if count != 1 else ''}"
    return f"Waits {seconds} seconds"


def _message(shop: Shop, campaign: Campaign, subscriber: Subscriber, values: dict, first: bool) -> tuple[str, dict]:
    """The text the subscriber would get from this campaign, and its encoding, parts and cost."""
    mode = campaign.discount_mode or "none"
    code = None
    if mode == "shared":
        code = campaign.discount_code
    elif mode == "unique":
        code = f"{campaign.discount_code}-{composer.SAMPLE_UNIQUE_CODE}" if campaign.discount_code \
            else composer.SAMPLE_UNIQUE_CODE
    text = composer.render(campaign.body, shop=shop, subscriber=subscriber, discount_code=code, first_message=first,
                           extra=values)
    counted = text
    length = composer.short_url_length()
    for url in sorted(set(composer.find_urls(text)), key=len, reverse=True):  # sent as short tracked links
        counted = counted.replace(url, "x" * length)
    info = encoding.analyze(counted)
    price = composer.price_per_segment(shop)
    return text, {"encoding": "Unicode (UCS-2)" if info.encoding == "ucs2" else "GSM-7", "parts": info.segments,
                  "characters": info.units, "cost": price * info.segments if price is not None else Decimal(0),
                  "unique_code": mode == "unique", "links": len(composer.find_urls(text))}


def _matches(session: OrmSession, shop: Shop, definition: dict, subscriber: Subscriber, now: dt.datetime) -> bool:
    members = compiler.compile_definition(definition or {}, shop=shop, now=now, session=session,
                                          shape=compiler.PROBE).subquery()
    return bool(session.scalar(select(exists().where(members.c.id == subscriber.id))))


def simulate(session: OrmSession, shop: Shop, flow: Flow, subscriber: Subscriber, *,
             now: dt.datetime | None = None) -> DryRun:
    """What `subscriber` would get if they entered `flow` (its current version) at `now`; reads only."""
    now = aware_utc(now)
    zone = quiet_hours.zone_for(subscriber.timezone, shop.timezone)
    steps = engine.load_steps(session, flow.id, flow.version)
    depths: dict[int, int] = {}
    for step in sorted(steps.by_id.values(), key=lambda s: s.id):  # a condition is written before its branches
        depths[step.id] = depths.get(step.parent_id, -1) + 1 if step.parent_id is not None else 0
    values, tags_from = _trigger_values(session, shop, flow, subscriber)
    campaigns = {c.id: c for c in session.scalars(select(Campaign).where(
        Campaign.id.in_([s.campaign_id for s in steps.by_id.values() if s.campaign_id])))}
    first = (subscriber.sent_count or 0) == 0
    outcomes: list[Outcome] = []
    at, step_id = now, steps.first
    for _ in range(len(steps.by_id) + 1):  # every step at most once: a run never goes back
        step = steps.by_id.get(step_id) if step_id is not None else None
        if step is None:
            break
        depth = depths.get(step.id, 0)
        if step.kind == "wait":
            at = engine.wait_end(step, at, zone)
            outcomes.append(Outcome("wait", depth, _wait_words(step), at, _local(at, zone), step.branch))
            step_id = steps.after.get(step.id)
        elif step.kind == "send":
            when = quiet_hours.defer(shop, at, zone)
            summary = "Gets a text"
            if when > at:
                summary = f"Gets a text, deferred by quiet hours from {_local(at, zone)}"
            at = when
            campaign = campaigns.get(step.campaign_id)
            text, facts = _message(shop, campaign, subscriber, values, first) if campaign else ("", {})
            first = False
            outcomes.append(Outcome("send", depth, summary, at, _local(at, zone), step.branch, text, facts))
            step_id = steps.after.get(step.id)
        elif step.kind == "condition":
            yes = _matches(session, shop, step.condition or {}, subscriber, now)
            outcomes.append(Outcome("condition", depth, "Condition: " + ("yes" if yes else "no")
                                    + " (with their data as it is now)", at, _local(at, zone), step.branch))
            step_id = steps.yes.get(step.id) if yes else steps.no.get(step.id)
        else:
            outcomes.append(Outcome("end", depth, "The flow ends", at, _local(at, zone), step.branch))
            break
    why_not = _entry_check(session, flow, subscriber, now)
    return DryRun(subscriber=subscriber, zone=getattr(zone, "key", str(zone)), enters=why_not is None,
                  why_not=why_not, outcomes=outcomes, tags_from=tags_from)
