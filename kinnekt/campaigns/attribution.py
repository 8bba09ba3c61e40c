"""Crediting orders to campaigns: by the campaign's discount code, else by the customer's last click.

Rules (one Attribution row per order at most; recomputing gives the same rows):
- Only counted orders are credited (not test, not cancelled: segment-rules.md "Which orders count"); an order
  that is cancelled or deleted loses its attribution.
- Discount code first: a code on the order equal (case-insensitively, as Shopify treats codes) to a recipient's
  unique code credits that message's campaign and subscriber; else equal to a campaign's shared code credits
  the latest such campaign started before the order. A code is explicit proof, so no window applies.
- Else the last click before the order, within the shop's `attribution_window_days`, by one of the order's
  subscribers (linked to its customer, or with its phone), or on the short link named by the order's landing
  site (`?kn=<code>`, which also credits guest checkouts). Only clicks in the same shop are considered.
- Revenue is the order's current total (`current_total_price`: net of refunds and edits, as customer facts
  use it), else its total price; a later refund webhook updates it.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from kinnekt import defaults, signals
from kinnekt.campaigns import links
from kinnekt.db import utcnow
from kinnekt.models import Attribution, Campaign, Click, Link, Message, Order, Shop, Subscriber

SQL_IN_CHUNK = 500


@dataclass(frozen=True)
class Credit:
    """What an order is credited to (before it is written as an Attribution)."""

    campaign_id: int
    subscriber_id: int | None
    method: str  # discount_code | click


def attribute_order(session, order: Order) -> Attribution | None:
    """(Re)attribute one order and flush; returns its Attribution, or None when no campaign earned it."""
    shop = session.get(Shop, order.shop_id)
    attribute_orders(session, shop, [order.id], commit=False)
    return session.scalar(select(Attribution).where(Attribution.order_id == order.id)
                          .execution_options(all_shops=True))


def attribute_orders(session, shop: Shop, order_ids, *, commit: bool = True) -> int:
    """(Re)attribute these orders of the shop, in batches; returns how many are credited. Commits by default.

    Cheap when the shop has never started a campaign (one query), so order ingestion may call it for every batch.
    """
    ids = sorted({int(i) for i in order_ids})
    if not ids:
        return 0
    if not _has_campaigns(session, shop.id):  # nothing to credit, and no attribution can exist without one
        return 0
    credited = 0
    for start in range(0, len(ids), defaults.ATTRIBUTION_BATCH_SIZE):
        batch = ids[start:start + defaults.ATTRIBUTION_BATCH_SIZE]
        for attempt in (1, 2):
            try:
                credited += _attribute_batch(session, shop, batch)
                if commit:
                    session.commit()
                else:
                    session.flush()
                break
            except IntegrityError:  # a concurrent job credited one of these orders first: redo over its row
                session.rollback()
                if attempt == 2:
                    raise
    return credited


def code_credited_subscribers(session, shop_id: int, order_ids) -> list[int]:
    """The subscribers these orders are credited to by a discount code (their `used_discount` events)."""
    ids = sorted({int(i) for i in order_ids})
    found: set[int] = set()
    for chunk in _chunks(ids):
        found.update(session.scalars(
            select(Attribution.subscriber_id)
            .where(Attribution.shop_id == shop_id, Attribution.order_id.in_(chunk),
                   Attribution.method == "discount_code", Attribution.subscriber_id.is_not(None))
            .execution_options(all_shops=True)))
    return sorted(found)


@signals.orders_written.connect
def credit_written_orders(session, *, shop: Shop, order_ids) -> list[int]:
    """Receiver of kinnekt.signals.orders_written (sent by kinnekt.shopify.ingest.orders): (re)attribute the orders;
    returns the subscribers a discount code credits them to before and after (their `used_discount` may change),
    which need not be the orders' own."""
    credited = code_credited_subscribers(session, shop.id, order_ids)
    attribute_orders(session, shop, order_ids)
    return credited + code_credited_subscribers(session, shop.id, order_ids)


def recompute(session, shop: Shop) -> int:
    """Re-attribute every order placed since the shop's first campaign started (after a window change); commits.

    Orders before any campaign cannot be credited and are skipped; the rest go in batches of
    ATTRIBUTION_BATCH_SIZE, each costing a fixed number of queries. Returns how many orders are credited.
    """
    first = session.scalar(select(func.min(Campaign.started_at)).where(Campaign.shop_id == shop.id)
                           .execution_options(all_shops=True))
    if first is None:
        session.execute(delete(Attribution).where(Attribution.shop_id == shop.id)
                        .execution_options(synchronize_session=False, all_shops=True))
        session.commit()
        return 0
    # Attributions of orders before the first campaign cannot stand (none should exist; clear any).
    stale = select(Order.id).where(Order.shop_id == shop.id, Order.created_at < first)
    session.execute(delete(Attribution).where(Attribution.shop_id == shop.id, Attribution.order_id.in_(stale))
                    .execution_options(synchronize_session=False, all_shops=True))
    order_ids = session.scalars(select(Order.id).where(Order.shop_id == shop.id, Order.created_at >= first)
                                .order_by(Order.id).execution_options(all_shops=True)).all()
    credited = attribute_orders(session, shop, order_ids)
    session.commit()
    return credited


def _has_campaigns(session, shop_id: int) -> bool:
    return session.scalar(select(Campaign.id).where(Campaign.shop_id == shop_id, Campaign.started_at.is_not(None))
                          .limit(1).execution_options(all_shops=True)) is not None


def _attribute_batch(session, shop: Shop, order_ids: list[int]) -> int:
    orders = session.scalars(select(Order).where(Order.shop_id == shop.id, Order.id.in_(order_ids))
                             .execution_options(all_shops=True)).all()
    counted = [o for o in orders if o.counted]
    credits = _by_code(session, shop, counted)
    rest = [o for o in counted if o.id not in credits]
    credits.update(_by_click(session, shop, rest))
    existing = {a.order_id: a for a in session.scalars(
        select(Attribution).where(Attribution.shop_id == shop.id, Attribution.order_id.in_(order_ids))
        .execution_options(all_shops=True))}
    now = utcnow()
    by_id = {o.id: o for o in orders}
    for order_id in order_ids:
        credit, row = credits.get(order_id), existing.get(order_id)
        if credit is None:
            if row is not None:
                session.delete(row)
            continue
        revenue = by_id[order_id].revenue
        if row is None:
            session.add(Attribution(shop_id=shop.id, order_id=order_id, campaign_id=credit.campaign_id,
                                    subscriber_id=credit.subscriber_id, method=credit.method, revenue=revenue,
                                    attributed_at=now))
        elif (row.campaign_id, row.subscriber_id, row.method, row.revenue) != (
                credit.campaign_id, credit.subscriber_id, credit.method, revenue):
            row.campaign_id, row.subscriber_id, row.method, row.revenue = (
                credit.campaign_id, credit.subscriber_id, credit.method, revenue)
            row.attributed_at = now
    session.flush()
    return len(credits)


def order_codes(order: Order) -> list[str]:
    """The discount codes an order used, lower-cased, in order."""
    codes = []
    for entry in order.discount_codes or []:
        code = entry.get("code") if isinstance(entry, dict) else entry
        if isinstance(code, str) and code.strip():
            codes.append(code.strip().lower())
    return codes


def _by_code(session, shop: Shop, orders: list[Order]) -> dict[int, Credit]:
    wanted = {code for order in orders for code in order_codes(order)}
    if not wanted:
        return {}
    unique: dict[str, tuple[int, int | None]] = {}
    shared: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for chunk in _chunks(sorted(wanted)):
        rows = session.execute(
            select(func.lower(Message.discount_code), Message.campaign_id, Message.subscriber_id)
            .join(Campaign, Campaign.id == Message.campaign_id)
            .where(Message.shop_id == shop.id, Campaign.shop_id == shop.id, Campaign.discount_mode == "unique",
                   func.lower(Message.discount_code).in_(chunk))
            .execution_options(all_shops=True))
        for code, campaign_id, subscriber_id in rows:
            unique.setdefault(code, (campaign_id, subscriber_id))
        rows = session.execute(
            select(func.lower(Campaign.discount_code), Campaign.started_at, Campaign.id)
            .where(Campaign.shop_id == shop.id, Campaign.discount_mode == "shared",
                   Campaign.started_at.is_not(None), func.lower(Campaign.discount_code).in_(chunk))
            .execution_options(all_shops=True))
        for code, started_at, campaign_id in rows:
            shared[code].append((started_at, campaign_id))
    credits: dict[int, Credit] = {}
    shared_hits: dict[int, int] = {}
    for order in orders:
        for code in order_codes(order):
            if code in unique:
                campaign_id, subscriber_id = unique[code]
                credits[order.id] = Credit(campaign_id, subscriber_id, "discount_code")
                break
            started = [c for c in shared.get(code, ()) if c[0] <= order.created_at]
            if started:
                shared_hits[order.id] = max(started)[1]
                break
    if shared_hits:
        recipients = _recipients(session, shop, [o for o in orders if o.id in shared_hits], shared_hits)
        for order_id, campaign_id in shared_hits.items():
            credits[order_id] = Credit(campaign_id, recipients.get(order_id), "discount_code")
    return credits


def _recipients(session, shop: Shop, orders: list[Order], campaign_of: dict[int, int]) -> dict[int, int]:
    """For orders credited by a shared code: the order's subscriber who got that campaign, when there is one."""
    subscribers = _subscribers_of(session, shop, orders)
    wanted = {s for subs in subscribers.values() for s in subs}
    got: set[tuple[int, int]] = set()
    for chunk in _chunks(sorted(wanted)):
        got.update(session.execute(
            select(Message.campaign_id, Message.subscriber_id)
            .where(Message.shop_id == shop.id, Message.subscriber_id.in_(chunk),
                   Message.campaign_id.in_(set(campaign_of.values())))
            .execution_options(all_shops=True)).tuples().all())
    found = {}
    for order in orders:
        for subscriber_id in sorted(subscribers.get(order.id, ())):
            if (campaign_of[order.id], subscriber_id) in got:
                found[order.id] = subscriber_id
                break
    return found


def _subscribers_of(session, shop: Shop, orders: list[Order]) -> dict[int, set[int]]:
    """Each order's subscribers in this shop: linked to its customer, or with its phone number."""
    customers = {o.customer_id for o in orders if o.customer_id is not None}
    phones = {o.phone for o in orders if o.phone}
    by_customer: dict[int, set[int]] = defaultdict(set)
    by_phone: dict[str, set[int]] = defaultdict(set)
    for chunk in _chunks(sorted(customers)):
        for sub_id, customer_id in session.execute(
                select(Subscriber.id, Subscriber.customer_id)
                .where(Subscriber.shop_id == shop.id, Subscriber.customer_id.in_(chunk))
                .execution_options(all_shops=True)):
            by_customer[customer_id].add(sub_id)
    for chunk in _chunks(sorted(phones)):
        for sub_id, phone in session.execute(
                select(Subscriber.id, Subscriber.phone)
                .where(Subscriber.shop_id == shop.id, Subscriber.phone.in_(chunk))
                .execution_options(all_shops=True)):
            by_phone[phone].add(sub_id)
    result = {}
    for order in orders:
        subs = set(by_customer.get(order.customer_id, ())) if order.customer_id is not None else set()
        if order.phone:
            subs |= by_phone.get(order.phone, set())
        result[order.id] = subs
    return result


def _by_click(session, shop: Shop, orders: list[Order]) -> dict[int, Credit]:
    if not orders:
        return {}
    window = dt.timedelta(days=max(0, shop.attribution_window_days or 0))
    subscribers = _subscribers_of(session, shop, orders)
    refs = {o.id: links.ref_code(o.landing_site) for o in orders}
    ref_links: dict[str, int] = {}
    for chunk in _chunks(sorted({code for code in refs.values() if code})):
        ref_links.update(session.execute(
            select(Link.code, Link.id).where(Link.shop_id == shop.id, Link.code.in_(chunk))
            .execution_options(all_shops=True)).tuples().all())
    wanted_subs = sorted({s for subs in subscribers.values() for s in subs})
    wanted_links = sorted(set(ref_links.values()))
    if not wanted_subs and not wanted_links:
        return {}
    earliest = min(o.created_at for o in orders) - window
    latest = max(o.created_at for o in orders)
    base = (select(Click.at, Click.id, Click.campaign_id, Click.subscriber_id, Click.link_id)
            .where(Click.shop_id == shop.id, Click.campaign_id.is_not(None), Click.at >= earliest,
                   Click.at <= latest)
            .execution_options(all_shops=True))
    by_subscriber: dict[int, list[tuple]] = defaultdict(list)
    by_link: dict[int, list[tuple]] = defaultdict(list)
    for chunk in _chunks(wanted_subs):
        for at, click_id, campaign_id, subscriber_id, _link_id in session.execute(
                base.where(Click.subscriber_id.in_(chunk))):
            by_subscriber[subscriber_id].append((at, click_id, campaign_id, subscriber_id))
    for chunk in _chunks(wanted_links):
        for at, click_id, campaign_id, subscriber_id, link_id in session.execute(base.where(Click.link_id.in_(chunk))):
            by_link[link_id].append((at, click_id, campaign_id, subscriber_id))
    credits = {}
    for order in orders:
        since = order.created_at - window
        candidates = [click for sub in subscribers.get(order.id, ()) for click in by_subscriber.get(sub, ())]
        link_id = ref_links.get(refs.get(order.id) or "")
        if link_id is not None:
            candidates += by_link.get(link_id, [])
        inside = [click for click in candidates if since <= click[0] <= order.created_at]
        if inside:
            _at, _id, campaign_id, subscriber_id = max(inside)  # last click wins (ties: the later row)
            credits[order.id] = Credit(campaign_id, subscriber_id, "click")
    return credits


def _chunks(values):
    values = list(values)
    for start in range(0, len(values), SQL_IN_CHUNK):
        yield values[start:start + SQL_IN_CHUNK]

