"""The segment contract in the merchant's words: each field's label and category, the operators' labels, the
named values of choice fields, events and periods, country names, and the kind of value a rule takes (what the
builder's value input shows and how a summary writes the value)."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Mapping

from phonenumbers.geocoder import _region_display_name

from kinnekt.models.order import FULFILLMENT_STATUSES
from kinnekt.models.subscriber import SOURCE_LABELS
from kinnekt.segments.lifecycle import STAGE_LABELS
from kinnekt.segments.rules import COUNTRIES, FIELDS, PAYMENT_STATUSES, SOURCE_VALUES

_COUNTRY_NAMES_MISSING = {"AC": "Ascension Island", "TA": "Tristan da Cunha", "XK": "Kosovo"}
"""Codes the phone library names no country for."""


def country_name(code: str) -> str:
    """The English name of an ISO 3166-1 alpha-2 code ("DE" -> "Germany"); the code itself when unknown."""
    code = str(code or "").upper()
    return _COUNTRY_NAMES_MISSING.get(code) or (_region_display_name(code, "en") if code in COUNTRIES else "") \
        or code


# ---------------------------------------------------------------------------------------------- catalogue

CATEGORIES = ("Subscriber", "Customer", "Order status", "Engagement", "Storefront", "Events", "Membership")


@dataclass(frozen=True)
class FieldInfo:
    """How the builder shows one contract field: its label and the category it is listed under."""

    name: str
    label: str
    category: str


CATALOGUE: tuple[FieldInfo, ...] = (
    FieldInfo("subscription_source", "Subscription source", "Subscriber"),
    FieldInfo("keyword", "Keyword", "Subscriber"),
    FieldInfo("subscribed_at", "Subscribed", "Subscriber"),
    FieldInfo("country", "Phone country", "Subscriber"),
    FieldInfo("carrier", "Phone carrier", "Subscriber"),
    FieldInfo("property", "Profile property", "Subscriber"),
    FieldInfo("money_spent", "Money spent", "Customer"),
    FieldInfo("average_money_spent", "Average order value", "Customer"),
    FieldInfo("number_of_orders", "Number of orders", "Customer"),
    FieldInfo("total_discounts", "Total discounts", "Customer"),
    FieldInfo("last_order_created", "Last order", "Customer"),
    FieldInfo("first_order_created", "First order", "Customer"),
    FieldInfo("customer_created", "Became a customer", "Customer"),
    FieldInfo("city", "City", "Customer"),
    FieldInfo("tags", "Customer tags", "Customer"),
    FieldInfo("lifecycle_stage", "Lifecycle stage", "Customer"),
    FieldInfo("previous_lifecycle_stage", "Previous lifecycle stage", "Customer"),
    FieldInfo("expected_next_order", "Expected next order", "Customer"),
    FieldInfo("ordered_product", "Ordered product", "Customer"),
    FieldInfo("ordered_collection", "Ordered from collection", "Customer"),
    FieldInfo("line_items", "Ordered line item", "Customer"),
    FieldInfo("fulfillment_status", "Fulfillment status", "Order status"),
    FieldInfo("payment_status", "Payment status", "Order status"),
    FieldInfo("order_cancelled", "Has a cancelled order", "Order status"),
    FieldInfo("sent_count", "Texts received", "Engagement"),
    FieldInfo("clicks_count", "Link clicks", "Engagement"),
    FieldInfo("last_received_sms", "Last text received", "Engagement"),
    FieldInfo("last_clicked", "Last link click", "Engagement"),
    FieldInfo("last_visit", "Last store visit", "Storefront"),
    FieldInfo("event", "Event", "Events"),
    FieldInfo("segment", "Segment membership", "Membership"),
    FieldInfo("list", "List membership", "Membership"),
    FieldInfo("shopify_segment", "Shopify segment", "Membership"),
)
FIELD_INFO: dict[str, FieldInfo] = {info.name: info for info in CATALOGUE}

_NUMBER_OP_LABELS = {"eq": "is", "neq": "is not", "lt": "is less than", "lte": "is at most",
                     "gt": "is greater than", "gte": "is at least", "between": "is between"}
_DATE_OP_LABELS = {"eq": "was in", "neq": "was not in", "before": "was before", "after": "was after",
                   "within_last_days": "was within the last", "more_than_days_ago": "was more than",
                   "never": "never happened"}
_CHOICE_OP_LABELS = {"eq": "is", "neq": "is not", "in": "is any of", "not_in": "is none of"}
_OP_LABELS_BY_FIELD: dict[str, dict[str, str]] = {
    "tags": {"contains": "include", "not_contains": "do not include"},
    "fulfillment_status": {"eq": "of some order is", "neq": "of no order is"},
    "payment_status": {"eq": "of some order is", "neq": "of no order is"},
    "ordered_product": {"eq": "is any of", "neq": "is none of"},
    "ordered_collection": {"eq": "is any of", "neq": "is none of"},
    "line_items": {**_NUMBER_OP_LABELS, "contains": "contains", "not_contains": "does not contain"},
    "event": {"performed": "happened", "not_performed": "did not happen"},
    "segment": {"in": "is in segment", "not_in": "is not in segment"},
    "list": {"in": "is on list", "not_in": "is not on list"},
    "shopify_segment": {"in": "is in Shopify segment", "not_in": "is not in Shopify segment"},
}

_PROPERTY_OP_LABELS: dict[str, dict[str, str]] = {
    "text": {"eq": "is", "neq": "is not", "contains": "contains", "not_contains": "does not contain",
             "is_set": "is set", "is_not_set": "is not set"},
    "number": {**_NUMBER_OP_LABELS, "is_set": "is set", "is_not_set": "is not set"},
    "date": {"eq": "is in", "neq": "is not in", "before": "is before", "after": "is after",
             "within_last_days": "is within the last", "more_than_days_ago": "is more than", "never": "is not set",
             "is_set": "is set", "anniversary_today": "is today (any year)",
             "anniversary_next_days": "is in the next (any year)",
             "anniversary_this_month": "is this month (any year)"},
}
"""Operators of a profile property rule by the property's type; date ones "(any year)" compare month and day."""
PROPERTY_NO_VALUE = ("is_set", "is_not_set", "never", "anniversary_today", "anniversary_this_month")
DEFAULT_PROPERTY = "date:birthday"
"""A property row's attribute input is "<type>:<property key>", so its operators follow the property's type."""


def property_attribute(rule: Mapping[str, Any]) -> str:
    """The "<type>:<key>" a property rule's row shows, its type read from the rule (built-ins are known; a custom
    property's type is told by its operator or value, and set right by `load_choices` from the shop's properties)."""
    from kinnekt.segments.periods import NAMED_PERIODS
    from kinnekt.subscribers.properties import BUILT_INS, key_of
    key = key_of(rule.get("attribute") or "")
    op, value = rule.get("op"), rule.get("value")
    if key in BUILT_INS:
        kind = BUILT_INS[key]
    elif op in _PROPERTY_OP_LABELS["date"] and op not in _PROPERTY_OP_LABELS["text"]:
        kind = "date"
    elif op in _PROPERTY_OP_LABELS["number"] and op not in _PROPERTY_OP_LABELS["text"]:
        kind = "number"
    elif op in ("eq", "neq") and (isinstance(value, dict) or value in NAMED_PERIODS):
        kind = "date"
    elif op in ("eq", "neq") and isinstance(value, (int, float, str)) and \
            re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", str(value)):
        kind = "number"
    else:
        kind = "text"
    return f"{kind}:{key}"


def split_property(attribute: str | None) -> tuple[str, str]:
    """("<type>", "<key>") of a property row's attribute input."""
    kind, _, key = (attribute or "").partition(":")
    return (kind, key) if kind in _PROPERTY_OP_LABELS and key else ("text", attribute or "")


LINE_ITEM_ATTRIBUTES = {"product_title": "Product title", "variant_title": "Variant title",
                        "product_id": "Product ID", "variant_id": "Variant ID", "quantity": "Quantity",
                        "price": "Price"}
EVENT_LABELS = {"placed_order": "Order placed", "received_sms": "Text received", "clicked_link": "Link clicked",
                "started_checkout": "Checkout abandoned", "subscribed": "Subscribed",
                "received_discount": "Discount code received", "used_discount": "Discount code used",
                "visited": "Visited the store", "viewed_product": "Viewed a product",
                "viewed_collection": "Viewed a collection", "added_to_cart": "Added to cart"}
FOLLOWER_LABELS = {"placed_order": "ordered it after", "added_to_cart": "added it to the cart after",
                   "started_checkout": "started a checkout after"}
"""`not_followed_by` values as the end of "… and not …": "Viewed a product and not ordered it after"."""
PERIOD_LABELS = {"all_time": "All time", "today": "Today", "yesterday": "Yesterday", "last_7_days": "Last 7 days",
                 "last_30_days": "Last 30 days", "last_90_days": "Last 90 days", "custom": "Custom range"}
WINDOW_LABELS = {**{k: v for k, v in PERIOD_LABELS.items() if k != "custom"},
                 "last_days": "Last N days (from now)", "custom": "Custom range"}
CHOICE_VALUES: dict[str, dict[str, str]] = {
    "subscription_source": {"all": "Any source", **{s: SOURCE_LABELS[s] for s in SOURCE_VALUES if s != "all"}},
    "fulfillment_status": {s: s.replace("_", " ").capitalize() for s in FULFILLMENT_STATUSES},
    "payment_status": {s: s.replace("_", " ").capitalize() for s in PAYMENT_STATUSES},
    "order_cancelled": {"yes": "Yes", "no": "No"},
    "lifecycle_stage": dict(STAGE_LABELS),
    "previous_lifecycle_stage": dict(STAGE_LABELS),
}
"""The fixed values of choice fields, in the merchant's words."""

MONEY_FIELDS = ("money_spent", "average_money_spent", "total_discounts")
WHOLE_FIELDS = ("number_of_orders", "sent_count", "clicks_count")


def ops_for(field: str, attribute: str | None = None) -> list[tuple[str, str]]:
    """(operator, label) pairs a field offers (for line_items: those of its attribute), in contract order."""
    spec = FIELDS.get(field)
    if spec is None:
        return []
    ops = spec.ops
    if spec.kind == "line_items":
        ops = spec.attributes.get(attribute or "", spec.attributes["product_title"])
    if spec.kind == "property":
        kind = split_property(attribute)[0]
        return [(op, _PROPERTY_OP_LABELS[kind].get(op, op)) for op in spec.attributes[kind]]
    labels = _OP_LABELS_BY_FIELD.get(field) or {"date": _DATE_OP_LABELS, "number": _NUMBER_OP_LABELS}.get(
        spec.kind, _CHOICE_OP_LABELS)
    return [(op, labels.get(op, op)) for op in ops]


def widget_for(field: str, op: str, attribute: str | None = None) -> str:
    """The kind of value input a rule row shows for this field, operator (and line item attribute)."""
    spec = FIELDS.get(field)
    if spec is None:
        return "none"
    if spec.kind == "property":
        kind = split_property(attribute)[0]
        if op in PROPERTY_NO_VALUE:
            return "none"
        if kind == "date":
            return {"eq": "period", "neq": "period", "before": "date", "after": "date"}.get(op, "days")
        if kind == "number":
            return "number_range" if op == "between" else "number"
        return "text"
    if spec.kind == "date":
        return {"eq": "period", "neq": "period", "before": "date", "after": "date", "never": "none"}.get(op, "days")
    if field in MONEY_FIELDS:
        return "money_range" if op == "between" else "money"
    if field in WHOLE_FIELDS:
        return "number_range" if op == "between" else "number"
    if field in CHOICE_VALUES:
        return "choice_list" if op in ("in", "not_in") else "choice"
    if field == "country":
        return "country_list" if op in ("in", "not_in") else "country"
    if field == "carrier":
        return "text_list" if op in ("in", "not_in") else "text"
    if field == "ordered_product":
        return "products"
    if field == "ordered_collection":
        return "collections"
    if field == "line_items":
        return {"product_id": "id", "variant_id": "id", "quantity": "number", "price": "money"}.get(
            attribute or "", "text")
    return {"keyword": "keyword", "event": "event", "segment": "segment", "list": "list",
            "shopify_segment": "shopify_segment"}.get(field, "text")


def refreshed_words(refreshed_at: dt.datetime | None) -> str:
    """When a Shopify segment's members were last read, in words: "members read Dec 7, 2026 17:02 UTC"."""
    if refreshed_at is None:
        return "members not read yet"
    moment = refreshed_at.astimezone(dt.timezone.utc)
    return f"members read {moment:%b} {moment.day}, {moment.year} {moment:%H:%M} UTC"
