"""The one segment compiler: a definition becomes a single SQLAlchemy SELECT of member subscriber ids.

Preview counts, rebuilds, exports, campaign audiences and the per-subscriber re-check all run the
`Select` built here, so there is no second evaluator to drift. Customer facts are column checks
through an outer join to `customers`; rules on rows of their own (orders, line items, events, tags,
list entries) are stated once, as `_Some`: "the subscriber has at least N rows of this kind meeting
these conditions". Times are computed in Python from the injected `now` and bound as parameters, and
nothing is dialect-specific, so SQLite and PostgreSQL give the same answer.

A `_Some` becomes SQL in one of two shapes, with the same meaning (`_shaped`):

- `SET` (the default, for a whole shop: previews, builds, exports, audiences): the set of customers
  (or subscribers) having such rows is computed once for the shop, not once per subscriber. A rule
  that must hold is `subscribers.customer_id IN (SELECT customer_id FROM orders WHERE ...
  [GROUP BY customer_id HAVING count(*) >= N])`, a semi-join, and a negated one stays `NOT EXISTS`,
  an anti-join; one under OR is that set grouped by owner and outer-joined (never an IN under OR or
  NOT: PostgreSQL hashes such an IN only while it fits in `work_mem`, and beyond that scans the
  whole set again for every subscriber);
- `PROBE` (the re-check of a few subscribers, `matches_subscriber`): the correlated `EXISTS` /
  `count(*)`, a few index probes for one subscriber where the set would read every customer's rows.

In both shapes the rules of an `any` group that look at the same kind of rows are merged into one
subquery (EXISTS a OR EXISTS b = EXISTS (a OR b)), and so are the negated ones of an `all` group;
products and collections bought merge into one `product_id IN (...)`.

Every predicate built here is two-valued (never SQL NULL), so that `neq`, `not_in` and a segment
rule's `not_in` can be plain negations: a missing value makes the positive form false and the
negative form true, as the contract says.
"""
from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Callable, Literal, Mapping

from sqlalchemy import (BigInteger, ColumnElement, Select, and_, case, cast, exists, false, func, literal,
                        literal_column, not_, or_, select, true, union_all)
from sqlalchemy import type_coerce
from sqlalchemy.orm import Session as OrmSession, object_session

from kinnekt.casefold import fold
from kinnekt.db import MONEY_SCALE, Session, on_postgresql
from kinnekt.models import (Attribution, Campaign, Checkout, Click, CollectionProduct, Customer, CustomerTag, LineItem,
                            Message, Order, Segment, Shop, ShopifySegmentMember, StaticListEntry, StorefrontEvent,
                            Subscriber, SubscriberProperty, SubscriptionEvent)
from kinnekt.segments import periods
from kinnekt.models.message import MessageStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.segments.rules import MAX_ANNIVERSARY_DAYS, UNPAID, Definition, DefinitionError, normalise
from kinnekt.subscribers import property_catalogue as profile_properties

Predicate = ColumnElement[bool]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le, "gt": operator.gt,
    "gte": operator.ge,
}
"""Number operators; the same functions build SQL (on columns) and decide constants (on Python values)."""

ACCEPTED_MESSAGE_STATUSES = MessageStatus.ACCEPTED
"""Messages the SMS provider accepted and no receipt reported failed: these are `received_sms` events."""

SUBSCRIBED_EVENT_KINDS = ("subscribed", "confirmed", "resubscribed")
"""Consent-history kinds that are a moment of becoming subscribed: a sign-up subscribed at once, a double
opt-in confirmed, a resubscription (START, the merchant's attested resubscribe). `pending` is not one."""

Shape = Literal["set", "probe"]
SET: Shape = "set"
"""Rules on rows as uncorrelated sets of subscribers/customers: evaluated once for a whole shop."""
PROBE: Shape = "probe"
"""Rules on rows as correlated EXISTS / count: cheapest for one or a few subscribers."""


@dataclass(frozen=True)
class _Context:
    """What every builder needs: the shop, the evaluation instant, and the session for segment rules."""

    shop_id: int
    now: dt.datetime
    zone: dt.tzinfo
    session: OrmSession
    shape: Shape = SET
    expanding: tuple[int, ...] = ()  # segment ids being expanded, to stop a loop of segment rules
    joins: list = field(default_factory=list)  # SET: (set of owners, owner column) to outer-join, shared by copies
    cache: dict = field(default_factory=dict)  # row sources built once per evaluation, shared by copies
    properties: Mapping[str, str] = field(default_factory=dict)  # the shop's profile property keys -> types


@dataclass(frozen=True)
class _Some:
    """The subscriber has at least `at_least` rows of one `kind` meeting `conditions` (none of them if `negative`).

    The rows are those of `source` matching `base`, tied to the subscriber by `key == owner`. Rules of
    the same `kind` share `source`, `key`, `owner` and `base`, so they can be merged.
    """

    kind: str
    source: Any
    key: Any
    owner: Any
    base: tuple
    conditions: tuple
    at_least: int = 1
    negative: bool = False

    def negated(self, negative: bool = True) -> "_Some":
        """The same rows, the opposite answer (when `negative`)."""
        return replace(self, negative=self.negative != negative)


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


def _negated_if(condition, negative: bool):
    """`condition`, or its negation when `negative` (a `_Some` stays a `_Some`, to be shaped later)."""
    if isinstance(condition, _Some):
        return condition.negated(negative)
    return not_(condition) if negative else condition


# ---------------------------------------------------------------------------------------------- dates

DATE_COLUMNS = {
    "last_order_created": Customer.last_order_at,
    "first_order_created": Customer.first_order_at,
    "customer_created": Customer.shopify_created_at,
    "subscribed_at": Subscriber.subscribed_at,
    "last_received_sms": Subscriber.last_received_at,
    "last_clicked": Subscriber.last_clicked_at,
    "expected_next_order": Customer.expected_next_order_at,
}
"""Date fields that are a column; `last_visit` (the newest page view) is built by `_last_visit`."""


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

MAX_BIGINT = 2**63 - 1

ORDERS_COUNT = func.coalesce(Customer.orders_count, 0)
"""The linked customer's counted orders; 0 for an unlinked subscriber."""


def _holds(value, rule: dict, to_sql: Callable[[Any], Any] = lambda v: v) -> bool:
    """Whether the constant `value` meets a number rule (Python's answer to what `_number` asks SQL)."""
    if rule["op"] == "between":
        lo, hi = rule["value"]
        return to_sql(lo) < value < to_sql(hi)
    return bool(_COMPARE[rule["op"]](value, to_sql(rule["value"])))


def _money_fact(column) -> Callable[[dict, _Context], Predicate]:
    """Builder for a customer money fact; an unlinked subscriber's (a missing value) is 0.

    Written on the bare column, with the missing value decided in Python by whether 0 meets the rule, rather
    than as `coalesce(column, 0) op value`: the same answer, and PostgreSQL can then use the
    `(shop_id, money_spent)` index (`loyal_inactive` of bench/segments.py: 1.6× a hand-written query before).
    """
    def build(rule: dict, c: _Context) -> Predicate:
        raw = _raw_money(column)
        compared = _number(raw, rule, _units)
        return or_(raw.is_(None), compared) if _holds(0, rule, _units) else _known(raw, compared)
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
        product = _COMPARE[op](spent, orders * units)
        if units:
            # Past `limit` orders, |units × orders| would leave a 64-bit integer; it is then beyond any stored
            # (64-bit) spent, so the comparison is decided by the sign of the value alone.
            limit = MAX_BIGINT // abs(units)
            beyond = _COMPARE[op](0, 1) if units > 0 else _COMPARE[op](1, 0)  # spent < units × orders (or >)
            product = case((orders > limit, true() if beyond else false()), else_=product)
        with_orders = and_(orders > 0, product)
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


def _text_choice(column, *, folds: bool = True, stored=None) -> Callable[[dict, _Context], Predicate]:
    """Builder for eq/neq/in/not_in on a nullable text column.

    Case-insensitive fields pass their folded copy (`kinnekt.casefold`), compared with the value folded the
    same way; `country` (not `folds`) passes the upper-case ISO code itself, `upper(country)`, with the
    `stored` column it is computed from (NULL exactly when it is), so the NULL test does not compute it again.
    """
    present = column if stored is None else stored

    def build(rule: dict, c: _Context) -> Predicate:
        value, op = rule["value"], rule["op"]
        if folds:
            value = [fold(v) for v in value] if op in ("in", "not_in") else fold(value)
        condition = column.in_(value) if op in ("in", "not_in") else column == value
        return _negated_if(_known(present, condition), op in ("neq", "not_in"))
    return build


def _tags(rule: dict, c: _Context) -> _Some:
    has_tag = _Some("customer_tags", CustomerTag, CustomerTag.customer_id, Subscriber.customer_id,
                    (CustomerTag.shop_id == c.shop_id,), (CustomerTag.tag == fold(rule["value"]),))
    return _negated_if(has_tag, rule["op"] == "not_contains")


# ---------------------------------------------------------------------------------------------- orders

def _orders(c: _Context, *conditions, counted: bool) -> _Some:
    """Some non-test order of the linked customer (also not cancelled when `counted`) meets `conditions`."""
    counted_only = (Order.cancelled_at.is_(None),) if counted else ()
    return _Some("orders", Order, Order.customer_id, Subscriber.customer_id,
                 (Order.shop_id == c.shop_id, Order.test.is_(False)), counted_only + conditions)


def _line_items_of_counted_orders(c: _Context, *conditions) -> _Some:
    """Some counted order of the subscriber has a line item meeting `conditions`.

    Read from `line_items` alone: each line item carries its order's customer and whether the order is
    counted (kept in step with the order, see `LineItem`), so no join with `orders` is needed.
    """
    return _Some("counted_line_items", LineItem, LineItem.customer_id, Subscriber.customer_id,
                 (LineItem.shop_id == c.shop_id, LineItem.counted.is_(True)), conditions)


def _fulfillment_status(rule: dict, c: _Context) -> _Some:
    found = _orders(c, Order.fulfillment_status == rule["value"], counted=False)
    return _negated_if(found, rule["op"] == "neq")


def _payment_status(rule: dict, c: _Context) -> _Some:
    statuses = UNPAID if rule["value"] == "unpaid" else (rule["value"],)
    found = _orders(c, Order.financial_status.in_(statuses), counted=False)
    return _negated_if(found, rule["op"] == "neq")


def _order_cancelled(rule: dict, c: _Context) -> _Some:
    return _negated_if(_orders(c, Order.cancelled_at.is_not(None), counted=False), rule["value"] == "no")


@dataclass(frozen=True)
class _Products:
    """A line item's condition: its product is one of `ids` or (at evaluation time) in one of `collections`.

    Kept apart from other conditions so that the products and collections of merged rules become one
    `product_id IN (...)`, which the line items' product index serves, instead of an OR of two.
    """

    shop_id: int
    ids: tuple[int, ...] = ()
    collections: tuple[int, ...] = ()

    def __or__(self, other: "_Products") -> "_Products":
        return _Products(self.shop_id, tuple(sorted({*self.ids, *other.ids})),
                         tuple(sorted({*self.collections, *other.collections})))

    def sql(self) -> Predicate:
        """The condition on `LineItem.product_id`."""
        if not self.collections:
            return LineItem.product_id.in_(self.ids)
        in_collections = select(CollectionProduct.product_id).where(
            CollectionProduct.shop_id == self.shop_id, CollectionProduct.collection_id.in_(self.collections))
        if not self.ids:
            return LineItem.product_id.in_(in_collections)
        return LineItem.product_id.in_(union_all(in_collections, *(select(literal(i, BigInteger)) for i in self.ids)))


def _ordered_product(rule: dict, c: _Context) -> _Some:
    found = _line_items_of_counted_orders(c, _Products(c.shop_id, ids=tuple(sorted({int(v) for v in rule["value"]}))))
    return _negated_if(found, rule["op"] == "neq")


def _ordered_collection(rule: dict, c: _Context) -> _Some:
    collections = tuple(sorted({int(v) for v in rule["value"]}))
    found = _line_items_of_counted_orders(c, _Products(c.shop_id, collections=collections))
    return _negated_if(found, rule["op"] == "neq")


def _title(folded):
    """A title condition on its folded copy: equal to, or (literally) containing, the folded value."""
    def condition(op: str, value: str) -> Predicate:
        value = fold(value)
        found = folded.contains(value, autoescape=True) if op == "contains" else folded == value
        return _known(folded, found)
    return condition


def _whole_column(column, op: str, value: int | float) -> Predicate:
    """`column op value` for an integer column and any number, in integers only (exact on both databases).

    For a whole-number column, `>= 2.5` is `>= 3`, `> 2.5` is `> 2`, `<= 2.5` is `<= 2`, `< 2.5` is `< 3`,
    and `== 2.5` holds for no row.
    """
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if number == number.to_integral_value():
        return _COMPARE[op](column, int(number))
    floor, ceiling = int(number.to_integral_value(ROUND_FLOOR)), int(number.to_integral_value(ROUND_CEILING))
    if op in ("eq", "neq"):
        return false() if op == "eq" else true()
    return {"gte": column >= ceiling, "gt": column > floor, "lte": column <= floor, "lt": column < ceiling}[op]


LINE_ITEM_CONDITIONS: dict[str, Callable[[str, Any], Predicate]] = {
    "product_id": lambda op, value: LineItem.product_id == int(value),
    "variant_id": lambda op, value: LineItem.variant_id == int(value),
    "product_title": _title(LineItem.title_folded),
    "variant_title": _title(LineItem.variant_title_folded),
    "quantity": lambda op, value: _whole_column(LineItem.quantity, op, value),
    "price": lambda op, value: _COMPARE[op](_raw_money(LineItem.price), _units(value)),
}
"""line_items attribute -> the condition on one line item for a positive operator."""

_POSITIVE = {"neq": "eq", "not_contains": "contains"}


def _line_items(rule: dict, c: _Context) -> _Some:
    """Some counted order has a line item satisfying the rule; `neq`/`not_contains`: no line item has the positive."""
    op = rule["op"]
    condition = LINE_ITEM_CONDITIONS[rule["attribute"]](_POSITIVE.get(op, op), rule["value"])
    return _negated_if(_line_items_of_counted_orders(c, condition), op in _POSITIVE)


# ---------------------------------------------------------------------------------------------- events

def _event_rows(event: str, c: _Context) -> tuple[_Some, Any]:
    """(the subscriber's events of a kind, with no condition yet; their time column)."""
    if event == "placed_order":
        return _orders(c, counted=True), Order.created_at
    if event == "received_sms":
        return _Some("messages", Message, Message.subscriber_id, Subscriber.id,
                     (Message.shop_id == c.shop_id, Message.status.in_(ACCEPTED_MESSAGE_STATUSES)), ()), Message.sent_at
    if event == "clicked_link":
        return _Some("clicks", Click, Click.subscriber_id, Subscriber.id, (Click.shop_id == c.shop_id,), ()), Click.at
    if event == "started_checkout":
        checkouts = _open_checkouts(c)
        return _Some("open_checkouts", checkouts, checkouts.c.subscriber_id, Subscriber.id, (), ()), \
            checkouts.c.started_at
    if event == "received_discount":
        return _discount_messages(c), Message.sent_at
    if event in STOREFRONT_EVENT_NAMES:
        return _storefront_rows(STOREFRONT_EVENT_NAMES[event], c), _EVENTS.c.occurred_at
    if event == "used_discount":
        return _Some("discount_orders", Attribution.__table__.join(Order.__table__, Order.id == Attribution.order_id),
                     Attribution.subscriber_id, Subscriber.id,
                     (Attribution.shop_id == c.shop_id, Attribution.method == "discount_code",
                      Order.test.is_(False), Order.cancelled_at.is_(None)), ()), Order.created_at
    return _Some("subscribed_events", SubscriptionEvent, SubscriptionEvent.subscriber_id, Subscriber.id,
                 (SubscriptionEvent.shop_id == c.shop_id, SubscriptionEvent.kind.in_(SUBSCRIBED_EVENT_KINDS)), ()), \
        SubscriptionEvent.at


DISCOUNT_TAG = "{discount_code}"
"""The merge tag that puts a campaign's code into its text (kinnekt.campaigns.composer)."""


def _discount_messages(c: _Context) -> _Some:
    """The subscriber's received messages (accepted, no failed receipt) that carried a discount code.

    A message carries one when its campaign (or automation) hands out a discount and its text uses the
    {discount_code} tag: a shared code, or the unique code stored on the message. `replace` finds the tag
    case-sensitively on both databases (LIKE does not on SQLite), as the composer fills it in.
    """
    source = Message.__table__.join(Campaign.__table__, and_(Campaign.id == Message.campaign_id,
                                                             Campaign.shop_id == Message.shop_id))
    carries_code = or_(and_(Campaign.discount_mode == "unique", Message.discount_code.is_not(None)),
                       and_(Campaign.discount_mode == "shared", Campaign.discount_code.is_not(None)))
    return _Some("discount_messages", source, Message.subscriber_id, Subscriber.id,
                 (Message.shop_id == c.shop_id, Message.status.in_(ACCEPTED_MESSAGE_STATUSES), carries_code,
                  func.replace(Campaign.body, DISCOUNT_TAG, "") != Campaign.body), ())


def _open_checkouts(c: _Context):
    """The shop's checkouts not completed, each with the subscriber it belongs to: (subscriber_id, started_at).

    A checkout belongs to the subscribers linked to its Shopify customer or, when it has no customer, to the
    subscriber whose phone is the checkout's (E.164). Built once per evaluation, so that merged rules share it.
    """
    if "open_checkouts" not in c.cache:
        owner = Subscriber.__table__.alias("checkout_owner")
        open_ = (Checkout.shop_id == c.shop_id, Checkout.completed_at.is_(None))
        by_customer = (select(owner.c.id.label("subscriber_id"), Checkout.started_at.label("started_at"))
                       .select_from(Checkout.__table__.join(owner, and_(owner.c.shop_id == Checkout.shop_id,
                                                                        owner.c.customer_id == Checkout.customer_id)))
                       .where(*open_, Checkout.customer_id.is_not(None)))
        by_phone = (select(owner.c.id, Checkout.started_at)
                    .select_from(Checkout.__table__.join(owner, and_(owner.c.shop_id == Checkout.shop_id,
                                                                     owner.c.phone == Checkout.phone)))
                    .where(*open_, Checkout.customer_id.is_(None)))
        c.cache["open_checkouts"] = union_all(by_customer, by_phone).subquery("open_checkouts")
    return c.cache["open_checkouts"]


def _event(rule: dict, c: _Context) -> _Some:
    """performed: at least `at_least` events inside `within`; not_performed: fewer.

    Browsing events also take id filters (`products`, `collections`) and `not_followed_by`: only the events
    that meet them are counted."""
    rows, at = _event_rows(rule["event"], c)
    start, end, end_inclusive = periods.window_bounds(rule["within"], now=c.now, zone=c.zone)
    if start is not None or end is not None:
        rows = replace(rows, conditions=rows.conditions + (_in_range(at, start, end, end_inclusive=end_inclusive),))
    if rule["event"] in STOREFRONT_EVENT_NAMES:
        rows = replace(rows, conditions=rows.conditions + _browsing_conditions(rule, c))
    return _negated_if(replace(rows, at_least=rule["at_least"]), rule["op"] == "not_performed")


# ---------------------------------------------------------------------------------------------- browsing

STOREFRONT_EVENT_NAMES = {"visited": "page_viewed", "viewed_product": "product_viewed",
                          "viewed_collection": "collection_viewed", "added_to_cart": "product_added_to_cart"}
"""Browsing event rule -> the web pixel's event it counts (kinnekt/models/storefront.py)."""

VISIT_EVENT = STOREFRONT_EVENT_NAMES["visited"]
"""A visit is a page view: `visited` counts them, `last_visit` is the newest."""

_EVENTS = StorefrontEvent.__table__
_LATER = StorefrontEvent.__table__.alias("later_event")


def _storefront_rows(name: str, c: _Context) -> _Some:
    """The subscriber's storefront events of one pixel name, with no condition yet."""
    return _Some(f"storefront:{name}", _EVENTS, _EVENTS.c.subscriber_id, Subscriber.id,
                 (_EVENTS.c.shop_id == c.shop_id, _EVENTS.c.name == name), ())


def _product_of_event(rule: dict, c: _Context) -> Predicate | None:
    """The id filters of a browsing rule on the event row: its product (or, for `viewed_collection`, the collection
    viewed) is one of `products`, or its product is in one of `collections` now."""
    products = sorted({int(v) for v in rule.get("products", ())})
    collections = sorted({int(v) for v in rule.get("collections", ())})
    if rule["event"] == "viewed_collection":
        return _EVENTS.c.collection_id.in_(collections) if collections else None
    found = []
    if products:
        found.append(_EVENTS.c.product_id.in_(products))
    if collections:
        found.append(_EVENTS.c.product_id.in_(select(CollectionProduct.product_id).where(
            CollectionProduct.shop_id == c.shop_id, CollectionProduct.collection_id.in_(collections))))
    return or_(*found) if found else None


def _followed_by(follower: str, c: _Context) -> Predicate:
    """The event row was followed (at or after it) by `follower`: an order with a line item of its product, an add
    to cart of its product, or a checkout started, by the same subscriber."""
    if follower == "placed_order":
        buyer = Subscriber.__table__.alias("buyer")
        return exists(
            select(literal_column("1"))
            .select_from(LineItem.__table__.join(Order.__table__, Order.id == LineItem.order_id)
                         .join(buyer, buyer.c.customer_id == LineItem.customer_id))
            .where(buyer.c.id == _EVENTS.c.subscriber_id, LineItem.shop_id == c.shop_id, LineItem.counted.is_(True),
                   LineItem.product_id == _EVENTS.c.product_id, Order.created_at >= _EVENTS.c.occurred_at)
            .correlate(_EVENTS))
    later = [_LATER.c.shop_id == c.shop_id, _LATER.c.subscriber_id == _EVENTS.c.subscriber_id,
             _LATER.c.occurred_at >= _EVENTS.c.occurred_at]
    if follower == "added_to_cart":
        later += [_LATER.c.name == STOREFRONT_EVENT_NAMES["added_to_cart"], _LATER.c.product_id == _EVENTS.c.product_id]
    else:  # started_checkout
        later.append(_LATER.c.name == "checkout_started")
    return exists(select(literal_column("1")).select_from(_LATER).where(*later).correlate(_EVENTS))


def _browsing_conditions(rule: dict, c: _Context) -> tuple:
    """A browsing event rule's conditions on the event row beyond its window."""
    out = []
    filtered = _product_of_event(rule, c)
    if filtered is not None:
        out.append(filtered)
    if rule.get("not_followed_by"):
        out.append(not_(_followed_by(rule["not_followed_by"], c)))
    return tuple(out)


def _last_visit(rule: dict, c: _Context) -> Predicate:
    """A date rule on the subscriber's newest page view (none: the date is missing)."""
    if c.shape == PROBE:
        column = (select(func.max(_EVENTS.c.occurred_at))
                  .where(_EVENTS.c.subscriber_id == Subscriber.id, _EVENTS.c.shop_id == c.shop_id,
                         _EVENTS.c.name == VISIT_EVENT)
                  .scalar_subquery())
    else:
        if "last_visit" not in c.cache:  # one outer join of (subscriber, newest visit), shared by every such rule
            visits = (select(_EVENTS.c.subscriber_id.label("subscriber_id"),
                             func.max(_EVENTS.c.occurred_at).label("at"))
                      .where(_EVENTS.c.shop_id == c.shop_id, _EVENTS.c.name == VISIT_EVENT,
                             _EVENTS.c.subscriber_id.is_not(None))
                      .group_by(_EVENTS.c.subscriber_id).correlate(None).subquery("last_visits"))
            c.joins.append((visits, visits.c.subscriber_id == Subscriber.id))
            c.cache["last_visit"] = visits.c.at
        column = c.cache["last_visit"]
    return _date_rule(column)(rule, c)


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
            definition = normalise(stored, properties=c.properties)
        except DefinitionError as exc:
            raise DefinitionError([{"path": f"segment {target}: {e['path']}", "message": e["message"]}
                                   for e in exc.errors]) from None
        member = _group(definition, replace(c, expanding=c.expanding + (target,)))
    return _negated_if(member, rule["op"] == "not_in")


def _list(rule: dict, c: _Context) -> _Some:
    on_list = _Some("list_entries", StaticListEntry, StaticListEntry.phone, Subscriber.phone,
                    (StaticListEntry.shop_id == c.shop_id,), (StaticListEntry.list_id == rule["value"],))
    return _negated_if(on_list, rule["op"] == "not_in")


def _shopify_segment(rule: dict, c: _Context) -> _Some:
    """Membership of one of the shop's Shopify customer segments, as its members were last read
    (`shopify_segment_members`, by Shopify customer id): through the subscriber's customer. A subscriber with no
    customer is in no Shopify segment."""
    in_segment = _Some("shopify_segment_members", ShopifySegmentMember, ShopifySegmentMember.customer_id,
                       Customer.shopify_id, (ShopifySegmentMember.shop_id == c.shop_id,),
                       (ShopifySegmentMember.segment_id == int(rule["value"]),))
    return _negated_if(in_segment, rule["op"] == "not_in")


# ---------------------------------------------------------------------------------------------- profile properties

_PROPERTY_NEGATIONS = {"neq": "eq", "not_contains": "contains", "is_not_set": "is_set", "never": "is_set"}
"""Operators that are "no value of the property satisfies the positive one" (a missing value satisfies them)."""


def _day_code(day: dt.date) -> int:
    return day.month * 100 + day.day


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _anniversary_within(first: dt.date, days: int) -> Predicate:
    """The date's month and day fall on one of `days` local days from `first` (a Feb 29 date counts on Feb 28 in
    years without one)."""
    column = SubscriberProperty.anniversary
    if days >= MAX_ANNIVERSARY_DAYS:
        return column.is_not(None)
    try:
        last = first + dt.timedelta(days=days - 1)
    except OverflowError:
        return column.is_not(None)
    if last.year == first.year:
        found = column.between(_day_code(first), _day_code(last))
    else:
        found = or_(column >= _day_code(first), column <= _day_code(last))
    for year in {first.year, last.year}:
        feb_28 = dt.date(year, 2, 28)
        if not _is_leap(year) and first <= feb_28 <= last:
            found = or_(found, column == 229)
    return found


def _date_property(op: str, value: Any, c: _Context) -> Predicate:
    """A positive date operator on a property's calendar date; days are the shop's local days."""
    column = SubscriberProperty.date_value
    today = periods.local_today(c.now, c.zone)
    if op == "eq":
        first, end = periods.period_days(value, now=c.now, zone=c.zone)
        return and_(true(), *([column >= first] if first else []), *([column < end] if end else []))
    if op == "before":
        return column < dt.date.fromisoformat(value)
    if op == "after":
        return column > dt.date.fromisoformat(value)
    if op in ("within_last_days", "more_than_days_ago"):
        try:
            cutoff = today - dt.timedelta(days=value)
        except OverflowError:
            return true() if op == "within_last_days" else false()
        return column >= cutoff if op == "within_last_days" else column < cutoff
    if op == "anniversary_today":
        return _anniversary_within(today, 1)
    if op == "anniversary_next_days":
        return _anniversary_within(today, value)
    month = today.month * 100  # anniversary_this_month
    return SubscriberProperty.anniversary.between(month + 1, month + 31)


def _property(rule: dict, c: _Context) -> _Some:
    """The subscriber has a value of the property satisfying the rule (`neq`, `not_contains`, `is_not_set`,
    `never`: has none satisfying the positive form, so a missing value makes them true)."""
    key, op, value = rule["attribute"], rule["op"], rule.get("value")
    positive = _PROPERTY_NEGATIONS.get(op, op)
    kind = c.properties.get(key)
    if positive == "is_set":
        condition = true()
    elif kind == "text":
        folded = SubscriberProperty.text_folded
        condition = folded.contains(fold(value), autoescape=True) if positive == "contains" else folded == fold(value)
    elif kind == "number":
        condition = _number(_raw_money(SubscriberProperty.number_value), {"op": positive, "value": value}, _units)
    else:
        condition = _date_property(positive, value, c)
    found = _Some(f"property:{key}", SubscriberProperty, SubscriberProperty.subscriber_id, Subscriber.id,
                  (SubscriberProperty.shop_id == c.shop_id, SubscriberProperty.name_key == key), (condition,))
    return _negated_if(found, op in _PROPERTY_NEGATIONS)


# ---------------------------------------------------------------------------------------------- the table

BUILDERS: dict[str, Callable[[dict, _Context], Predicate]] = {
    **{name: _date_rule(column) for name, column in DATE_COLUMNS.items()},
    "last_visit": _last_visit,
    "money_spent": _money_fact(Customer.money_spent),
    "total_discounts": _money_fact(Customer.total_discounts),
    "average_money_spent": _average_money_spent,
    "number_of_orders": _count_fact(ORDERS_COUNT),
    "sent_count": _count_fact(Subscriber.sent_count),
    "clicks_count": _count_fact(Subscriber.clicks_count),
    "subscription_source": _subscription_source,
    "keyword": _text_choice(Subscriber.keyword_folded),
    "country": _text_choice(func.upper(Subscriber.country), folds=False, stored=Subscriber.country),
    "carrier": _text_choice(Subscriber.carrier_folded),
    "city": _text_choice(Customer.city_folded),
    "tags": _tags,
    "fulfillment_status": _fulfillment_status,
    "payment_status": _payment_status,
    "order_cancelled": _order_cancelled,
    "lifecycle_stage": _text_choice(Customer.lifecycle_stage, folds=False),
    "previous_lifecycle_stage": _text_choice(Customer.lifecycle_previous_stage, folds=False),
    "ordered_product": _ordered_product,
    "ordered_collection": _ordered_collection,
    "line_items": _line_items,
    "event": _event,
    "segment": _segment,
    "list": _list,
    "shopify_segment": _shopify_segment,
    "property": _property,
}
"""Field -> SQL builder; the keys are exactly `rules.FIELDS` (a test holds them together)."""


def _merged(parts: list, match: str) -> list:
    """The group's `_Some`s of one kind merged where that keeps the meaning, in the order they came.

    any: EXISTS a OR EXISTS b = EXISTS (a OR b); all: NOT EXISTS a AND NOT EXISTS b = NOT EXISTS (a OR b).
    Counted ones (at_least > 1) are left alone: "2 orders of a" OR "2 orders of b" is not "2 orders of a or b".
    """
    negative = match == "all"
    out: list = []
    first: dict[str, int] = {}
    for part in parts:
        if not (isinstance(part, _Some) and part.at_least == 1 and part.negative == negative):
            out.append(part)
            continue
        if part.kind not in first:
            first[part.kind] = len(out)
            out.append(part)
            continue
        kept = out[first[part.kind]]
        if len(kept.conditions) == len(part.conditions) == 1 and \
                all(isinstance(x.conditions[0], _Products) for x in (kept, part)):
            either = kept.conditions[0] | part.conditions[0]
        else:
            either = or_(and_(true(), *map(_sql, kept.conditions)), and_(true(), *map(_sql, part.conditions)))
        out[first[part.kind]] = replace(kept, conditions=(either,))
    return out


def _sql(condition) -> Predicate:
    return condition.sql() if isinstance(condition, _Products) else condition


def _shaped(some: _Some, c: _Context, *, top: bool) -> Predicate:
    """A `_Some` as SQL, in the context's shape.

    PROBE: a correlated EXISTS (or count(*) >= N). SET: the set of owners (customer or subscriber ids)
    that have such rows, computed once. Where the rule must simply hold (`top`: a conjunct of the root
    and not negated) that is `owner IN (set)`, which both databases run as a semi-join; a negated one
    there stays NOT EXISTS, which PostgreSQL runs as an anti-join (with no grouping). Anywhere else
    (under OR or NOT) an uncorrelated IN would be a hashed set on PostgreSQL only while it fits in
    `work_mem`, and a scan of the whole set per subscriber beyond that; so there the set is grouped
    by owner and outer-joined, and the rule is "the join found a row", which scales like any hash join.
    Both sides leave NULL owners out, so each form is true or false, never NULL.
    """
    conditions = (*some.base, *map(_sql, some.conditions))
    if c.shape == PROBE or (top and some.negative and some.at_least == 1):
        # (A NOT EXISTS that must hold is an anti-join on PostgreSQL already, and needs no grouping.)
        rows = select(func.count() if some.at_least > 1 else literal_column("1")).select_from(some.source).where(
            some.key == some.owner, *conditions)
        found = exists(rows) if some.at_least == 1 else rows.scalar_subquery() >= some.at_least
        return not_(found) if some.negative else found
    owners = select(some.key).select_from(some.source).where(some.key.is_not(None), *conditions).correlate(None)
    if some.at_least > 1:
        owners = owners.group_by(some.key).having(func.count() >= some.at_least)
    if top and not some.negative:
        found = some.owner.in_(owners)
        return and_(some.owner.is_not(None), found) if some.owner.nullable else found
    if some.at_least == 1:
        owners = owners.group_by(some.key)  # one row per owner, so the outer join never repeats a subscriber
    joined = owners.subquery()
    c.joins.append((joined, joined.c[0] == some.owner))
    return joined.c[0].is_(None) if some.negative else joined.c[0].is_not(None)


def _group(group: dict, c: _Context, *, top: bool = False) -> Predicate:
    """The group's condition. `top`: its conjuncts must hold for every member (it is the root, or under it by AND).

    Rules are built first and merged; nested groups are built after, once it is known whether they
    are still `top` (an `any` group left with a single item is no more than that item).
    """
    built = [item if "rules" in item else BUILDERS[item["field"]](item, c) for item in group["rules"]]
    merged = _merged(built, group["match"])
    inner_top = top and (group["match"] == "all" or len(merged) == 1)
    parts = [_group(part, c, top=inner_top) if isinstance(part, dict)
             else _shaped(part, c, top=inner_top) if isinstance(part, _Some) else part for part in merged]
    return and_(*parts) if group["match"] == "all" else or_(*parts)


# ---------------------------------------------------------------------------------------------- public API

_SUBSCRIBED = literal(SubscriberStatus.SUBSCRIBED.value, literal_execute=True)
"""'subscribed' written into the SQL, not bound: the partial index of a segment's candidates
(`ix_subscribers_segment_candidates`, PostgreSQL) is then usable by any plan of it, a generic one included."""


def compile_definition(definition: Definition, *, shop: Shop, now: dt.datetime,
                       session: OrmSession | None = None, shape: Shape = SET) -> Select:
    """The `Select` of the ids of the shop's subscribed, unsuppressed subscribers matching the definition.

    `now` is the aware UTC instant the definition is evaluated at; `session` (default: the shop's own,
    else the shared one) is only used to read the definitions that segment rules refer to. `shape`
    is SET to evaluate the whole shop, PROBE when the Select will be narrowed to a few subscribers
    (see the module docstring); both give the same members.
    """
    if shape not in (SET, PROBE):
        raise ValueError(f"shape must be {SET!r} or {PROBE!r}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    if session is None:
        session = object_session(shop)
    session = session if session is not None else Session()
    context = _Context(shop_id=shop.id, now=now.astimezone(dt.timezone.utc), zone=periods.shop_zone(shop.timezone),
                       session=session, shape=shape, properties=profile_properties.types(session, shop.id))
    matches = _group(normalise(definition, properties=context.properties), context, top=True)
    subscribers = Subscriber.__table__.outerjoin(
        Customer.__table__, and_(Customer.id == Subscriber.customer_id, Customer.shop_id == Subscriber.shop_id))
    for owners, on in context.joins:
        subscribers = subscribers.outerjoin(owners, on)
    return (select(Subscriber.id)
            .select_from(subscribers)
            .where(Subscriber.shop_id == shop.id, Subscriber.status == _SUBSCRIBED,
                   Subscriber.suppressed_at.is_(None), matches)
            .correlate(None))  # a self-contained statement even when nested in a query over subscribers


SET_WORK_MEM = "64MB"
"""PostgreSQL's `work_mem` for the rest of a transaction that runs a whole-shop (SET) statement (`plan_for_sets`).
The SET shape groups a shop's orders or line items by customer and hashes the result; at 1M subscribers those
hashes hold 20-60 MB, and at the server's default (4 MB) each spilled to disk in 8-21 batches: `order_trouble` of
bench/segments.py took 1.6 s instead of 1.1 (docs/benchmarks.md, "Segment previews at 1M"). A hash may use up to
`hash_mem_multiplier` times this; a small shop's statements use what they need, not this."""


def plan_for_sets(session: OrmSession) -> None:
    """Give the rest of this transaction the memory a whole-shop segment statement needs (`SET_WORK_MEM`, as
    `SET LOCAL`: it ends with the transaction). Nothing on SQLite."""
    if on_postgresql(session):
        session.execute(select(func.set_config("work_mem", SET_WORK_MEM, true())))


def members(session: OrmSession, definition: Definition, *, shop: Shop, now: dt.datetime,
            shape: Shape = SET) -> list[int]:
    """Ids of the subscribers in the segment at `now`, ascending."""
    statement = compile_definition(definition, shop=shop, now=now, session=session, shape=shape)
    if shape == SET:
        plan_for_sets(session)
    return list(session.scalars(statement.order_by(Subscriber.id)))


def count(session: OrmSession, definition: Definition, *, shop: Shop, now: dt.datetime, shape: Shape = SET) -> int:
    """How many subscribers are in the segment at `now`."""
    statement = compile_definition(definition, shop=shop, now=now, session=session, shape=shape)
    if shape == SET:
        plan_for_sets(session)
    return session.scalar(select(func.count()).select_from(statement.subquery()))


def matches_subscriber(session: OrmSession, definition: Definition, *, shop: Shop, now: dt.datetime,
                       subscriber_id: int) -> bool:
    """Whether one subscriber is in the segment at `now` (the same Select in its PROBE shape, narrowed to it)."""
    statement = compile_definition(definition, shop=shop, now=now, session=session, shape=PROBE)
    return bool(session.scalar(select(statement.where(Subscriber.id == subscriber_id).exists())))
