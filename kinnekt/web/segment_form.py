"""The segment builder's form codec: the flat form the HTMX builder posts as a tree of groups and rows and as a
contract definition, a definition back as the rows the builder renders, the validator's errors beside their rows,
and what a shop's value inputs offer.

The builder form is flat. Every group and rule is announced, in document order, by a hidden input
`item = "<kind>:<key>:<parent key>"` (the root group has no parent); a group's inputs are named
`group-<key>-<part>` and a rule's `rule-<key>-<part>`. Keys are short random tokens, so rows can be added
and removed in the page without renumbering. `parse_form` turns that into a contract definition (without
judging it: `rules.validate` does) plus the map from each node's JSON path to its key, so that the
validator's errors can be shown beside the row that caused them.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field as dataclass_field
from decimal import Decimal
from typing import Any, Iterable, Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Keyword, Segment, ShopifySegment, StaticList, Subscriber
from kinnekt.numbers import MAX_ID, whole_number
from kinnekt.segments.labels import (CATALOGUE, CATEGORIES, CHOICE_VALUES, DEFAULT_PROPERTY, LINE_ITEM_ATTRIBUTES,
                                     country_name, ops_for, property_attribute, refreshed_words, split_property,
                                     widget_for)
from kinnekt.segments.references import Names, load_names
from kinnekt.segments.rules import COUNTRIES, EVENT_FILTERS, EVENTS, FIELDS, FOLLOWERS, MAX_DEPTH

ROOT_KEY = "root"
CARRIER_CHOICES = 100
"""Carriers of a shop's subscribers the carrier input suggests at most."""
MAX_FORM_ITEMS = 500
"""Groups and rules one builder form may announce (the contract allows 100 rules); more is not our form."""


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


DEFAULT_FIELD = "subscription_source"
"""A new rule starts as "Subscription source is Any source": valid at once, and it matches everyone."""


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
        return (self.get("attribute") or None) if self.field in ("line_items", "property") else None

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
            if self.get("event") in EVENT_FILTERS or self.get("event") in FOLLOWERS:
                extra += f"/{self.get('event')}"  # a browsing event shows its id pickers and "not followed by"
        return f"{self.field}/{self.attribute or ''}/{widget}/{extra}"

    @property
    def event_filters(self) -> tuple[str, ...]:
        """The id pickers an event row shows for its event: "products", "collections" (browsing events)."""
        return EVENT_FILTERS.get(self.get("event"), ()) if self.widget == "event" else ()

    @property
    def followers(self) -> tuple[str, ...]:
        """What may follow the row's event to take it out of the count (`not_followed_by`), if anything."""
        return FOLLOWERS.get(self.get("event"), ()) if self.widget == "event" else ()

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
    if field == "property":
        row.set("attribute", DEFAULT_PROPERTY)
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
    if row.field == "property" and ":" not in row.get("attribute"):
        row.set("attribute", DEFAULT_PROPERTY)
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
    if rule.get("field") == "property":
        row.set("attribute", property_attribute(rule))
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
        for part in ("products", "collections"):
            if isinstance(rule.get(part), list):
                row.set(part, *map(str, rule[part]))
        row.set("not-followed-by", rule.get("not_followed_by"))
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
    if row.field == "property":
        rule["attribute"] = split_property(row.get("attribute"))[1]
    widget = row.widget
    value: Any = None
    text = row.get("value")
    if widget == "period":
        if text == "custom":
            value = {k: row.get(k) for k in ("from", "to") if row.get(k)}
        else:
            value = text or None
    elif widget in ("money_range", "number_range"):
        # a property's number is exact, as money is: kept as the decimal string typed
        convert = _money if widget == "money_range" or row.field == "property" else _whole
        lo, hi = row.get("lo").strip(), row.get("hi").strip()
        if lo or hi:
            value = [convert(lo) if lo else None, convert(hi) if hi else None]
    elif widget == "number" and row.field == "property":
        value = _money(text) or None
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
    elif widget == "shopify_segment":  # the select's digits (a pasted GID is read by the contract's check)
        value = text.strip() or None
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
        for part in row.event_filters:  # a filter the event does not take (left from another event) is dropped
            picked = [v.strip() for v in row.getlist(part) if v.strip()]
            if picked:
                rule[part] = picked
        if row.followers and row.get("not-followed-by"):
            rule["not_followed_by"] = row.get("not-followed-by")
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
    roots = _parse_items(form, many=False)
    return parsed_tree(roots[0], form.get("name", "").strip())


def parse_forest(form) -> dict[str, ParsedForm]:
    """Several builders in one form (the flow editor's conditions): each root group's tree and definition, by the
    root's key; {} when the form announces no rules. Raises MalformedForm as `parse_form` does."""
    if not form.getlist("item"):
        return {}
    return {root.key: parsed_tree(root) for root in _parse_items(form, many=True)}


def _parse_items(form, *, many: bool) -> list[Group]:
    announced = form.getlist("item")
    if not announced or len(announced) > MAX_FORM_ITEMS:
        raise MalformedForm("the form lists no rules" if not announced else "the form lists too many rules")
    inputs: dict[str, dict[str, list[str]]] = {}
    for name in form.keys():
        found = _INPUT.fullmatch(name)
        if found:
            inputs.setdefault(found.group(2), {})[found.group(3)] = form.getlist(name)
    nodes: dict[str, Group | Row] = {}
    roots: list[Group] = []
    for raw in announced:
        found = _ITEM.fullmatch(raw)
        if not found:
            raise MalformedForm(f"unexpected item {raw[:40]!r}")
        kind, key, parent_key = found.groups()
        if key in nodes:
            raise MalformedForm(f"item {key} is listed twice")
        own = inputs.get(key, {})
        if not parent_key:
            if (roots and not many) or kind != "group":
                raise MalformedForm("the form has more than one root group")
            node = Group(key, (own.get("match") or [""])[0], [], 1)
            roots.append(node)
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
    if not roots:
        raise MalformedForm("the form has no root group")
    return roots


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
             "at_least": "Number of times", "within": "Time frame", "value": "Value", "match": "Match",
             "not_followed_by": "What must not follow"}
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
    if name == "attribute" and isinstance(node, Row) and node.field == "property":
        return "Property"
    picked = re.fullmatch(r"\[(\d+)\]", tail)
    if name in ("products", "collections") and picked:  # one id of a browsing event's filter
        return f"{name[:-1].capitalize()} {int(picked.group(1)) + 1}"
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


# -------------------------------------------------------------------------------- what the value inputs offer

@dataclass
class Choices:
    """What the value inputs of one shop offer: keywords, segments, lists and the carriers of its subscribers,
    and titles of chosen items."""

    keywords: list[str]
    segments: list[tuple[int, str]]
    lists: list[tuple[int, str]]
    names: Names
    carriers: list[str] = dataclass_field(default_factory=list)
    properties: dict[str, tuple[str, str]] = dataclass_field(default_factory=dict)  # key -> (type, label)
    shopify_segments: list[tuple[str, str, Any]] = dataclass_field(default_factory=list)
    """The shop's Shopify segments: (id digits, name, when their members were last read or None), by name."""

    def shopify_segment_options(self, current: str = "") -> list[tuple[str, str]]:
        """(value, label) of the Shopify segment select, after a prompt, each with when its members were last read;
        a chosen one Shopify no longer lists stays listed."""
        options = [("", "Choose a Shopify segment")]
        options += [(shopify_id, f"{name} ({refreshed_words(at)})") for shopify_id, name, at in self.shopify_segments]
        if current and current not in {value for value, _ in options}:
            options.append((current, f"#{current} (not in this shop's Shopify segments)"))
        return options

    def property_options(self, current: str = "") -> list[tuple[str, str]]:
        """("<type>:<key>", label) of the property select; a chosen property the shop no longer has stays listed."""
        options = [(f"{kind}:{key}", label) for key, (kind, label) in self.properties.items()]
        if current and current not in {value for value, _ in options}:
            options.append((current, f"{split_property(current)[1]} (not in this shop)"))
        return options

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
    from kinnekt.subscribers.properties import catalogue
    found = {key: (prop.type, prop.label) for key, prop in catalogue(session, shop_id).items()}
    for node in root.walk():  # a property row takes its property's type from the shop (a rule does not say it)
        if isinstance(node, Row) and node.field == "property":
            key = split_property(node.get("attribute"))[1]
            if key in found:
                node.set("attribute", f"{found[key][0]}:{key}")
    shopify_segments = [(str(i), n, at) for i, n, at in session.execute(
        select(ShopifySegment.shopify_id, ShopifySegment.name, ShopifySegment.refreshed_at)
        .where(ShopifySegment.shop_id == shop_id, ShopifySegment.gone_at.is_(None))
        .order_by(ShopifySegment.name, ShopifySegment.shopify_id))]
    return Choices(keywords=keywords, segments=[(i, n) for i, n in segments if i != segment_id],
                   lists=[(i, n) for i, n in lists], names=names, carriers=carriers, properties=found,
                   shopify_segments=shopify_segments)
