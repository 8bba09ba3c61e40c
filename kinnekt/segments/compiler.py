"""The one segment compiler: a definition becomes a single SQLAlchemy SELECT of member subscriber ids.

Preview counts, rebuilds, exports, campaign audiences and the per-subscriber re-check all run the
`Select` built here, so there is no second evaluator to drift. Customer facts are column checks
through an outer join to `customers`; order-level rules and events are correlated subqueries, each
scoped by shop. Times are computed in Python from the injected `now` and bound as parameters, and
nothing is dialect-specific, so SQLite and PostgreSQL give the same answer.

Every predicate built here is two-valued (never SQL NULL), so that `neq`, `not_in` and a segment
rule's `not_in` can be plain negations: a missing value makes the positive form false and the
negative form true, as the contract says.
"""
from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Callable

from sqlalchemy import BigInteger, ColumnElement, Select, and_, cast, exists, false, func, not_, or_, select, true
from sqlalchemy import type_coerce
from sqlalchemy.orm import Session as OrmSession, object_session

from kinnekt.db import MONEY_SCALE, Session
from kinnekt.models import (Checkout, Click, CollectionProduct, Customer, CustomerTag, LineItem, Message, Order,
                            Segment, Shop, StaticListEntry, Subscriber, SubscriptionEvent)
from kinnekt.segments import periods
from kinnekt.segments.rules import UNPAID, Definition, DefinitionError, normalise

Predicate = ColumnElement[bool]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le, "gt": operator.gt,
    "gte": operator.ge,
}
"""Number operators; the same functions build SQL (on columns) and decide constants (on Python values)."""

ACCEPTED_MESSAGE_STATUSES = ("sent", "delivered")
"""Messages the SMS provider accepted: these are `received_sms` events."""


@dataclass(frozen=True)
class _Context:
    """What every builder needs: the shop, the evaluation instant, and the session for segment rules."""

    shop_id: int
    now: dt.datetime
    zone: dt.tzinfo
    session: OrmSession
    expanding: tuple[int, ...] = ()  # segment ids being expanded, to stop a loop of segment rules


# ---------------------------------------------------------------------------------------------- helpers

def _known(column, condition) -> Predicate:
    """`condition` on a nullable column, false (not NULL) where the column is NULL."""
    return and_(column.is_not(None), condition)


def _units(money: str | Decimal) -> int:
    """A normalised money value as the integer of 1/10000 units that `Money` columns store."""
    return int(Decimal(money) * MONEY_SCALE)


def _raw_money(column) -> ColumnElement[int]:
    """A `Money` column as its stored integer, so comparisons are exact integer ones on both databases."""
    return type_coerce(column, BigInteger)


def _number(expression, rule: dict, to_sql: Callable[[Any], Any] = lambda v: v) -> Predicate:
    """`expression op value`, or lo < expression < hi for `between`."""
    if rule["op"] == "between":
        lo, hi = rule["value"]
        return and_(expression > to_sql(lo), expression < to_sql(hi))
    return _COMPARE[rule["op"]](expression, to_sql(rule["value"]))


def _in_range(column, start: dt.datetime | None, end: dt.datetime | None, *, end_inclusive: bool = False
              ) -> Predicate:
    """The column is set and inside [start, end) (or [start, end]); None bounds are open."""
    conditions = [column.is_not(None)]
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column <= end if end_inclusive else column < end)
    return and_(*conditions)


def _negated_if(condition: Predicate, negative: bool) -> Predicate:
    return not_(condition) if negative else condition


# ---------------------------------------------------------------------------------------------- dates

DATE_COLUMNS = {
    "last_order_created": Customer.last_order_at,
    "first_order_created": Customer.first_order_at,
    "customer_created": Customer.shopify_created_at,
    "subscribed_at": Subscriber.subscribed_at,
    "last_received_sms": Subscriber.last_received_at,
    "last_clicked": Subscriber.last_clicked_at,
}


def _date_rule(column) -> Callable[[dict, _Context], Predicate]:
    """Builder for a date field (periods in the shop's zone; day counts as 24-hour steps back from now)."""
    def build(rule: dict, c: _Context) -> Predicate:
        op, value = rule["op"], rule.get("value")
        if op == "never":
            return column.is_(None)
        if op in ("eq", "neq"):
            start, end = periods.period_bounds(value, now=c.now, zone=c.zone)
            return _negated_if(_in_range(column, start, end), op == "neq")
        if op == "before":
            cutoff = periods.day_start(dt.date.fromisoformat(value), c.zone)
            return false() if cutoff is None else _known(column, column < cutoff)
        if op == "after":
            cutoff = periods.next_day_start(dt.date.fromisoformat(value), c.zone)
            return false() if cutoff is None else _known(column, column >= cutoff)
        cutoff = periods.days_ago(c.now, value)
        if op == "within_last_days":
            return column.is_not(None) if cutoff is None else _known(column, column >= cutoff)
        return false() if cutoff is None else _known(column, column < cutoff)  # more_than_days_ago
    return build


# ---------------------------------------------------------------------------------------------- numbers

ORDERS_COUNT = func.coalesce(Customer.orders_count, 0)
"""The linked customer's counted orders; 0 for an unlinked subscriber."""


def _money_fact(column) -> Callable[[dict, _Context], Predicate]:
    """Builder for a customer money fact; an unlinked subscriber's is 0."""
    def build(rule: dict, c: _Context) -> Predicate:
        return _number(func.coalesce(_raw_money(column), 0), rule, _units)
    return build


def _count_fact(expression) -> Callable[[dict, _Context], Predicate]:
    """Builder for a whole-number fact."""
    def build(rule: dict, c: _Context) -> Predicate:
        return _number(expression, rule)
    return build


def _average_money_spent(rule: dict, c: _Context) -> Predicate:
    """money_spent / orders_count compared without SQL division: spent op v × orders (0 with no orders)."""
    spent = func.coalesce(_raw_money(Customer.money_spent), 0)
    orders = cast(ORDERS_COUNT, BigInteger)  # BIGINT so v × orders cannot overflow a 32-bit integer

    def compare(op: str, value: str) -> Predicate:
        units = _units(value)
        with_orders = and_(orders > 0, _COMPARE[op](spent, orders * units))
        return or_(with_orders, orders <= 0) if _COMPARE[op](0, units) else with_orders

    if rule["op"] == "between":
        lo, hi = rule["value"]
        return and_(compare("gt", lo), compare("lt", hi))
    return compare(rule["op"], rule["value"])


# ---------------------------------------------------------------------------------------------- choices

def _subscription_source(rule: dict, c: _Context) -> Predicate:
    if rule["value"] == "all":
        return true() if rule["op"] == "eq" else false()
    return _negated_if(Subscriber.source == rule["value"], rule["op"] == "neq")


def _text_choice(column, fold) -> Callable[[dict, _Context], Predicate]:
    """Builder for eq/neq/in/not_in on a nullable text column, compared case-insensitively through `fold`."""
    def build(rule: dict, c: _Context) -> Predicate:
        value, op = rule["value"], rule["op"]
        condition = fold(column).in_(value) if op in ("in", "not_in") else fold(column) == value
        return _negated_if(_known(column, condition), op in ("neq", "not_in"))
    return build


def _tags(rule: dict, c: _Context) -> Predicate:
    has_tag = exists().where(CustomerTag.shop_id == c.shop_id, CustomerTag.customer_id == Subscriber.customer_id,
                             CustomerTag.tag == rule["value"])
    return _negated_if(has_tag, rule["op"] == "not_contains")


# ---------------------------------------------------------------------------------------------- orders

def _orders_of_subscriber(c: _Context, *, counted: bool) -> list[Predicate]:
    """The linked customer's orders in this shop: non-test ones, and also not cancelled when `counted`."""
    conditions = [Order.shop_id == c.shop_id, Order.customer_id == Subscriber.customer_id, Order.test.is_(False)]
    if counted:
        conditions.append(Order.cancelled_at.is_(None))
    return conditions


def _has_order(c: _Context, *conditions, counted: bool) -> Predicate:
    return exists().where(*_orders_of_subscriber(c, counted=counted), *conditions)


def _has_line_item(c: _Context, *conditions) -> Predicate:
    """Some counted order of the subscriber has a line item meeting `conditions`."""
    return exists(select(LineItem.id).join(Order, Order.id == LineItem.order_id).where(
        LineItem.shop_id == c.shop_id, *_orders_of_subscriber(c, counted=True), *conditions))


def _fulfillment_status(rule: dict, c: _Context) -> Predicate:
    found = _has_order(c, Order.fulfillment_status == rule["value"], counted=False)
    return _negated_if(found, rule["op"] == "neq")


def _payment_status(rule: dict, c: _Context) -> Predicate:
    statuses = UNPAID if rule["value"] == "unpaid" else (rule["value"],)
    found = _has_order(c, Order.financial_status.in_(statuses), counted=False)
    return _negated_if(found, rule["op"] == "neq")


def _order_cancelled(rule: dict, c: _Context) -> Predicate:
    return _negated_if(_has_order(c, Order.cancelled_at.is_not(None), counted=False), rule["value"] == "no")


def _ordered_product(rule: dict, c: _Context) -> Predicate:
    found = _has_line_item(c, LineItem.product_id.in_([int(v) for v in rule["value"]]))
    return _negated_if(found, rule["op"] == "neq")


def _ordered_collection(rule: dict, c: _Context) -> Predicate:
    in_collections = (select(CollectionProduct.product_id)
                      .where(CollectionProduct.shop_id == c.shop_id,
                             CollectionProduct.collection_id.in_([int(v) for v in rule["value"]])))
    found = _has_line_item(c, LineItem.product_id.in_(in_collections))
    return _negated_if(found, rule["op"] == "neq")


def _title(column):
    def condition(op: str, value: str) -> Predicate:
        lowered = func.lower(column)
        return lowered.contains(value, autoescape=True) if op == "contains" else lowered == value
    return condition


LINE_ITEM_CONDITIONS: dict[str, Callable[[str, Any], Predicate]] = {
    "product_id": lambda op, value: LineItem.product_id == int(value),
    "variant_id": lambda op, value: LineItem.variant_id == int(value),
    "product_title": _title(LineItem.title),
    "variant_title": _title(LineItem.variant_title),
    "quantity": lambda op, value: _COMPARE[op](LineItem.quantity, value),
    "price": lambda op, value: _COMPARE[op](_raw_money(LineItem.price), _units(value)),
}
"""line_items attribute -> the condition on one line item for a positive operator."""

_POSITIVE = {"neq": "eq", "not_contains": "contains"}


def _line_items(rule: dict, c: _Context) -> Predicate:
    """Some counted order has a line item satisfying the rule; `neq`/`not_contains`: no line item has the positive."""
    op = rule["op"]
    condition = LINE_ITEM_CONDITIONS[rule["attribute"]](_POSITIVE.get(op, op), rule["value"])
    return _negated_if(_has_line_item(c, condition), op in _POSITIVE)


# ---------------------------------------------------------------------------------------------- events

def _event_rows(event: str, c: _Context) -> tuple[Any, Any, list[Predicate]]:
    """(table, time column, conditions) of the rows that are one subscriber's events of a kind."""
    if event == "placed_order":
        return Order, Order.created_at, _orders_of_subscriber(c, counted=True)
    if event == "received_sms":
        return Message, Message.sent_at, [Message.shop_id == c.shop_id, Message.subscriber_id == Subscriber.id,
                                          Message.status.in_(ACCEPTED_MESSAGE_STATUSES)]
    if event == "clicked_link":
        return Click, Click.at, [Click.shop_id == c.shop_id, Click.subscriber_id == Subscriber.id]
    if event == "started_checkout":
        return Checkout, Checkout.started_at, [Checkout.shop_id == c.shop_id,
                                               Checkout.customer_id == Subscriber.customer_id,
                                               Checkout.completed_at.is_(None)]
    return SubscriptionEvent, SubscriptionEvent.at, [SubscriptionEvent.shop_id == c.shop_id,
                                                     SubscriptionEvent.subscriber_id == Subscriber.id,
                                                     SubscriptionEvent.kind == "subscribed"]


def _event(rule: dict, c: _Context) -> Predicate:
    """performed: at least `at_least` events inside `within`; not_performed: fewer."""
    table, at, conditions = _event_rows(rule["event"], c)
    start, end, end_inclusive = periods.window_bounds(rule["within"], now=c.now, zone=c.zone)
    if start is not None or end is not None:
        conditions = conditions + [_in_range(at, start, end, end_inclusive=end_inclusive)]
    if rule["at_least"] == 1:
        performed = exists().select_from(table).where(*conditions)
    else:
        performed = select(func.count()).select_from(table).where(*conditions).scalar_subquery() >= rule["at_least"]
    return _negated_if(performed, rule["op"] == "not_performed")


# ---------------------------------------------------------------------------------------------- membership

def _segment(rule: dict, c: _Context) -> Predicate:
    """Membership of another of the shop's segments: its definition evaluated here, with the same now."""
    target = rule["value"]
    if target in c.expanding:
        raise DefinitionError([{"path": "", "message": f"segment {target} refers to itself through segment rules"}])
    stored = c.session.scalar(select(Segment.definition).where(Segment.shop_id == c.shop_id, Segment.id == target))
    if stored is None:
        member = false()  # a deleted segment has no members
    else:
        try:
            definition = normalise(stored)
        except DefinitionError as exc:
            raise DefinitionError([{"path": f"segment {target}: {e['path']}", "message": e["message"]}
                                   for e in exc.errors]) from None
        member = _group(definition, replace(c, expanding=c.expanding + (target,)))
    return _negated_if(member, rule["op"] == "not_in")


def _list(rule: dict, c: _Context) -> Predicate:
    on_list = exists().where(StaticListEntry.shop_id == c.shop_id, StaticListEntry.list_id == rule["value"],
                             StaticListEntry.phone == Subscriber.phone)
    return _negated_if(on_list, rule["op"] == "not_in")


# ---------------------------------------------------------------------------------------------- the table

BUILDERS: dict[str, Callable[[dict, _Context], Predicate]] = {
    **{name: _date_rule(column) for name, column in DATE_COLUMNS.items()},
    "money_spent": _money_fact(Customer.money_spent),
    "total_discounts": _money_fact(Customer.total_discounts),
    "average_money_spent": _average_money_spent,
    "number_of_orders": _count_fact(ORDERS_COUNT),
    "sent_count": _count_fact(Subscriber.sent_count),
    "clicks_count": _count_fact(Subscriber.clicks_count),
    "subscription_source": _subscription_source,
    "keyword": _text_choice(Subscriber.keyword, func.upper),
    "country": _text_choice(Subscriber.country, func.upper),
    "carrier": _text_choice(Subscriber.carrier, func.lower),
    "city": _text_choice(Customer.city, func.lower),
    "tags": _tags,
    "fulfillment_status": _fulfillment_status,
    "payment_status": _payment_status,
    "order_cancelled": _order_cancelled,
    "ordered_product": _ordered_product,
    "ordered_collection": _ordered_collection,
    "line_items": _line_items,
    "event": _event,
    "segment": _segment,
    "list": _list,
}
"""Field -> SQL builder; the keys are exactly `rules.FIELDS` (a test holds them together)."""


def _group(group: dict, c: _Context) -> Predicate:
    parts = [_group(item, c) if "rules" in item else BUILDERS[item["field"]](item, c) for item in group["rules"]]
    return and_(*parts) if group["match"] == "all" else or_(*parts)


# ---------------------------------------------------------------------------------------------- public API

def compile_definition(definition: Definition, *, shop: Shop, now: dt.datetime,
                       session: OrmSession | None = None) -> Select:
    """The `Select` of the ids of the shop's subscribed, unsuppressed subscribers matching the definition.

    `now` is the aware UTC instant the definition is evaluated at; `session` (default: the shop's own,
    else the shared one) is only used to read the definitions that segment rules refer to.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    if session is None:
        session = object_session(shop)
    context = _Context(shop_id=shop.id, now=now.astimezone(dt.timezone.utc), zone=periods.shop_zone(shop.timezone),
                       session=session if session is not None else Session())
    matches = _group(normalise(definition), context)
    return (select(Subscriber.id)
            .select_from(Subscriber)
            .outerjoin(Customer, and_(Customer.id == Subscriber.customer_id, Customer.shop_id == Subscriber.shop_id))
            .where(Subscriber.shop_id == shop.id, Subscriber.status == "subscribed",
                   Subscriber.suppressed_at.is_(None), matches)
            .correlate(None))  # a self-contained statement even when nested in a query over subscribers


def members(session: OrmSession, definition: Definition, *, shop: Shop, now: dt.datetime) -> list[int]:
    """Ids of the subscribers in the segment at `now`, ascending."""
    statement = compile_definition(definition, shop=shop, now=now, session=session)
    return list(session.scalars(statement.order_by(Subscriber.id)))


def count(session: OrmSession, definition: Definition, *, shop: Shop, now: dt.datetime) -> int:
    """How many subscribers are in the segment at `now`."""
    statement = compile_definition(definition, shop=shop, now=now, session=session)
    return session.scalar(select(func.count()).select_from(statement.subquery()))


def matches_subscriber(session: OrmSession, definition: Definition, *, shop: Shop, now: dt.datetime,
                       subscriber_id: int) -> bool:
    """Whether one subscriber is in the segment at `now` (the same Select, narrowed to that subscriber)."""
    statement = compile_definition(definition, shop=shop, now=now, session=session)
    return bool(session.scalar(select(statement.where(Subscriber.id == subscriber_id).exists())))
