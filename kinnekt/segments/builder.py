"""The segment builder's side of a definition: the field catalogue in the merchant's words, the flat form the
HTMX builder posts (and back), readable rule summaries, and the live preview.

The builder form is flat. Every group and rule is announced, in document order, by a hidden input
`item = "<kind>:<key>:<parent key>"` (the root group has no parent); a group's inputs are named
`group-<key>-<part>` and a rule's `rule-<key>-<part>`. Keys are short random tokens, so rows can be added
and removed in the page without renumbering. `parse_form` turns that into a contract definition (without
judging it: `rules.validate` does) plus the map from each node's JSON path to its key, so that the
validator's errors can be shown beside the row that caused them.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass, field as dataclass_field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Iterator, Mapping

from phonenumbers.geocoder import _region_display_name
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Collection, Customer, Keyword, Product, Segment, StaticList, Subscriber
from kinnekt.models.subscriber import SOURCE_LABELS
from kinnekt.numbers import MAX_ID, record_id, whole_number
from kinnekt.segments import compiler
from kinnekt.segments.lifecycle import STAGE_LABELS
from kinnekt.segments.rules import (COUNTRIES, EVENTS, FIELDS, MAX_DEPTH, PAYMENT_STATUSES, SOURCE_VALUES,
                                    Definition, DefinitionError, iter_rules, normalise, validate)
from kinnekt.models.order import FULFILLMENT_STATUSES

ROOT_KEY = "root"
SAMPLE_SIZE = 10
"""Members shown under the live count."""
PICKER_LIMIT = 20
"""Products or collections one picker search returns."""
CARRIER_CHOICES = 100
"""Carriers of a shop's subscribers the carrier input suggests at most."""
MAX_FORM_ITEMS = 500
"""Groups and rules one builder form may announce (the contract allows 100 rules); more is not our form."""
_COUNTRY_NAMES_MISSING = {"AC": "Ascension Island", "TA": "Tristan da Cunha", "XK": "Kosovo"}
"""Codes the phone library names no country for."""


def country_name(code: str) -> str:
    """The English name of an ISO 3166-1 alpha-2 code ("DE" -> "Germany"); the code itself when unknown."""
    code = str(code or "").upper()
    return _COUNTRY_NAMES_MISSING.get(code) or (_region_display_name(code, "en") if code in COUNTRIES else "") \
        or code


COUNTRY_OPTIONS = sorted(((code, country_name(code)) for code in COUNTRIES), key=lambda item: item[1].casefold())
"""(ISO code, name) of every country a rule may name, by name: what the Phone country selects offer."""


def country_options(chosen: Iterable[str] = ()) -> list[tuple[str, str]]:
    """COUNTRY_OPTIONS with the chosen codes first, in their order (in sight at the top of a long list, and a
    form posts them back in the order the rule has them); a chosen value that is no country stays, as itself."""
    first = list(dict.fromkeys(str(v).upper() for v in chosen if v))
    return [(code, country_name(code)) for code in first] + [item for item in COUNTRY_OPTIONS
                                                            if item[0] not in first]

_KEY = r"[a-z0-9]{1,16}"
_ITEM = re.compile(rf"(rule|group):({_KEY}):({_KEY}|)")
_INPUT = re.compile(rf"(rule|group)-({_KEY})-(.+)")


class MalformedForm(ValueError):
    """The posted builder form is not one the builder renders (a tampered or truncated request)."""


# ---------------------------------------------------------------------------------------------- catalogue

CATEGORIES = ("Subscriber", "Customer", "Order status", "Engagement", "Events", "Membership")


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
    FieldInfo("event", "Event", "Events"),
    FieldInfo("segment", "Segment membership", "Membership"),
    FieldInfo("list", "List membership", "Membership"),
)
FIELD_INFO: dict[str, FieldInfo] = {info.name: info for info in CATALOGUE}
DEFAULT_FIELD = "subscription_source"
"""A new rule starts as "Subscription source is Any source": valid at once, and it matches everyone."""

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
}

LINE_ITEM_ATTRIBUTES = {"product_title": "Product title", "variant_title": "Variant title",
                        "product_id": "Product ID", "variant_id": "Variant ID", "quantity": "Quantity",
                        "price": "Price"}
EVENT_LABELS = {"placed_order": "Order placed", "received_sms": "Text received", "clicked_link": "Link clicked",
                "started_checkout": "Checkout abandoned", "subscribed": "Subscribed",
                "received_discount": "Discount code received", "used_discount": "Discount code used"}
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
    labels = _OP_LABELS_BY_FIELD.get(field) or {"date": _DATE_OP_LABELS, "number": _NUMBER_OP_LABELS}.get(
        spec.kind, _CHOICE_OP_LABELS)
    return [(op, labels.get(op, op)) for op in ops]


def widget_for(field: str, op: str, attribute: str | None = None) -> str:
    """The kind of value input a rule row shows for this field, operator (and line item attribute)."""
    spec = FIELDS.get(field)
    if spec is None:
        return "none"
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
    return {"keyword": "keyword", "event": "event", "segment": "segment", "list": "list"}.get(field, "text")


def field_options() -> list[tuple[str, list[tuple[str, str]]]]:
    """The field select: (category, [(field, label), ...]) in catalogue order."""
    return [(category, [(info.name, info.label) for info in CATALOGUE if info.category == category])
            for category in CATEGORIES]


# ---------------------------------------------------------------------------------------------- tree

def new_key() -> str:
    """A fresh key for a group or rule added in the page."""
    return secrets.token_hex(4)


@dataclass
class Row:
    """One rule row as the form holds it: its key and its inputs by part name (`field`, `op`, `value`, ...)."""

    key: str
    inputs: dict[str, list[str]] = dataclass_field(default_factory=dict)
    errors: list[str] = dataclass_field(default_factory=list)
    kind = "rule"

    def get(self, part: str, default: str = "") -> str:
        """The first value posted for one input of the row."""
        values = self.inputs.get(part)
        return values[0] if values else default

    def getlist(self, part: str) -> list[str]:
        """Every value posted for one input (tags of a picker)."""
        return list(self.inputs.get(part, []))

    def set(self, part: str, *values: Any) -> None:
        """Set one input; None and "" drop it."""
        kept = [str(v) for v in values if v is not None and v != ""]
        if kept:
            self.inputs[part] = kept
        else:
            self.inputs.pop(part, None)

    def name(self, part: str) -> str:
        """The form name of one input of this row."""
        return f"rule-{self.key}-{part}"

    @property
    def field(self) -> str:
        """The chosen field."""
        return self.get("field")

    @property
    def op(self) -> str:
        """The chosen operator."""
        return self.get("op")

    @property
    def attribute(self) -> str | None:
        """The line item detail a `line_items` row compares (None for other fields)."""
        return (self.get("attribute") or None) if self.field == "line_items" else None

    @property
    def widget(self) -> str:
        """The value input this row shows."""
        return widget_for(self.field, self.op, self.attribute)

    @property
    def ops(self) -> list[tuple[str, str]]:
        """The operators offered for this row's field."""
        return ops_for(self.field, self.attribute)

    @property
    def value_options(self) -> list[tuple[str, str]]:
        """The options of a choice value; for a list of them, the chosen ones first in the rule's order (a multiple
        select posts them back in the order it lists them)."""
        options = list(CHOICE_VALUES.get(self.field, {}).items())
        if self.widget == "choice_list":
            labels, chosen = dict(options), self.getlist("value")
            options = [(v, labels[v]) for v in dict.fromkeys(chosen) if v in labels] + [
                item for item in options if item[0] not in chosen]
        return options

    @property
    def shape(self) -> str:
        """What the row's markup depends on besides its values: equal shapes render the same inputs."""
        widget = self.widget
        extra = ""
        if widget == "days":
            extra = self.op
        elif widget == "period":
            extra = "custom" if self.get("value") == "custom" else ""
        elif widget == "event":
            extra = self.get("within") if self.get("within") in ("custom", "last_days") else ""
        return f"{self.field}/{self.attribute or ''}/{widget}/{extra}"

    @property
    def waiting(self) -> bool:
        """True while the row's value inputs are all empty: the merchant has not typed a value yet (a "Custom
        range" or "in the last N days" just chosen counts: its dates or days are still empty)."""
        if self.widget == "period":
            return self.get("value") == "custom" and not (self.get("from").strip() or self.get("to").strip())
        if self.widget == "event":
            within = self.get("within")
            if within == "custom":
                return not (self.get("within-from").strip() or self.get("within-to").strip())
            return within == "last_days" and not self.get("within-days").strip()
        if self.widget in ("none", "choice"):
            return False
        return not any(v.strip() for part, values in self.inputs.items()
                       if part not in ("field", "op", "attribute") + ROW_STATE for v in values)


@dataclass
class Group:
    """A group of rows and groups, matched with AND (all) or OR (any)."""

    key: str
    match: str = "all"
    items: list = dataclass_field(default_factory=list)
    depth: int = 1
    errors: list[str] = dataclass_field(default_factory=list)
    kind = "group"

    def name(self, part: str) -> str:
        """The form name of one input of this group."""
        return f"group-{self.key}-{part}"

    @property
    def can_nest(self) -> bool:
        """Whether a group may be added inside this one (the contract nests four deep)."""
        return self.depth < MAX_DEPTH

    def walk(self) -> Iterator["Group | Row"]:
        """This group and everything under it, in document order."""
        yield self
        for item in self.items:
            if isinstance(item, Group):
                yield from item.walk()
            else:
                yield item


def default_value(row: Row) -> None:
    """Give a row the starting value of its widget (cleared inputs for free-text ones)."""
    for part in [p for p in row.inputs if p not in ("field", "op", "attribute")]:
        del row.inputs[part]
    widget = row.widget
    if widget == "period":
        row.set("value", "last_30_days")
    elif widget == "days":
        row.set("value", 30)
    elif widget in ("choice", "choice_list"):
        row.set("value", row.value_options[0][0])
    elif widget == "event":
        row.set("event", EVENTS[0])
        row.set("within", "all_time")
        row.set("at-least", 1)


def new_row(field: str = DEFAULT_FIELD, key: str | None = None) -> Row:
    """A fresh rule row for a field, with its first operator and the widget's starting value."""
    row = Row(key or new_key())
    row.set("field", field)
    if field == "line_items":
        row.set("attribute", next(iter(LINE_ITEM_ATTRIBUTES)))
    row.set("op", row.ops[0][0])
    default_value(row)
    return row


def new_group(depth: int, key: str | None = None) -> Group:
    """A fresh group holding one fresh rule."""
    return Group(key or new_key(), "all", [new_row()], depth)


ROW_STATE = ("shown-field", "widget", "shape")
"""Hidden inputs a row posts about how it was rendered (not part of the rule)."""


def refresh_row(row: Row) -> Row:
    """After the field, operator or attribute changed in the page: keep what still fits, reset the rest.

    The row posts the field and widget it was rendered with (`shown-field`, `widget`), so this needs no
    memory of the page: a new field starts afresh; an operator the field lacks becomes its first; a value
    input of another kind starts empty (or at its default).
    """
    shown_field, shown_widget = row.inputs.pop("shown-field", [""])[0], row.inputs.pop("widget", [""])[0]
    row.inputs.pop("shape", None)
    if row.field not in FIELDS:
        row.set("field", DEFAULT_FIELD)
    if row.field != shown_field:
        return new_row(row.field, key=row.key)
    if row.field == "line_items" and row.get("attribute") not in LINE_ITEM_ATTRIBUTES:
        row.set("attribute", next(iter(LINE_ITEM_ATTRIBUTES)))
    if row.op not in dict(row.ops):
        row.set("op", row.ops[0][0])
    if row.widget != shown_widget:
        default_value(row)
    return row


# ---------------------------------------------------------------------------------------------- definition -> rows

def _text(value: Any) -> str:
    """A definition value as the text an input holds."""
    if isinstance(value, float):
        return format(Decimal(repr(value)).normalize(), "f")
    return str(value)


def rule_to_row(rule: Mapping[str, Any], key: str | None = None) -> Row:
    """One (normalised) rule of a definition as a form row."""
    row = Row(key or new_key())
    row.set("field", rule.get("field"))
    if rule.get("field") == "line_items":
        row.set("attribute", rule.get("attribute"))
    row.set("op", rule.get("op"))
    value = rule.get("value")
    widget = row.widget
    if widget == "period" and isinstance(value, dict):
        row.set("value", "custom")
        row.set("from", value.get("from"))
        row.set("to", value.get("to"))
    elif widget in ("money_range", "number_range") and isinstance(value, list) and len(value) == 2:
        row.set("lo", _text(value[0]))
        row.set("hi", _text(value[1]))
    elif widget in ("country_list", "choice_list") and isinstance(value, list):
        row.set("value", *map(str, value))
    elif widget == "text_list" and isinstance(value, list):
        row.set("value", "\n".join(map(str, value)))
    elif widget in ("products", "collections") and isinstance(value, list):
        row.set("value", *map(str, value))
    elif widget == "event":
        row.set("event", rule.get("event"))
        row.set("at-least", rule.get("at_least", 1))
        within = rule.get("within", "all_time")
        if isinstance(within, dict) and "last_days" in within:
            row.set("within", "last_days")
            row.set("within-days", within["last_days"])
        elif isinstance(within, dict):
            row.set("within", "custom")
            row.set("within-from", within.get("from"))
            row.set("within-to", within.get("to"))
        else:
            row.set("within", within)
    elif value is not None and not isinstance(value, (dict, list)):
        row.set("value", _text(value))
    return row


def definition_to_tree(definition: Mapping[str, Any] | None) -> Group:
    """A (normalised) definition as the builder's groups and rows; an empty one gets one fresh rule."""
    counter = iter(range(1, 10**6))

    def group(node: Mapping[str, Any], depth: int, key: str) -> Group:
        out = Group(key, node.get("match", "all"), [], depth)
        for item in node.get("rules") or []:
            if isinstance(item, Mapping) and "field" in item:
                out.items.append(rule_to_row(item, key=f"n{next(counter)}"))
            elif isinstance(item, Mapping):
                out.items.append(group(item, depth + 1, f"n{next(counter)}"))
        return out

    if not isinstance(definition, Mapping) or not definition.get("rules"):
        return Group(ROOT_KEY, "all", [new_row()], 1)
    return group(definition, 1, ROOT_KEY)


def form_data(root: Group, name: str = "") -> list[tuple[str, str]]:
    """The (name, value) pairs the builder page posts for a tree, in document order (as the template renders)."""
    pairs: list[tuple[str, str]] = [("name", name)]

    def walk(node: Group | Row, parent: str) -> None:
        pairs.append(("item", f"{node.kind}:{node.key}:{parent}"))
        if isinstance(node, Group):
            pairs.append((node.name("match"), node.match))
            for item in node.items:
                walk(item, node.key)
            return
        pairs.append((node.name("shown-field"), node.field))
        pairs.append((node.name("widget"), node.widget))
        pairs.append((node.name("shape"), node.shape))
        for part, values in node.inputs.items():
            pairs.extend((node.name(part), value) for value in values)

    walk(root, "")
    return pairs


# ---------------------------------------------------------------------------------------------- rows -> definition

def _whole(text: str) -> Any:
    """Form text of a whole-number input: an int, a float (the validator names it not whole), or the text."""
    text = text.strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else text


def _money(text: str) -> Any:
    """Form text of a money input: kept as a string, so the amount stays exact (the contract takes decimal strings)."""
    return text.strip()


def _id(text: str) -> Any:
    """Form text naming one of the shop's segments or lists."""
    number = whole_number(text, MAX_ID)
    return number if number is not None else text.strip()


def _split(text: str, separators: str) -> list[str]:
    return [part.strip() for part in re.split(separators, text) if part.strip()]


def row_to_rule(row: Row) -> dict[str, Any]:
    """A form row as a contract rule (not yet validated). An input left empty leaves its key out ("is required")."""
    rule: dict[str, Any] = {"field": row.field, "op": row.op}
    if row.field == "line_items":
        rule["attribute"] = row.get("attribute")
    widget = row.widget
    value: Any = None
    text = row.get("value")
    if widget == "period":
        if text == "custom":
            value = {k: row.get(k) for k in ("from", "to") if row.get(k)}
        else:
            value = text or None
    elif widget in ("money_range", "number_range"):
        convert = _money if widget == "money_range" else _whole
        lo, hi = row.get("lo").strip(), row.get("hi").strip()
        if lo or hi:
            value = [convert(lo) if lo else None, convert(hi) if hi else None]
    elif widget in ("number", "days"):
        value = _whole(text) if text.strip() else None
    elif widget == "money":
        value = _money(text) or None
    elif widget == "country_list":  # a multiple select of codes (a pasted "US, CA" still reads)
        value = [code for v in row.getlist("value") for code in _split(v, r"[,\s]+")] or None
    elif widget == "text_list":
        value = _split(text, r"[\r\n]+") or None
    elif widget == "choice_list":  # a multiple select of the field's values
        value = [v for v in row.getlist("value") if v.strip()] or None
    elif widget in ("products", "collections"):
        value = [v.strip() for v in row.getlist("value") if v.strip()] or None
    elif widget in ("segment", "list"):
        value = _id(text) if text.strip() else None
    elif widget == "event":
        if row.get("event"):
            rule["event"] = row.get("event")
        within = row.get("within")
        if within == "custom":
            rule["within"] = {k: row.get(f"within-{k}") for k in ("from", "to") if row.get(f"within-{k}")}
        elif within == "last_days":
            rule["within"] = {"last_days": _whole(row.get("within-days"))}
        elif within:
            rule["within"] = within
        if row.get("at-least").strip():
            rule["at_least"] = _whole(row.get("at-least"))
    elif widget != "none":
        value = text if text.strip() else None
    if value is not None:
        rule["value"] = value
    return rule


@dataclass
class ParsedForm:
    """What the builder posted: the segment name, the tree (to render again), the definition and its paths."""

    name: str
    root: Group
    definition: dict
    paths: dict[str, str]
    """JSON path of each group and rule in `definition` -> its key in the form."""

    def place_errors(self, errors: Iterable[Mapping[str, str]]) -> list[str]:
        """Attach each validator error to the row or group it names; returns those that name no node."""
        nodes = {node.key: node for node in self.root.walk()}
        for node in nodes.values():
            node.errors = []
        loose = []
        for key, message in locate_errors(errors, self.paths, nodes):
            if key is None:
                loose.append(message)
            else:
                nodes[key].errors.append(message)
        return loose


def parse_form(form) -> ParsedForm:
    """The builder's flat form (a werkzeug MultiDict) as a tree and a contract definition.

    Raises MalformedForm when the form is not one the builder renders (no root, unknown parents, ...).
    """
    announced = form.getlist("item")
    if not announced or len(announced) > MAX_FORM_ITEMS:
        raise MalformedForm("the form lists no rules" if not announced else "the form lists too many rules")
    inputs: dict[str, dict[str, list[str]]] = {}
    for name in form.keys():
        found = _INPUT.fullmatch(name)
        if found:
            inputs.setdefault(found.group(2), {})[found.group(3)] = form.getlist(name)
    nodes: dict[str, Group | Row] = {}
    root: Group | None = None
    for raw in announced:
        found = _ITEM.fullmatch(raw)
        if not found:
            raise MalformedForm(f"unexpected item {raw[:40]!r}")
        kind, key, parent_key = found.groups()
        if key in nodes:
            raise MalformedForm(f"item {key} is listed twice")
        own = inputs.get(key, {})
        if not parent_key:
            if root is not None or kind != "group":
                raise MalformedForm("the form has more than one root group")
            root = node = Group(key, (own.get("match") or [""])[0], [], 1)
        else:
            parent = nodes.get(parent_key)
            if not isinstance(parent, Group):
                raise MalformedForm(f"item {key} sits in an unknown group")
            if kind == "group":
                if parent.depth >= 2 * MAX_DEPTH:
                    raise MalformedForm("groups nest too deep")
                node = Group(key, (own.get("match") or [""])[0], [], parent.depth + 1)
            else:
                node = Row(key, {part: values for part, values in own.items() if part not in ROW_STATE})
            parent.items.append(node)
        nodes[key] = node
    if root is None:
        raise MalformedForm("the form has no root group")
    return parsed_tree(root, form.get("name", "").strip())


def parsed_tree(root: Group, name: str = "") -> ParsedForm:
    """A tree as the builder would post it: its definition and the JSON path of every node."""
    paths: dict[str, str] = {}
    definition = _to_definition(root, "", paths)
    return ParsedForm(name=name, root=root, definition=definition, paths=paths)


def _to_definition(group: Group, path: str, paths: dict[str, str]) -> dict:
    paths[path] = group.key
    items = []
    for i, item in enumerate(group.items):
        item_path = f"{path}.rules[{i}]" if path else f"rules[{i}]"
        if isinstance(item, Group):
            items.append(_to_definition(item, item_path, paths))
        else:
            paths[item_path] = item.key
            items.append(row_to_rule(item))
    return {"match": group.match, "rules": items}


def parse_row(form) -> tuple[Row, str]:
    """The one rule row a row request carries (its `item` and `rule-<key>-*` inputs) and its group's key."""
    for raw in form.getlist("item"):
        found = _ITEM.fullmatch(raw)
        if found and found.group(1) == "rule" and found.group(3):
            key = found.group(2)
            inputs = {}
            for name in form.keys():
                own = _INPUT.fullmatch(name)
                if own and own.group(1) == "rule" and own.group(2) == key:
                    inputs[own.group(3)] = form.getlist(name)
            return Row(key, inputs), found.group(3)
    raise MalformedForm("the request names no rule row")


def tree_to_definition(root: Group) -> dict:
    """The contract definition a tree stands for (not validated)."""
    return _to_definition(root, "", {})


# ---------------------------------------------------------------------------------------------- errors

_SUBJECTS = {"field": "Field", "op": "Condition", "attribute": "Line item detail", "event": "Event",
             "at_least": "Number of times", "within": "Time frame", "value": "Value", "match": "Match"}
_VALUE_PARTS = {".from": "Start date", ".to": "End date", "[0]": "Lowest value", "[1]": "Highest value",
                ".last_days": "Number of days"}
_VERBS = ("is ", "must ", "holds ", "takes ", "has ", "needs ")


def _subject(rest: str, node: Group | Row | None) -> str | None:
    """Who an error is about, from the rest of its path after the node (`value.from` -> "Start date")."""
    if not rest or rest.startswith("rules"):  # a group's own list of items: the message says it all
        return None
    head = re.match(r"[a-z_]+", rest)
    name = head.group(0) if head else rest
    tail = rest[len(name):]
    if name in ("value", "within") and tail:
        ranged = isinstance(node, Row) and node.widget.endswith("_range")
        if tail in ("[0]", "[1]") and not ranged:
            return f"Item {int(tail[1]) + 1}"
        list_item = re.fullmatch(r"\[(\d+)\]", tail)
        if list_item and not ranged:
            return f"Item {int(list_item.group(1)) + 1}"
        label = _VALUE_PARTS.get(tail)
        if label:
            return label if name == "value" else f"Time frame {label[0].lower()}{label[1:]}"
    return _SUBJECTS.get(name, name.replace("_", " ").capitalize())


_MERCHANT_WORDS = (
    (re.compile(r"lo must be less than hi"), "must go from a lower number to a higher one"),
    (re.compile(r"must be a list of two numbers \[lo, hi\]"), "needs both numbers"),
    (re.compile(r"must be an ISO 3166-1 alpha-2 country code"), "is not a country: choose one from the list"),
    (re.compile(r"must be a date written YYYY-MM-DD"), "must be a date"),
    (re.compile(r"must not be after 'to'"), "must not be after the end date"),
    (re.compile(r"must be a number or a decimal string"), "must be a number"),
    (re.compile(r"must be an id: a string of digits|is not a valid id|must be an id"),
     "must be a Shopify ID (digits only)"),
    (re.compile(r"must be one of .*"), "must be one of the choices offered"),
    (re.compile(r"'\w+' takes no value; omit 'value'"), "takes no value"),
    (re.compile(r"'\w+' is not an operator of .*"), "is not a condition this field offers"),
    (re.compile(r"unknown key '[^']*'|'[^']*' is only allowed on .*"), "is not part of this kind of rule"),
)
"""The rule validator's messages (the API's, kept as the contract words them) in the merchant's words."""


def merchant_words(message: str) -> str:
    """A validator message as the builder shows it: "lo must be less than hi" -> "must go from a lower number
    to a higher one"; messages already in plain words are unchanged."""
    for pattern, words in _MERCHANT_WORDS:
        if pattern.fullmatch(message):
            return words
    return message


def _sentence(subject: str | None, message: str) -> str:
    message = merchant_words(message)
    if subject is None:
        return message[:1].upper() + message[1:]
    if message.startswith(_VERBS):
        return f"{subject} {message}"
    return f"{subject}: {message}"


def locate_errors(errors: Iterable[Mapping[str, str]], paths: Mapping[str, str],
                  nodes: Mapping[str, Group | Row] | None = None) -> list[tuple[str | None, str]]:
    """(key of the row or group an error is about, sentence for the merchant) for each validator error.

    The longest node path that starts the error's path wins; the rest of the path says which input.
    Errors about no node (a stored segment this one refers to) come back with key None.
    """
    ordered = sorted(paths, key=len, reverse=True)
    out = []
    for error in errors:
        path, message = error.get("path", ""), error.get("message", "")
        key, rest = None, path
        for node_path in ordered:
            if node_path == "" or path == node_path or path.startswith((node_path + ".", node_path + "[")):
                if node_path == "" and path and not re.match(r"(rules\b|match\b)", path):
                    continue  # not a path into this definition (an error inside a referenced segment)
                key, rest = paths[node_path], path[len(node_path):].lstrip(".")
                break
        node = nodes.get(key) if nodes is not None and key is not None else None
        out.append((key, _sentence(_subject(rest, node), message) if key is not None else
                    (f"{path}: {message}" if path else message)))
    return out


# ---------------------------------------------------------------------------------------------- references

@dataclass
class Names:
    """Titles of the things rules refer to by id, for rows and summaries."""

    products: dict[str, str] = dataclass_field(default_factory=dict)
    collections: dict[str, str] = dataclass_field(default_factory=dict)
    segments: dict[int, str] = dataclass_field(default_factory=dict)
    lists: dict[int, str] = dataclass_field(default_factory=dict)


def _ids(values: Iterable[Any]) -> list[int]:
    out = []
    for value in values:
        number = record_id(str(value))
        if number is not None:
            out.append(number)
    return out


def _referenced(definitions: Iterable[Any]) -> dict[str, set]:
    found: dict[str, set] = {"product": set(), "collection": set(), "segment": set(), "list": set()}
    for definition in definitions:
        for rule in iter_rules(definition):
            field, value = rule.get("field"), rule.get("value")
            values = value if isinstance(value, list) else [value]
            if field == "ordered_product" or (field == "line_items" and rule.get("attribute") == "product_id"):
                found["product"].update(_ids(values))
            elif field == "ordered_collection":
                found["collection"].update(_ids(values))
            elif field in ("segment", "list"):
                found[field].update(_ids(values))
    return found


def load_names(session: OrmSession, shop_id: int, definitions: Iterable[Any]) -> Names:
    """Titles of the shop's products, collections, segments and lists that the definitions name."""
    found = _referenced(definitions)
    names = Names()
    if found["product"]:
        names.products = {str(i): t for i, t in session.execute(
            select(Product.shopify_id, Product.title).where(Product.shop_id == shop_id,
                                                           Product.shopify_id.in_(found["product"])))}
    if found["collection"]:
        names.collections = {str(i): t for i, t in session.execute(
            select(Collection.shopify_id, Collection.title).where(Collection.shop_id == shop_id,
                                                                 Collection.shopify_id.in_(found["collection"])))}
    if found["segment"]:
        names.segments = dict(session.execute(select(Segment.id, Segment.name).where(
            Segment.shop_id == shop_id, Segment.id.in_(found["segment"]))).all())
    if found["list"]:
        names.lists = dict(session.execute(select(StaticList.id, StaticList.name).where(
            StaticList.shop_id == shop_id, StaticList.id.in_(found["list"]))).all())
    return names


def catalog_errors(session: OrmSession, shop_id: int, definition: Any) -> list[dict[str, str]]:
    """Errors for product and collection ids that are not in the shop's synced catalog (another shop's, made up).

    `rules.validate` checks segment and list ids; products and collections are Shopify's, so they are
    checked here against the tables the pickers search.
    """
    wanted: list[tuple[str, str, str]] = []  # (path, kind, id)
    pending: list[tuple[Any, str]] = [(definition, "")]  # a stack, not recursion: the input is untrusted
    while pending:
        node, path = pending.pop()
        if not isinstance(node, dict):
            continue
        if "field" in node:
            field, value = node.get("field"), node.get("value")
            if field in ("ordered_product", "ordered_collection") and isinstance(value, list):
                kind = "product" if field == "ordered_product" else "collection"
                wanted.extend((f"{path}.value[{i}]", kind, str(v)) for i, v in enumerate(value))
            elif field == "line_items" and node.get("attribute") == "product_id" and value is not None:
                wanted.append((f"{path}.value", "product", str(value)))
            continue
        items = node.get("rules")
        if isinstance(items, list):
            pending.extend((item, f"{path}.rules[{i}]" if path else f"rules[{i}]")
                           for i, item in reversed(list(enumerate(items))))
    known = {"product": set(), "collection": set()}
    for kind, model in (("product", Product), ("collection", Collection)):
        ids = _ids(v for _, k, v in wanted if k == kind)
        if ids:
            known[kind] = {str(i) for i in session.scalars(
                select(model.shopify_id).where(model.shop_id == shop_id, model.shopify_id.in_(ids)))}
    errors = []
    for path, kind, value in wanted:
        number = record_id(value)  # one past the range is the contract's error ("is not a valid id")
        if number is not None and str(number) not in known[kind]:
            errors.append({"path": path, "message": f"there is no {kind} {number} in this shop"})
    return errors


def check(session: OrmSession, shop_id: int, definition: Any, *, segment_id: int | None = None
          ) -> tuple[Definition | None, list[dict[str, str]]]:
    """(normalised definition, []) when a definition is fine for the shop, else (None, every error).

    The contract (`rules.validate`, including the shop's segments and lists) and the shop's catalog
    (`catalog_errors`) together: what the builder and the API check before saving or previewing.
    """
    errors = catalog_errors(session, shop_id, definition)
    try:
        normalised = validate(definition, shop_id=shop_id, session=session, segment_id=segment_id)
    except DefinitionError as exc:
        return None, exc.errors + errors
    return (None, errors) if errors else (normalised, [])


def search_catalog(session: OrmSession, shop_id: int, kind: str, query: str, *, limit: int = PICKER_LIMIT
                   ) -> list[tuple[str, str]]:
    """(Shopify id, title) of the shop's products or collections whose title contains `query` (or whose id is it)."""
    model = Product if kind == "product" else Collection
    statement = select(model.shopify_id, model.title).where(model.shop_id == shop_id)
    query = query.strip()[:100]
    if query:
        conditions = [model.title.icontains(query, autoescape=True)]
        if record_id(query) is not None:
            conditions.append(model.shopify_id == record_id(query))
        statement = statement.where(or_(*conditions))
    rows = session.execute(statement.order_by(func.lower(model.title), model.shopify_id).limit(limit))
    return [(str(i), title) for i, title in rows]


@dataclass
class Choices:
    """What the value inputs of one shop offer: keywords, segments, lists and the carriers of its subscribers,
    and titles of chosen items."""

    keywords: list[str]
    segments: list[tuple[int, str]]
    lists: list[tuple[int, str]]
    names: Names
    carriers: list[str] = dataclass_field(default_factory=list)

    def keyword_options(self, current: str = "") -> list[tuple[str, str]]:
        """(value, label) of the keyword select; a chosen keyword that no longer exists stays listed."""
        words = list(self.keywords)
        if current and current.upper() not in words:
            words.append(current)
        return [(word, word) for word in words]

    def record_options(self, kind: str, current: str = "") -> list[tuple[str, str]]:
        """(value, label) of the segment or list select, after a prompt; an unknown chosen id stays listed."""
        records = self.segments if kind == "segment" else self.lists
        options = [("", "Choose a segment" if kind == "segment" else "Choose a list")]
        options += [(str(i), name) for i, name in records]
        if current and current not in {value for value, _ in options}:
            options.append((current, f"#{current} (not in this shop)"))
        return options


def load_choices(session: OrmSession, shop_id: int, *, root: Group, segment_id: int | None = None) -> Choices:
    """The shop's keywords, segments (not the one being edited) and lists, and the titles the rows need."""
    keywords = list(session.scalars(select(Keyword.word).where(Keyword.shop_id == shop_id).order_by(Keyword.word)))
    segments = session.execute(select(Segment.id, Segment.name).where(Segment.shop_id == shop_id)
                               .order_by(Segment.kind, Segment.name)).all()
    lists = session.execute(select(StaticList.id, StaticList.name).where(StaticList.shop_id == shop_id)
                            .order_by(StaticList.name)).all()
    names = load_names(session, shop_id, [tree_to_definition(root)])
    carriers = list(session.scalars(select(Subscriber.carrier).where(Subscriber.shop_id == shop_id,
                                                                     Subscriber.carrier.is_not(None),
                                                                     Subscriber.carrier != "")
                                    .distinct().order_by(Subscriber.carrier).limit(CARRIER_CHOICES)))
    return Choices(keywords=keywords, segments=[(i, n) for i, n in segments if i != segment_id],
                   lists=[(i, n) for i, n in lists], names=names, carriers=carriers)


# ---------------------------------------------------------------------------------------------- summaries

def _date(text: str) -> str:
    try:
        day = dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        return str(text)
    return f"{day:%b} {day.day}, {day.year}"


def _window(value: Any) -> str:
    """A period or event window as words: "in the last 30 days", "today", "between Jan 1, 2026 and ..."."""
    if isinstance(value, dict) and "last_days" in value:
        days = value["last_days"]
        return f"in the past {days} day{'s' if days != 1 else ''}"
    if isinstance(value, dict):
        return f"between {_date(value.get('from'))} and {_date(value.get('to'))}"
    return {"all_time": "at any time", "today": "today", "yesterday": "yesterday"}.get(
        value, f"in the {PERIOD_LABELS.get(value, str(value)).lower()}")


def _plain_money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def describe_rule(rule: Mapping[str, Any], names: Names | None = None,
                  money: Callable[[Decimal], str] = _plain_money) -> str:
    """One rule as a sentence in the merchant's words: "Money spent is greater than $25.00"."""
    names = names or Names()
    field, op, value = rule.get("field"), rule.get("op"), rule.get("value")
    info = FIELD_INFO.get(field)
    if info is None:
        return f"{field} {op} {value}"
    label = info.label
    op_label = dict(ops_for(field, rule.get("attribute"))).get(op, op)
    widget = widget_for(field, op, rule.get("attribute"))

    def one(v: Any) -> str:
        if widget.startswith("money"):
            try:
                return money(Decimal(str(v)))
            except (InvalidOperation, ValueError):
                return str(v)
        if widget in ("choice", "choice_list"):
            return CHOICE_VALUES[field].get(v, str(v))
        if widget == "products":
            return names.products.get(str(v), f"product {v}")
        if widget == "collections":
            return names.collections.get(str(v), f"collection {v}")
        if widget == "date":
            return _date(v)
        if field == "country":
            return country_name(v)
        return f"{v:,}" if isinstance(v, int) and widget.startswith("number") else str(v)

    if widget == "period":
        return f"{label} {'was' if op == 'eq' else 'was not'} {_window(value)}"
    if widget == "none":
        return f"{label} {op_label}"
    if widget == "days":
        return f"{label} {op_label} {value} day{'s' if value != 1 else ''}{' ago' if op == 'more_than_days_ago' else ''}"
    if widget == "event":
        event = EVENT_LABELS.get(rule.get("event"), str(rule.get("event")))
        times, window = rule.get("at_least", 1), _window(rule.get("within", "all_time"))
        if op == "performed":
            count = f" at least {times} times" if times != 1 else ""
            return f"Event “{event}” happened{count} {window}"
        if times == 1:
            return f"Event “{event}” did not happen {window}"
        return f"Event “{event}” happened fewer than {times} times {window}"
    if widget in ("segment", "list"):
        title = (names.segments if widget == "segment" else names.lists).get(value, f"#{value}")
        return f"{op_label[:1].upper()}{op_label[1:]} “{title}”"
    if widget.endswith("_range") and isinstance(value, list) and len(value) == 2:
        shown = f"{one(value[0])} and {one(value[1])}"
    elif isinstance(value, list):
        shown = ", ".join(one(v) for v in value)
    else:
        shown = one(value)
    if field == "line_items":
        label = f"{label} {LINE_ITEM_ATTRIBUTES.get(rule.get('attribute'), '').lower()}"
    return f"{label} {op_label} {shown}"


def _describe_group(group: Mapping[str, Any], names: Names, money) -> str:
    joiner = " AND " if group.get("match") == "all" else " OR "
    parts = [describe_rule(item, names, money) if "field" in item else f"({_describe_group(item, names, money)})"
             for item in group.get("rules", [])]
    return joiner.join(parts)


def summary(definition: Any, names: Names | None = None, money: Callable[[Decimal], str] = _plain_money
            ) -> list[str]:
    """A definition as readable lines: one per top-level item, joined by AND / OR; [] when it cannot be read."""
    try:
        definition = normalise(definition)
    except DefinitionError:
        return []
    names = names or Names()
    joiner = "AND" if definition["match"] == "all" else "OR"
    lines = []
    for i, item in enumerate(definition["rules"]):
        text = describe_rule(item, names, money) if "field" in item else f"({_describe_group(item, names, money)})"
        lines.append(text if i == 0 else f"{joiner} {text}")
    return lines


@dataclass(frozen=True)
class RuleWords:
    """One rule of a definition as a sentence (for the segment page), and the shop's segment or static list it
    names (`refers_to` = ("segment" | "list", id)), when it names one that exists."""

    text: str
    refers_to: tuple[str, int] | None = None
    is_group = False


@dataclass(frozen=True)
class GroupWords:
    """A group of a definition in words: how its items combine (AND / OR) and each item, rules and groups."""

    match: str
    items: list["RuleWords | GroupWords"]
    is_group = True

    @property
    def joiner(self) -> str:
        """The word between the group's items: AND for "all", OR for "any"."""
        return "AND" if self.match == "all" else "OR"

    @property
    def heading(self) -> str:
        """What the group asks, in a sentence."""
        if len(self.items) == 1:
            return "This is true:"
        return "All of these are true:" if self.match == "all" else "At least one of these is true:"


def describe(definition: Any, names: Names | None = None, money: Callable[[Decimal], str] = _plain_money
             ) -> GroupWords | None:
    """A definition as nested groups of sentences (a readable sentence per rule); None when it cannot be read."""
    try:
        definition = normalise(definition)
    except DefinitionError:
        return None
    names = names or Names()

    def refers_to(rule: Mapping[str, Any]) -> tuple[str, int] | None:
        field, value = rule.get("field"), rule.get("value")
        known = names.segments if field == "segment" else names.lists if field == "list" else {}
        return (field, value) if value in known else None

    def group(node: Mapping[str, Any]) -> GroupWords:
        return GroupWords(match=node["match"], items=[
            RuleWords(describe_rule(item, names, money), refers_to(item)) if "field" in item else group(item)
            for item in node["rules"]])
    return group(definition)


# ---------------------------------------------------------------------------------------------- preview

@dataclass(frozen=True)
class Member:
    """One member shown in a preview."""

    id: int
    phone: str
    name: str | None


@dataclass(frozen=True)
class Preview:
    """How many subscribers a definition holds right now, and the first few of them."""

    count: int
    sample: list[Member]


def preview(session: OrmSession, definition: Definition, *, shop, now: dt.datetime,
            sample_size: int = SAMPLE_SIZE) -> Preview:
    """Count the members of a (validated) definition at `now` and load a sample, through the one compiler."""
    total = compiler.count(session, definition, shop=shop, now=now)
    ids = compiler.compile_definition(definition, shop=shop, now=now, session=session)
    rows = session.execute(
        select(Subscriber.id, Subscriber.phone, Subscriber.first_name, Customer.first_name, Customer.last_name)
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .where(Subscriber.shop_id == shop.id, Subscriber.id.in_(ids.scalar_subquery()))
        .order_by(Subscriber.id).limit(sample_size)).all()
    sample = [Member(id=i, phone=phone, name=own or " ".join(p for p in (first, last) if p) or None)
              for i, phone, own, first, last in rows]
    return Preview(count=total, sample=sample)
