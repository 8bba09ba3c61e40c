"""Segment definitions: check one against the contract (docs/segment-rules.md) and normalise it.

`validate` is what every writer (builder UI, JSON API, CLI, import) calls before saving: it returns
a normalised copy or raises `DefinitionError` listing every problem with its JSON path. `normalise`
is the same check without the database (it cannot see whether referenced segments and lists exist);
the compiler runs it on whatever it is given.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field as dataclass_field
from decimal import Decimal
from typing import Any, Callable, Mapping

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.casefold import fold
from kinnekt.db import MONEY_SCALE
from kinnekt.models import Segment, ShopifySegment, StaticList
from kinnekt.models.order import FULFILLMENT_STATUSES
from kinnekt.models.segment import iter_rules
from kinnekt.models.subscriber import SOURCES
from kinnekt.segments.periods import NAMED_PERIODS
from kinnekt.subscribers.property_catalogue import BUILT_INS as BUILT_IN_PROPERTIES

Definition = dict[str, Any]
"""A segment definition as JSON data: a group `{"match", "rules"}` at the root."""

MAX_GROUP_ITEMS = 50
MAX_DEPTH = 4  # the root group is depth 1
MAX_RULES = 100
MAX_LIST_ITEMS = 250
"""Ids or codes in one rule's list; with MAX_RULES this keeps a statement under PostgreSQL's bind limit."""
MAX_NUMBER = 10**12
"""Largest magnitude of a number value (the contract's example bound): money in 1/10000 units stays far inside a
64-bit integer; `average_money_spent` guards its `value × orders` product against overflow (see the compiler)."""
MONEY_PLACES = len(str(MONEY_SCALE)) - 1  # money is stored to 1/10000: four decimal places
MAX_ID = 2**63 - 1
MAX_ANNIVERSARY_DAYS = 366
"""Largest N of a date property's `anniversary_next_days` (a year and a day: every date's anniversary)."""
MAX_PROPERTY_NAME = 64
"""Ids are 64-bit integers in the database (Shopify's and ours)."""

SOURCE_VALUES = ("all",) + SOURCES
PAYMENT_STATUSES = ("authorized", "paid", "partially_refunded", "partially_paid", "pending", "refunded",
                    "unpaid", "voided")
UNPAID = ("pending", "authorized", "partially_paid", "expired")
"""Shopify financial statuses that `payment_status eq unpaid` stands for."""
STAGES = ("loyal", "high_potential", "nurture_needed", "dormant", "churned")
"""The customer lifecycle stages, best first (computed by kinnekt/segments/lifecycle.py): the values of the
`lifecycle_stage` rules, and the dashboard's order."""
BROWSING_EVENTS = ("visited", "viewed_product", "viewed_collection", "added_to_cart")
"""Event rules on what the subscriber did on the storefront (the web pixel's events, kinnekt/models/storefront.py)."""
EVENTS = ("placed_order", "received_sms", "clicked_link", "started_checkout", "subscribed", "received_discount",
          "used_discount") + BROWSING_EVENTS
EVENT_FILTERS: dict[str, tuple[str, ...]] = {
    "viewed_product": ("products", "collections"), "added_to_cart": ("products", "collections"),
    "viewed_collection": ("collections",),
}
"""The id filters a browsing event rule may take: `products` (the event's product is one of them), `collections`
(its product is in one of them now; for `viewed_collection`, the collection viewed is one of them)."""
FOLLOWERS: dict[str, tuple[str, ...]] = {
    "viewed_product": ("placed_order", "added_to_cart", "started_checkout"),
    "added_to_cart": ("placed_order", "started_checkout"),
}
"""What may follow a browsing event to take it out of the count (`not_followed_by`): an order of the same
product, an add to cart of the same product, a checkout started, each at or after the event."""
BROWSING_FIELDS = ("last_visit",)
"""Date fields read from storefront events."""
NUMBER_OPS = ("eq", "neq", "lt", "lte", "gt", "gte")
RELATIVE_DATE_OPS = ("within_last_days", "more_than_days_ago")
ANNIVERSARY_OPS = ("anniversary_today", "anniversary_next_days", "anniversary_this_month")

# ISO 3166-1 alpha-2: every region phonenumbers knows (which is what a subscriber's country can be,
# including AC, TA and XK) plus the assigned codes that have no telephone numbering of their own.
COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS) | {"AQ", "BV", "GS", "HM", "PN", "TF", "UM"}


class DefinitionError(ValueError):
    """A definition that breaks the contract; `errors` lists every problem as {"path", "message"}."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{e['path'] or '(definition)'}: {e['message']}" for e in self.errors))


class _Invalid(Exception):
    """Raised by a value check: (sub-path, message) pairs relative to the value being checked."""

    def __init__(self, message: str | None = None, at: str = "", *, problems: list[tuple[str, str]] | None = None):
        self.problems = problems if problems is not None else [(at, message or "is invalid")]
        super().__init__(self.problems)


Check = Callable[[Any], Any]
"""A value check: returns the normalised value or raises _Invalid."""


# ---------------------------------------------------------------------------------------------- values

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decimal(value: Any, *, strings: bool) -> Decimal:
    """A finite Decimal from a JSON number (or a decimal string when `strings`)."""
    if _is_number(value):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    elif strings and isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value.strip()):
        number = Decimal(value.strip())
    else:
        raise _Invalid("must be a number" + (" or a decimal string" if strings else ""))
    if not number.is_finite():
        raise _Invalid("must be a finite number")
    if abs(number) > MAX_NUMBER:
        raise _Invalid(f"must be between -{MAX_NUMBER:,} and {MAX_NUMBER:,}")
    return number


def money(value: Any) -> str:
    """A money amount (JSON number or decimal string, at most four decimal places) as a canonical string."""
    number = _decimal(value, strings=True)
    if number != number.quantize(Decimal(1).scaleb(-MONEY_PLACES)):
        raise _Invalid(f"must have at most {MONEY_PLACES} decimal places")
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


def whole(value: Any) -> int:
    """A whole number (a JSON number without a fractional part)."""
    number = _decimal(value, strings=False)
    if number != number.to_integral_value():
        raise _Invalid("must be a whole number")
    return int(number)


def number(value: Any) -> int | float:
    """Any JSON number (not a string): an integer stays one, a fraction is kept as given (`2.5`)."""
    decimal = _decimal(value, strings=False)
    if decimal == decimal.to_integral_value():
        return int(decimal)
    return value


def positive_whole(value: Any) -> int:
    """A whole number of at least 1."""
    number = whole(value)
    if number < 1:
        raise _Invalid("must be a whole number of at least 1")
    return number


def between(bound: Check) -> Check:
    """`[lo, hi]` with lo < hi, each checked by `bound`."""
    def check(value: Any) -> list:
        if not isinstance(value, list) or len(value) != 2:
            raise _Invalid("must be a list of two numbers [lo, hi]")
        problems, pair = [], []
        for i, item in enumerate(value):
            try:
                pair.append(bound(item))
            except _Invalid as exc:
                problems += [(f"[{i}]{at}", message) for at, message in exc.problems]
        if problems:
            raise _Invalid(problems=problems)
        if Decimal(pair[0]) >= Decimal(pair[1]):
            raise _Invalid("lo must be less than hi")
        return pair
    return check


def iso_date(value: Any) -> str:
    """A calendar date written YYYY-MM-DD."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise _Invalid("must be a date written YYYY-MM-DD")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"{value} is not a calendar date") from None
    return value


def period(value: Any) -> str | dict:
    """A period word or `{"from": date, "to": date}` with from ≤ to."""
    if isinstance(value, str):
        if value not in NAMED_PERIODS:
            raise _Invalid(f"must be one of {', '.join(NAMED_PERIODS)} or {{\"from\", \"to\"}}")
        return value
    if not isinstance(value, dict):
        raise _Invalid(f"must be one of {', '.join(NAMED_PERIODS)} or {{\"from\", \"to\"}}")
    problems, out = [], {}
    for key in value:
        if key not in ("from", "to"):
            problems.append((f".{key}", f"unknown key '{key}'"))
    for key in ("from", "to"):
        if key not in value:
            problems.append((f".{key}", "is required"))
            continue
        try:
            out[key] = iso_date(value[key])
        except _Invalid as exc:
            problems += [(f".{key}{at}", message) for at, message in exc.problems]
    if "from" in out and "to" in out and out["from"] > out["to"]:
        problems.append((".from", "must not be after 'to'"))
    if problems:
        raise _Invalid(problems=problems)
    return out


def event_window(value: Any) -> str | dict:
    """An event rule's `within`: a period, or `{"last_days": N}`."""
    if isinstance(value, dict) and "last_days" in value:
        problems = [(f".{key}", f"unknown key '{key}'") for key in value if key != "last_days"]
        try:
            days = positive_whole(value["last_days"])
        except _Invalid as exc:
            problems += [(f".last_days{at}", message) for at, message in exc.problems]
        if problems:
            raise _Invalid(problems=problems)
        return {"last_days": days}
    try:
        return period(value)
    except _Invalid as exc:
        if isinstance(value, dict):
            raise
        raise _Invalid(exc.problems[0][1] + " or {\"last_days\": N}") from None


def choice(values: tuple[str, ...]) -> Check:
    """One of a fixed set of words."""
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in values:
            raise _Invalid(f"must be one of {', '.join(values)}")
        return value
    return check


def text(transform: Callable[[str], str] = str.casefold) -> Check:
    """A non-empty string, trimmed, then case-folded (`str.casefold`: the contract's case-insensitive)."""
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        value = value.strip()
        if not value:
            raise _Invalid("must not be empty")
        return transform(value)
    return check


def _upper_if_same(word: str) -> str:
    """A keyword upper-cased, as keywords are shown, where that folds alike (`ı` does not: it stays as typed)."""
    return word.upper() if fold(word.upper()) == fold(word) else word


def country(value: Any) -> str:
    """An ISO 3166-1 alpha-2 country code (upper-cased)."""
    if not isinstance(value, str) or value.strip().upper() not in COUNTRIES:
        raise _Invalid("must be an ISO 3166-1 alpha-2 country code")
    return value.strip().upper()


def shopify_id(value: Any) -> str:
    """The numeric part of a Shopify GID, as a string of digits (integers are accepted)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise _Invalid("must be an id: a string of digits")
    if not 1 <= number <= MAX_ID:
        raise _Invalid("is not a valid id")
    return str(number)


SHOPIFY_SEGMENT_GID = re.compile(r"gid://shopify/Segment/([0-9]+)")


def shopify_segment_id(value: Any) -> str:
    """A Shopify customer segment: its GID (`gid://shopify/Segment/N`) or N, normalised to N as a string of digits
    (as every Shopify id of the contract)."""
    if isinstance(value, str) and (match := SHOPIFY_SEGMENT_GID.fullmatch(value.strip())):
        value = match.group(1)
    try:
        return shopify_id(value)
    except _Invalid:
        raise _Invalid("must be a Shopify segment: gid://shopify/Segment/N or the digits N") from None


def record_id(value: Any) -> int:
    """The id of one of the shop's own records (segment, static list): an integer or a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise _Invalid("must be an id")
    if not 1 <= number <= MAX_ID:
        raise _Invalid("is not a valid id")
    return number


def list_of(item: Check) -> Check:
    """A non-empty list (at most MAX_LIST_ITEMS) of values checked by `item`, duplicates dropped."""
    def check(value: Any) -> list:
        if not isinstance(value, list):
            raise _Invalid("must be a list")
        if not value:
            raise _Invalid("must not be empty")
        if len(value) > MAX_LIST_ITEMS:
            raise _Invalid(f"holds at most {MAX_LIST_ITEMS} items")
        problems, out = [], []
        for i, element in enumerate(value):
            try:
                normalised = item(element)
            except _Invalid as exc:
                problems += [(f"[{i}]{at}", message) for at, message in exc.problems]
                continue
            if normalised not in out:
                out.append(normalised)
        if problems:
            raise _Invalid(problems=problems)
        return out
    return check


# ---------------------------------------------------------------------------------------------- fields

@dataclass(frozen=True)
class Field:
    """One field of the contract: its kind, its operators with their value checks (None: no value)."""

    kind: str
    ops: Mapping[str, Check | None]
    extras: tuple[str, ...] = ()
    attributes: Mapping[str, Mapping[str, Check]] = dataclass_field(default_factory=dict)


def _number_ops(value: Check, *, with_between: bool = True) -> dict[str, Check]:
    ops: dict[str, Check] = {op: value for op in NUMBER_OPS}
    if with_between:
        ops["between"] = between(value)
    return ops


DATE_OPS: dict[str, Check | None] = {
    "eq": period, "neq": period, "before": iso_date, "after": iso_date,
    "within_last_days": positive_whole, "more_than_days_ago": positive_whole, "never": None,
}
_TITLE_OPS = {op: text() for op in ("eq", "neq", "contains", "not_contains")}
_ID_OPS = {"eq": shopify_id, "neq": shopify_id}


def anniversary_days(value: Any) -> int:
    """N of "the anniversary is in the next N days": a whole number from 1 to MAX_ANNIVERSARY_DAYS."""
    days = positive_whole(value)
    if days > MAX_ANNIVERSARY_DAYS:
        raise _Invalid(f"must be at most {MAX_ANNIVERSARY_DAYS}")
    return days


_SET_OPS: dict[str, Check | None] = {"is_set": None, "is_not_set": None}
PROPERTY_OPS: dict[str, dict[str, Check | None]] = {
    "text": {**_TITLE_OPS, **_SET_OPS},
    "number": {**_number_ops(money), **_SET_OPS},
    "date": {**DATE_OPS, "is_set": None, "anniversary_today": None, "anniversary_next_days": anniversary_days,
             "anniversary_this_month": None},
}
"""The operators of a `property` rule by the property's type, with their value checks (None: no value)."""

FIELDS: dict[str, Field] = {
    **{name: Field("date", DATE_OPS) for name in (
        "last_order_created", "first_order_created", "customer_created", "subscribed_at", "last_received_sms",
        "last_clicked", "expected_next_order", "last_visit")},
    **{name: Field("number", _number_ops(money)) for name in (
        "money_spent", "average_money_spent", "total_discounts")},
    **{name: Field("number", _number_ops(whole)) for name in ("number_of_orders", "sent_count", "clicks_count")},
    "subscription_source": Field("choice", {op: choice(SOURCE_VALUES) for op in ("eq", "neq")}),
    "keyword": Field("choice", {op: text(_upper_if_same) for op in ("eq", "neq")}),
    "country": Field("choice", {"eq": country, "neq": country,
                                "in": list_of(country), "not_in": list_of(country)}),
    "carrier": Field("choice", {"eq": text(), "neq": text(), "in": list_of(text()), "not_in": list_of(text())}),
    "city": Field("choice", {op: text() for op in ("eq", "neq")}),
    "tags": Field("choice", {op: text() for op in ("contains", "not_contains")}),
    "fulfillment_status": Field("choice", {op: choice(FULFILLMENT_STATUSES) for op in ("eq", "neq")}),
    "payment_status": Field("choice", {op: choice(PAYMENT_STATUSES) for op in ("eq", "neq")}),
    "order_cancelled": Field("choice", {"eq": choice(("yes", "no"))}),
    **{name: Field("choice", {"eq": choice(STAGES), "neq": choice(STAGES),
                              "in": list_of(choice(STAGES)), "not_in": list_of(choice(STAGES))})
       for name in ("lifecycle_stage", "previous_lifecycle_stage")},
    "ordered_product": Field("purchase", {op: list_of(shopify_id) for op in ("eq", "neq")}),
    "ordered_collection": Field("purchase", {op: list_of(shopify_id) for op in ("eq", "neq")}),
    # line_items: `ops` is the union; the operators a rule may use depend on its attribute.
    "line_items": Field("line_items", {**_TITLE_OPS, **_number_ops(money, with_between=False)},
                        extras=("attribute",), attributes={
                            "product_id": _ID_OPS, "variant_id": _ID_OPS,
                            "product_title": _TITLE_OPS, "variant_title": _TITLE_OPS,
                            "quantity": _number_ops(number, with_between=False),
                            "price": _number_ops(money, with_between=False),
                        }),
    "event": Field("event", {"performed": None, "not_performed": None},
                   extras=("event", "within", "at_least", "products", "collections", "not_followed_by")),
    "segment": Field("membership", {"in": record_id, "not_in": record_id}),
    "shopify_segment": Field("membership", {"in": shopify_segment_id, "not_in": shopify_segment_id}),
    "list": Field("membership", {"in": record_id, "not_in": record_id}),
    # property: `ops` is the union; the operators a rule may use depend on its property's type (`attributes`).
    "property": Field("property", {op: check for ops in PROPERTY_OPS.values() for op, check in ops.items()},
                      extras=("attribute",), attributes=PROPERTY_OPS),
}
"""The whitelist: every field of the contract. The compiler has one SQL builder per name here."""

_EXTRA_OWNER = {"attribute": "line_items and property", "event": "event", "within": "event", "at_least": "event",
                "products": "event", "collections": "event", "not_followed_by": "event"}


# ---------------------------------------------------------------------------------------------- walking

def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@dataclass
class _Walk:
    """State of one check: errors found, rules seen, and (with a session) how to look references up."""

    errors: list[dict[str, str]] = dataclass_field(default_factory=list)
    rule_count: int = 0
    references: "_References | None" = None
    properties: Mapping[str, str] | None = None  # the shop's property keys -> types; None: not known here

    def error(self, path: str, message: str) -> None:
        self.errors.append({"path": path, "message": message})


def _check_group(node: Any, path: str, depth: int, walk: _Walk) -> dict:
    """Check a group and everything under it; returns its normalised form."""
    out: dict = {}
    if not isinstance(node, dict):
        walk.error(path, 'must be a group {"match": "all" | "any", "rules": [...]}')
        return out
    if depth == MAX_DEPTH + 1:
        walk.error(path, f"groups nest at most {MAX_DEPTH} deep (the root is depth 1)")
    for key in node:
        if key not in ("match", "rules"):
            walk.error(_key(path, key), f"unknown key '{key}'")
    if "match" not in node:
        walk.error(_key(path, "match"), "is required")
    elif node["match"] not in ("all", "any"):
        walk.error(_key(path, "match"), "must be 'all' or 'any'")
    else:
        out["match"] = node["match"]
    items = node.get("rules")
    rules_path = _key(path, "rules")
    if "rules" not in node:
        walk.error(rules_path, "is required")
        return out
    if not isinstance(items, list):
        walk.error(rules_path, "must be a list")
        return out
    if not 1 <= len(items) <= MAX_GROUP_ITEMS:
        walk.error(rules_path, f"a group holds 1 to {MAX_GROUP_ITEMS} items (this one has {len(items)})")
    out["rules"] = []
    for i, item in enumerate(items):
        item_path = f"{rules_path}[{i}]"
        if isinstance(item, dict) and "field" in item:
            out["rules"].append(_check_rule(item, item_path, walk))
        elif isinstance(item, dict) and ("match" in item or "rules" in item):
            out["rules"].append(_check_group(item, item_path, depth + 1, walk))
        else:
            walk.error(item_path, 'must be a rule {"field", "op", "value"} or a group {"match", "rules"}')
    return out


def _check_value(check: Check, value: Any, path: str, walk: _Walk) -> Any:
    try:
        return check(value)
    except _Invalid as exc:
        for at, message in exc.problems:
            walk.error(path + at, message)
        return None


def _check_rule(node: dict, path: str, walk: _Walk) -> dict:
    """Check one rule against its field's whitelist entry; returns its normalised form."""
    walk.rule_count += 1
    if walk.rule_count == MAX_RULES + 1:
        walk.error(path, f"a definition holds at most {MAX_RULES} rules")
    name = node["field"]
    spec = FIELDS.get(name) if isinstance(name, str) else None
    allowed = {"field", "op", "value"} | set(spec.extras if spec else ())
    for key in node:
        if key in allowed or (spec is None and key in _EXTRA_OWNER):
            continue
        owner = _EXTRA_OWNER.get(key)
        walk.error(_key(path, key), f"'{key}' is only allowed on {owner} rules" if owner else f"unknown key '{key}'")
    if spec is None:
        walk.error(_key(path, "field"), f"unknown field {name!r}" if isinstance(name, str) else "must be a field name")
        return dict(node)
    out: dict = {"field": name}

    ops = spec.ops
    if spec.kind == "line_items":
        attribute = node.get("attribute")
        if "attribute" not in node:
            walk.error(_key(path, "attribute"), "is required")
            return out
        if not isinstance(attribute, str) or attribute not in spec.attributes:
            walk.error(_key(path, "attribute"), f"must be one of {', '.join(spec.attributes)}")
            return out
        ops = spec.attributes[attribute]
    if spec.kind == "property":
        ops = _property_ops(node, path, out, walk)
        if ops is None:
            return out
    if spec.kind == "event":
        _check_event_keys(node, path, out, walk)

    op = node.get("op")
    if "op" not in node:
        walk.error(_key(path, "op"), "is required")
        return out
    if not isinstance(op, str) or op not in ops:
        subject = f"{name} {node['attribute']}" if spec.kind == "line_items" else name
        if spec.kind == "property":
            subject = f"the {out['type']} property {out['attribute']!r}" if out.get("type") else \
                f"property {out['attribute']!r}"
        walk.error(_key(path, "op"), f"{op!r} is not an operator of {subject} (allowed: {', '.join(ops)})")
        return out
    out["op"] = op
    if spec.kind == "line_items":
        out["attribute"] = node["attribute"]
    if spec.kind == "property":
        out = {"field": name, "attribute": out["attribute"], "op": op}
        if ops is spec.ops:  # a custom property of a shop not known here: its value is checked where it is
            if "value" in node:
                out["value"] = node["value"]
            return out

    check = ops[op]
    if check is None:
        if "value" in node:
            walk.error(_key(path, "value"), f"'{op}' takes no value; omit 'value'")
    elif "value" not in node:
        walk.error(_key(path, "value"), "is required")
    else:
        out["value"] = _check_value(check, node["value"], _key(path, "value"), walk)

    if spec.kind == "membership" and walk.references is not None and out.get("value") is not None:
        message = walk.references.check(name, out["value"])
        if message:
            walk.error(_key(path, "value"), message)
    return out


def _property_ops(node: dict, path: str, out: dict, walk: _Walk) -> Mapping[str, Check | None] | None:
    """A `property` rule's attribute (normalised to its folded name) and the operators of its type.

    With the shop's properties known, an unknown name is an error; without them (no database), the
    built-ins are still typed and a custom name gets the union of the operators (its value unchecked).
    """
    attribute = node.get("attribute")
    if "attribute" not in node:
        walk.error(_key(path, "attribute"), "is required")
        return None
    if not isinstance(attribute, str) or not attribute.strip() or len(attribute) > MAX_PROPERTY_NAME:
        walk.error(_key(path, "attribute"), "must be the name of a profile property")
        return None
    key = fold(attribute)
    known = walk.properties if walk.properties is not None else BUILT_IN_PROPERTIES
    out["attribute"] = key
    if key in known:
        out["type"] = known[key]
        return FIELDS["property"].attributes[known[key]]
    if walk.properties is not None:
        names = ", ".join(sorted(walk.properties))
        walk.error(_key(path, "attribute"), f"there is no property {attribute!r} in this shop (it has: {names})")
        return None
    return FIELDS["property"].ops


def _check_event_keys(node: dict, path: str, out: dict, walk: _Walk) -> None:
    """The keys only event rules have: `event`, `within` (default all_time), `at_least` (default 1)."""
    if "event" not in node:
        walk.error(_key(path, "event"), "is required")
    elif node["event"] not in EVENTS:
        walk.error(_key(path, "event"), f"must be one of {', '.join(EVENTS)}")
    else:
        out["event"] = node["event"]
    out["within"] = _check_value(event_window, node.get("within", "all_time"), _key(path, "within"), walk)
    out["at_least"] = _check_value(positive_whole, node.get("at_least", 1), _key(path, "at_least"), walk)
    event = out.get("event")
    for key in ("products", "collections"):
        if key not in node:
            continue
        if event is not None and key not in EVENT_FILTERS.get(event, ()):
            takers = [name for name, keys in EVENT_FILTERS.items() if key in keys]
            walk.error(_key(path, key), f"'{key}' is only allowed on the events {', '.join(takers)}")
        else:
            out[key] = _check_value(list_of(shopify_id), node[key], _key(path, key), walk)
    if "not_followed_by" in node:
        follower = node["not_followed_by"]
        if event is not None and event not in FOLLOWERS:
            walk.error(_key(path, "not_followed_by"),
                       f"'not_followed_by' is only allowed on the events {', '.join(FOLLOWERS)}")
        elif event is not None and follower not in FOLLOWERS[event]:
            walk.error(_key(path, "not_followed_by"), f"must be one of {', '.join(FOLLOWERS[event])}")
        elif event is not None:
            out["not_followed_by"] = follower


def _walk_definition(definition: Any, walk: _Walk) -> Definition:
    if isinstance(definition, dict) and "field" in definition:
        walk.error("", 'the definition must be a group {"match": "all" | "any", "rules": [...]}, not a rule')
        return {}
    return _check_group(definition, "", 1, walk)


def normalise(definition: Any, *, properties: Mapping[str, str] | None = None) -> Definition:
    """Check a definition's shape, fields, operators and values (no database); return the normalised copy.

    `properties` (the shop's property keys -> types, `kinnekt.subscribers.properties.types`) lets `property`
    rules on custom properties be checked too; without it only the built-ins are.
    """
    walk = _Walk(properties=properties)
    out = _walk_definition(definition, walk)
    if walk.errors:
        raise DefinitionError(walk.errors)
    return out


# ---------------------------------------------------------------------------------------------- references

def segment_references(definition: Any) -> list[int]:
    """Ids of the segments a definition's `segment` rules name (stored definitions are read leniently)."""
    ids = []
    for rule in iter_rules(definition):
        if rule.get("field") == "segment":
            try:
                ids.append(record_id(rule.get("value")))
            except _Invalid:
                pass
    return ids


class _References:
    """Looks segment and list ids up in one shop and follows stored definitions to find cycles."""

    def __init__(self, session: OrmSession, shop_id: int, segment_id: int | None):
        self.session, self.shop_id, self.segment_id = session, shop_id, segment_id
        self._definitions: dict[int, Any] = {}
        self._no_cycle: set[int] = set()  # segments already followed to the end without finding a loop

    def stored_definition(self, segment_id: int) -> Any:
        """The stored definition of one of the shop's segments, or None when there is no such segment."""
        if segment_id not in self._definitions:
            self._definitions[segment_id] = self.session.scalar(
                select(Segment.definition).where(Segment.shop_id == self.shop_id, Segment.id == segment_id))
        return self._definitions[segment_id]

    def check(self, field: str, target: int) -> str | None:
        """An error message for a `segment`/`list` value, or None when it is fine."""
        if field == "list":
            found = self.session.scalar(
                select(StaticList.id).where(StaticList.shop_id == self.shop_id, StaticList.id == target))
            return None if found is not None else f"there is no list {target} in this shop"
        if field == "shopify_segment":
            found = self.session.scalar(
                select(ShopifySegment.id).where(ShopifySegment.shop_id == self.shop_id,
                                                ShopifySegment.shopify_id == int(target),
                                                ShopifySegment.gone_at.is_(None)))
            return None if found is not None else (
                f"there is no Shopify segment {target} in this shop (refresh the Shopify segments to see new ones)")
        if target == self.segment_id:
            return "a segment cannot refer to itself"
        if self.stored_definition(target) is None:
            return f"there is no segment {target} in this shop"
        chain = self._cycle_from(target, [target])
        if chain is None:
            return None
        names = " → ".join("this segment" if s == self.segment_id else str(s) for s in chain)
        if chain[-1] == self.segment_id:
            return f"segment {target} refers back to this segment ({names})"
        return f"segment {target} leads to a loop of segments ({names})"

    def _cycle_from(self, current: int, chain: list[int]) -> list[int] | None:
        """A chain of references from `current` back to the segment being saved or into a loop, if any."""
        for ref in segment_references(self.stored_definition(current)):
            if ref == self.segment_id or ref in chain:
                return chain + [ref]
            if ref in self._no_cycle or self.stored_definition(ref) is None:
                continue
            found = self._cycle_from(ref, chain + [ref])
            if found:
                return found
        self._no_cycle.add(current)
        return None


def validate(definition: Any, *, shop_id: int, session: OrmSession, segment_id: int | None = None) -> Definition:
    """Check a definition against the contract for one shop and return its normalised copy.

    Raises DefinitionError listing every error. `segment_id` is the segment being saved (None for a
    new one), so that references back to it through other segments are caught.
    """
    from kinnekt.subscribers.property_catalogue import types
    walk = _Walk(references=_References(session, shop_id, segment_id), properties=types(session, shop_id))
    out = _walk_definition(definition, walk)
    if walk.errors:
        raise DefinitionError(walk.errors)
    return out


# ---------------------------------------------------------------------------------------------- time

def _rule_depends_on_now(rule: dict) -> bool:
    field, op = rule.get("field"), rule.get("op")
    spec = FIELDS.get(field) if isinstance(field, str) else None
    if spec is None:
        return False
    if spec.kind == "date":
        if op in RELATIVE_DATE_OPS:
            return True
        return op in ("eq", "neq") and isinstance(rule.get("value"), str) and rule["value"] != "all_time"
    if spec.kind == "property":  # only date properties take these operators and values
        if op in RELATIVE_DATE_OPS + ANNIVERSARY_OPS:
            return True
        return op in ("eq", "neq") and rule.get("value") in NAMED_PERIODS and rule["value"] != "all_time"
    if spec.kind == "event":
        within = rule.get("within", "all_time")
        return (isinstance(within, str) and within != "all_time") or (
            isinstance(within, dict) and "last_days" in within)
    return False


def uses_browsing(definition: Any) -> bool:
    """True when some rule of the definition itself reads storefront events (browsing events, `last_visit`);
    segment rules are not followed here (kinnekt.segments.membership.browsing_segments does)."""
    return any(rule.get("field") in BROWSING_FIELDS or
               (rule.get("field") == "event" and rule.get("event") in BROWSING_EVENTS)
               for rule in iter_rules(definition))


def has_relative_time(definition: Any, *, session: OrmSession | None = None, shop_id: int | None = None,
                      _seen: frozenset[int] = frozenset()) -> bool:
    """True when membership can change as time passes: some rule (or a referenced segment) depends on now.

    Segment rules are followed through the shop's stored definitions; without a session they count
    as relative, so the time sweep errs on the side of re-checking.
    """
    for rule in iter_rules(definition):
        if _rule_depends_on_now(rule):
            return True
    for ref in segment_references(definition):
        if ref in _seen:
            continue
        if session is None or shop_id is None:
            return True
        stored = session.scalar(select(Segment.definition).where(Segment.shop_id == shop_id, Segment.id == ref))
        if stored is not None and has_relative_time(stored, session=session, shop_id=shop_id,
                                                    _seen=_seen | {ref}):
            return True
    return False
