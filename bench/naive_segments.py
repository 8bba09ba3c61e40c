"""The naive way, for comparison only: load a shop's rows into Python and evaluate a definition row by row.

This is what the compiler replaces. It follows segment-rules.md directly (so its counts double-check
the SQL's), and it is deliberately plain: one pass over the subscribers per definition, with the
orders, line items and events of each one looked up in dictionaries built at load time.
"""
from __future__ import annotations

import datetime as dt
import operator
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.casefold import fold
from kinnekt.models import (Attribution, Campaign, Checkout, Click, CollectionProduct, Customer, CustomerTag, LineItem,
                            Message, Order, Segment, Shop, StaticListEntry, StorefrontEvent, Subscriber,
                            SubscriberProperty, SubscriptionEvent)
from kinnekt.segments import periods
from kinnekt.segments.compiler import ACCEPTED_MESSAGE_STATUSES, SUBSCRIBED_EVENT_KINDS
from kinnekt.segments.rules import UNPAID, normalise

COMPARE = {"eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le, "gt": operator.gt,
           "gte": operator.ge}
DATE_FIELDS = {"last_order_created": ("customer", "last_order_at"),
               "first_order_created": ("customer", "first_order_at"),
               "customer_created": ("customer", "shopify_created_at"),
               "subscribed_at": ("subscriber", "subscribed_at"),
               "last_received_sms": ("subscriber", "last_received_at"),
               "last_clicked": ("subscriber", "last_clicked_at"),
               "expected_next_order": ("customer", "expected_next_order_at")}
BROWSING = {"visited": "page_viewed", "viewed_product": "product_viewed", "viewed_collection": "collection_viewed",
            "added_to_cart": "product_added_to_cart"}
STAGE_FIELDS = {"lifecycle_stage": "lifecycle_stage", "previous_lifecycle_stage": "lifecycle_previous_stage"}


@dataclass
class LoadedShop:
    """Every row a definition can look at, keyed for lookups."""

    shop: Any
    subscribers: list = field(default_factory=list)
    customers: dict = field(default_factory=dict)
    tags: dict = field(default_factory=lambda: defaultdict(set))
    orders: dict = field(default_factory=lambda: defaultdict(list))  # customer id -> orders
    lines: dict = field(default_factory=lambda: defaultdict(list))  # order id -> line items
    collections: dict = field(default_factory=lambda: defaultdict(set))  # collection id -> product ids
    checkouts: dict = field(default_factory=lambda: defaultdict(list))  # customer id -> checkouts
    phone_checkouts: dict = field(default_factory=lambda: defaultdict(list))  # phone -> checkouts with no customer
    messages: dict = field(default_factory=lambda: defaultdict(list))
    campaigns: dict = field(default_factory=dict)  # campaign id -> (discount_mode, discount_code, body)
    discount_orders: dict = field(default_factory=lambda: defaultdict(list))  # subscriber id -> order times
    clicks: dict = field(default_factory=lambda: defaultdict(list))
    subscribed_events: dict = field(default_factory=lambda: defaultdict(list))
    list_phones: dict = field(default_factory=lambda: defaultdict(set))
    definitions: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)  # (subscriber id, property key) -> typed value
    property_types: dict = field(default_factory=dict)  # property key -> type
    storefront: dict = field(default_factory=lambda: defaultdict(list))  # subscriber id -> storefront events


def load(session: OrmSession, shop_id: int) -> LoadedShop:
    """Read all of one shop's segment-relevant rows into memory."""
    def rows(*columns, where):
        return session.execute(select(*columns).where(where)).all()

    data = LoadedShop(shop=session.get(Shop, shop_id))
    data.subscribers = rows(Subscriber.id, Subscriber.status, Subscriber.suppressed_at, Subscriber.source,
                            Subscriber.keyword, Subscriber.country, Subscriber.carrier, Subscriber.customer_id,
                            Subscriber.phone, Subscriber.subscribed_at, Subscriber.sent_count, Subscriber.clicks_count,
                            Subscriber.last_received_at, Subscriber.last_clicked_at,
                            where=Subscriber.shop_id == shop_id)
    for row in rows(Customer.id, Customer.money_spent, Customer.total_discounts, Customer.orders_count,
                    Customer.first_order_at, Customer.last_order_at, Customer.shopify_created_at, Customer.city,
                    Customer.expected_next_order_at, Customer.lifecycle_stage, Customer.lifecycle_previous_stage,
                    where=Customer.shop_id == shop_id):
        data.customers[row.id] = row
    for customer_id, tag in rows(CustomerTag.customer_id, CustomerTag.tag, where=CustomerTag.shop_id == shop_id):
        data.tags[customer_id].add(tag)
    for row in rows(Order.id, Order.customer_id, Order.created_at, Order.cancelled_at, Order.test,
                    Order.financial_status, Order.fulfillment_status, where=Order.shop_id == shop_id):
        data.orders[row.customer_id].append(row)
    for row in rows(LineItem.order_id, LineItem.product_id, LineItem.variant_id, LineItem.title,
                    LineItem.variant_title, LineItem.quantity, LineItem.price, where=LineItem.shop_id == shop_id):
        data.lines[row.order_id].append(row)
    for collection, product in rows(CollectionProduct.collection_id, CollectionProduct.product_id,
                                    where=CollectionProduct.shop_id == shop_id):
        data.collections[collection].add(product)
    for row in rows(Checkout.customer_id, Checkout.phone, Checkout.started_at, Checkout.completed_at,
                    where=Checkout.shop_id == shop_id):
        if row.customer_id is not None:
            data.checkouts[row.customer_id].append(row)
        elif row.phone is not None:
            data.phone_checkouts[row.phone].append(row)
    for row in rows(Message.subscriber_id, Message.status, Message.sent_at, Message.campaign_id, Message.discount_code,
                    where=Message.shop_id == shop_id):
        data.messages[row.subscriber_id].append(row)
    for campaign_id, mode, code, body in rows(Campaign.id, Campaign.discount_mode, Campaign.discount_code,
                                              Campaign.body, where=Campaign.shop_id == shop_id):
        data.campaigns[campaign_id] = (mode, code, body)
    for subscriber_id, method, created_at, test, cancelled_at in session.execute(
            select(Attribution.subscriber_id, Attribution.method, Order.created_at, Order.test, Order.cancelled_at)
            .join(Order, Order.id == Attribution.order_id).where(Attribution.shop_id == shop_id)).all():
        if method == "discount_code" and not test and cancelled_at is None:
            data.discount_orders[subscriber_id].append(created_at)
    for subscriber_id, at in rows(Click.subscriber_id, Click.at, where=Click.shop_id == shop_id):
        data.clicks[subscriber_id].append(at)
    for subscriber_id, kind, at in rows(SubscriptionEvent.subscriber_id, SubscriptionEvent.kind, SubscriptionEvent.at,
                                        where=SubscriptionEvent.shop_id == shop_id):
        if kind in SUBSCRIBED_EVENT_KINDS:
            data.subscribed_events[subscriber_id].append(at)
    for list_id, phone in rows(StaticListEntry.list_id, StaticListEntry.phone,
                               where=StaticListEntry.shop_id == shop_id):
        data.list_phones[list_id].add(phone)
    for segment_id, definition in rows(Segment.id, Segment.definition, where=Segment.shop_id == shop_id):
        data.definitions[segment_id] = definition
    for row in rows(StorefrontEvent.subscriber_id, StorefrontEvent.name, StorefrontEvent.occurred_at,
                    StorefrontEvent.product_id, StorefrontEvent.collection_id,
                    where=StorefrontEvent.shop_id == shop_id):
        if row.subscriber_id is not None:
            data.storefront[row.subscriber_id].append(row)
    from kinnekt.subscribers.properties import types
    data.property_types = types(session, shop_id)
    for row in rows(SubscriberProperty.subscriber_id, SubscriberProperty.name_key, SubscriberProperty.text_value,
                    SubscriberProperty.number_value, SubscriberProperty.date_value,
                    where=SubscriberProperty.shop_id == shop_id):
        kind = data.property_types.get(row.name_key)
        if kind is not None:
            data.properties[row.subscriber_id, row.name_key] = {
                "text": row.text_value, "number": row.number_value, "date": row.date_value}[kind]
    return data


class _Evaluator:
    def __init__(self, data: LoadedShop, now: dt.datetime):
        self.data, self.now = data, now
        self.zone = periods.shop_zone(data.shop.timezone)

    # -- per-subscriber views
    def customer(self, sub):
        return self.data.customers.get(sub.customer_id) if sub.customer_id else None

    def orders(self, sub, *, counted: bool):
        if not sub.customer_id:
            return []
        return [o for o in self.data.orders.get(sub.customer_id, ()) if not o.test
                and (not counted or o.cancelled_at is None)]

    def in_range(self, at, start, end, end_inclusive=False) -> bool:
        return at is not None and (start is None or at >= start) and (
            end is None or (at <= end if end_inclusive else at < end))

    # -- rules
    def group(self, group: dict, sub) -> bool:
        results = (self.group(item, sub) if "rules" in item else self.rule(item, sub) for item in group["rules"])
        return all(results) if group["match"] == "all" else any(results)

    def rule(self, rule: dict, sub) -> bool:
        field, op, value = rule["field"], rule["op"], rule.get("value")
        if field == "last_visit":  # the newest page view
            visits = [e.occurred_at for e in self.data.storefront.get(sub.id, ()) if e.name == "page_viewed"]
            return self.date(max(visits) if visits else None, op, value)
        if field in DATE_FIELDS:
            owner, attribute = DATE_FIELDS[field]
            holder = sub if owner == "subscriber" else self.customer(sub)
            return self.date(getattr(holder, attribute) if holder else None, op, value)
        if field in STAGE_FIELDS:
            person = self.customer(sub)
            stage = getattr(person, STAGE_FIELDS[field]) if person else None
            hit = stage is not None and (stage in value if op in ("in", "not_in") else stage == value)
            return not hit if op in ("neq", "not_in") else hit
        if field in ("money_spent", "total_discounts", "average_money_spent", "number_of_orders"):
            person = self.customer(sub)
            spent = person.money_spent if person else Decimal(0)
            count = person.orders_count if person else 0
            x = {"money_spent": spent, "total_discounts": person.total_discounts if person else Decimal(0),
                 "number_of_orders": count, "average_money_spent": spent / count if count else Decimal(0)}[field]
            return self.number(x, op, value)
        if field in ("sent_count", "clicks_count"):
            return self.number(getattr(sub, field), op, value)
        if field == "subscription_source":
            same = value == "all" or sub.source == value
            return same if op == "eq" else not same
        if field in ("keyword", "country", "carrier", "city"):
            if field == "city":
                person = self.customer(sub)
                raw = person.city if person else None
            else:
                raw = getattr(sub, field)
            same = (lambda s: s.upper()) if field == "country" else fold
            x = same(raw) if raw is not None else None
            value = [same(v) for v in value] if op in ("in", "not_in") else same(value)
            hit = x is not None and (x in value if op in ("in", "not_in") else x == value)
            return not hit if op in ("neq", "not_in") else hit
        if field == "tags":
            tags = {fold(t) for t in self.data.tags.get(sub.customer_id, ())}
            hit = sub.customer_id is not None and fold(value) in tags
            return hit if op == "contains" else not hit
        if field == "fulfillment_status":
            hit = any(o.fulfillment_status == value for o in self.orders(sub, counted=False))
            return hit if op == "eq" else not hit
        if field == "payment_status":
            statuses = UNPAID if value == "unpaid" else (value,)
            hit = any(o.financial_status in statuses for o in self.orders(sub, counted=False))
            return hit if op == "eq" else not hit
        if field == "order_cancelled":
            hit = any(o.cancelled_at is not None for o in self.orders(sub, counted=False))
            return hit if value == "yes" else not hit
        if field in ("ordered_product", "ordered_collection", "line_items"):
            return self.purchase(rule, sub)
        if field == "event":
            return self.event(rule, sub)
        if field == "segment":
            definition = self.data.definitions.get(value)
            hit = definition is not None and self.group(normalise(definition), sub)
            return hit if op == "in" else not hit
        if field == "list":
            hit = sub.phone in self.data.list_phones.get(value, ())
            return hit if op == "in" else not hit
        if field == "property":
            return self.property(rule, sub)
        raise ValueError(f"unknown field {field}")

    def property(self, rule: dict, sub) -> bool:
        """A profile property rule, from segment-rules.md: a missing value satisfies only the negations."""
        key, op, value = rule["attribute"], rule["op"], rule.get("value")
        x = self.data.properties.get((sub.id, key))
        kind = self.data.property_types.get(key)
        positive = {"neq": "eq", "not_contains": "contains", "is_not_set": "is_set", "never": "is_set"}.get(op, op)
        if x is None:
            hit = False
        elif positive == "is_set":
            hit = True
        elif kind == "text":
            hit = fold(value) in fold(x) if positive == "contains" else fold(x) == fold(value)
        elif kind == "number":
            hit = self.number(x, positive, value)
        else:
            hit = self.calendar_date(x, positive, value)
        return hit if positive == op else not hit

    def calendar_date(self, day: dt.date, op: str, value) -> bool:
        """A positive date operator on a calendar date (a date property), in the shop's local days."""
        today = periods.local_today(self.now, self.zone)
        if op == "eq":
            first, end = periods.period_days(value, now=self.now, zone=self.zone)
            return (first is None or day >= first) and (end is None or day < end)
        if op in ("before", "after"):
            other = dt.date.fromisoformat(value)
            return day < other if op == "before" else day > other
        if op in ("within_last_days", "more_than_days_ago"):
            try:
                cutoff = today - dt.timedelta(days=value)
            except OverflowError:
                return op == "within_last_days"
            return day >= cutoff if op == "within_last_days" else day < cutoff
        if op == "anniversary_this_month":
            return day.month == today.month

        def celebrated(year: int) -> dt.date:  # Feb 29 is celebrated on Feb 28 in a year without one
            try:
                return day.replace(year=year)
            except ValueError:
                return dt.date(year, 2, 28)
        days = 1 if op == "anniversary_today" else value
        window = set()
        for offset in range(min(days, 366)):
            try:
                window.add(today + dt.timedelta(days=offset))
            except OverflowError:
                break
        return any(celebrated(d.year) == d for d in window)

    def date(self, at, op, value) -> bool:
        if op == "never":
            return at is None
        if op in ("eq", "neq"):
            start, end = periods.period_bounds(value, now=self.now, zone=self.zone)
            hit = self.in_range(at, start, end)
            return hit if op == "eq" else not hit
        if at is None:
            return False
        if op == "before":
            return at < periods.day_start(dt.date.fromisoformat(value), self.zone)
        if op == "after":
            return at >= periods.next_day_start(dt.date.fromisoformat(value), self.zone)
        cutoff = self.now - dt.timedelta(days=value)
        return at >= cutoff if op == "within_last_days" else at < cutoff

    @staticmethod
    def number(x, op, value) -> bool:
        if op == "between":
            lo, hi = (Decimal(str(v)) for v in value)
            return lo < x < hi
        return COMPARE[op](x, Decimal(str(value)))

    def purchase(self, rule: dict, sub) -> bool:
        field, op, value = rule["field"], rule["op"], rule["value"]
        lines = [line for order in self.orders(sub, counted=True) for line in self.data.lines.get(order.id, ())]
        if field == "ordered_product":
            wanted = {int(v) for v in value}
            hit = any(line.product_id in wanted for line in lines)
            return hit if op == "eq" else not hit
        if field == "ordered_collection":
            wanted = set().union(*(self.data.collections.get(int(v), set()) for v in value))
            hit = any(line.product_id in wanted for line in lines)
            return hit if op == "eq" else not hit
        attribute = rule["attribute"]
        positive = {"neq": "eq", "not_contains": "contains"}.get(op, op)

        def matches(line) -> bool:
            if attribute in ("product_id", "variant_id"):
                return getattr(line, attribute) == int(value)
            if attribute in ("product_title", "variant_title"):
                text = (line.title if attribute == "product_title" else line.variant_title)
                if text is None:
                    return False
                return fold(value) in fold(text) if positive == "contains" else fold(text) == fold(value)
            x = line.quantity if attribute == "quantity" else line.price
            return COMPARE[positive](x, Decimal(str(value)))

        hit = any(matches(line) for line in lines)
        return hit if op == positive else not hit

    def event(self, rule: dict, sub) -> bool:
        start, end, inclusive = periods.window_bounds(rule["within"], now=self.now, zone=self.zone)
        kind = rule["event"]
        if kind == "placed_order":
            times = [o.created_at for o in self.orders(sub, counted=True)]
        elif kind == "received_sms":
            times = [m.sent_at for m in self.data.messages.get(sub.id, ()) if m.status in ACCEPTED_MESSAGE_STATUSES]
        elif kind == "received_discount":
            times = [m.sent_at for m in self.data.messages.get(sub.id, ()) if m.status in ACCEPTED_MESSAGE_STATUSES
                     and self.carried_code(m)]
        elif kind == "used_discount":
            times = self.data.discount_orders.get(sub.id, [])
        elif kind == "clicked_link":
            times = self.data.clicks.get(sub.id, [])
        elif kind == "started_checkout":
            linked = [*(self.data.checkouts.get(sub.customer_id, ()) if sub.customer_id else ()),
                      *self.data.phone_checkouts.get(sub.phone, ())]
            times = [c.started_at for c in linked if c.completed_at is None]
        elif kind in BROWSING:
            times = [e.occurred_at for e in self.data.storefront.get(sub.id, ()) if e.name == BROWSING[kind]
                     and self.browsing_event_counts(rule, sub, e)]
        else:
            times = self.data.subscribed_events.get(sub.id, [])
        n = sum(1 for at in times if self.in_range(at, start, end, inclusive))
        performed = n >= rule["at_least"]
        return performed if rule["op"] == "performed" else not performed


    def browsing_event_counts(self, rule: dict, sub, event) -> bool:
        """A storefront event meets a browsing rule's id filters and was not followed by its `not_followed_by`."""
        products = {int(v) for v in rule.get("products", ())}
        collections = [int(v) for v in rule.get("collections", ())]
        if rule["event"] == "viewed_collection":
            if collections and event.collection_id not in collections:
                return False
        elif products or collections:
            in_collections = set().union(*(self.data.collections.get(c, set()) for c in collections))
            if event.product_id not in products and event.product_id not in in_collections:
                return False
        follower = rule.get("not_followed_by")
        if follower == "placed_order":
            return not any(order.created_at >= event.occurred_at and event.product_id is not None and
                           any(line.product_id == event.product_id for line in self.data.lines.get(order.id, ()))
                           for order in self.orders(sub, counted=True))
        if follower is not None:
            name, same_product = BROWSING.get(follower, "checkout_started"), follower == "added_to_cart"
            return not any(later.name == name and later.occurred_at >= event.occurred_at and
                           (not same_product or (event.product_id is not None and
                                                 later.product_id == event.product_id))
                           for later in self.data.storefront.get(sub.id, ()))
        return True

    def carried_code(self, message) -> bool:
        mode, code, body = self.data.campaigns.get(message.campaign_id, (None, None, ""))
        has_code = (mode == "unique" and message.discount_code is not None) or (mode == "shared" and code is not None)
        return has_code and "{discount_code}" in (body or "")


def members(data: LoadedShop, definition: dict, *, now: dt.datetime) -> list[int]:
    """Ids of the subscribed, unsuppressed subscribers matching the definition, evaluated row by row."""
    evaluator = _Evaluator(data, now)
    definition = normalise(definition)
    return [sub.id for sub in data.subscribers if sub.status == "subscribed" and sub.suppressed_at is None
            and evaluator.group(definition, sub)]
