"""A definition in words: one line per top-level rule for the segment list (`summary`), and nested groups of
sentences for the segment page (`describe`), in the merchant's words (kinnekt/segments/labels.py)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

from kinnekt.segments.labels import (CHOICE_VALUES, EVENT_LABELS, FIELD_INFO, FOLLOWER_LABELS, LINE_ITEM_ATTRIBUTES,
                                     PERIOD_LABELS, country_name, ops_for, property_attribute, refreshed_words,
                                     widget_for)
from kinnekt.segments.references import Names
from kinnekt.segments.rules import DefinitionError, normalise


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
    attribute = property_attribute(rule) if field == "property" else rule.get("attribute")
    op_label = dict(ops_for(field, attribute)).get(op, op)
    widget = widget_for(field, op, attribute)
    if field == "property":
        from kinnekt.subscribers.properties import BUILT_IN_LABELS
        name = str(rule.get("attribute") or "")
        label = BUILT_IN_LABELS.get(name, name[:1].upper() + name[1:])

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
        verb = ("is", "is not") if field == "property" else ("was", "was not")
        return f"{label} {verb[0] if op == 'eq' else verb[1]} {_window(value)}"
    if widget == "none":
        return f"{label} {op_label}"
    if widget == "days" and op == "anniversary_next_days":
        return f"{label} is in the next {value} day{'s' if value != 1 else ''} (any year)"
    if widget == "days":
        ago = " ago" if op == "more_than_days_ago" else ""
        return f"{label} {op_label} {value} day{'s' if value != 1 else ''}{ago}"
    if widget == "event":
        event = EVENT_LABELS.get(rule.get("event"), str(rule.get("event"))) + _event_details(rule, names)
        times, window = rule.get("at_least", 1), _window(rule.get("within", "all_time"))
        if op == "performed":
            count = f" at least {times} times" if times != 1 else ""
            return f"Event “{event}” happened{count} {window}"
        if times == 1:
            return f"Event “{event}” did not happen {window}"
        return f"Event “{event}” happened fewer than {times} times {window}"
    if widget == "shopify_segment":
        known = names.shopify_segments.get(str(value))
        if known is None:
            return f"{op_label[:1].upper()}{op_label[1:]} #{value} (no longer in Shopify)"
        return f"{op_label[:1].upper()}{op_label[1:]} “{known[0]}” ({refreshed_words(known[1])})"
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


def _event_details(rule: Mapping[str, Any], names: Names) -> str:
    """A browsing event's filters in words: " of Merino socks or collection Summer, and not ordered it after"."""
    picked = [names.products.get(str(v), f"product {v}") for v in rule.get("products") or ()]
    picked += [(names.collections.get(str(v), f"collection {v}") if rule.get("event") == "viewed_collection"
                else f"a product of {names.collections.get(str(v), f'collection {v}')}")
               for v in rule.get("collections") or ()]
    words = f": {' or '.join(picked)}" if picked else ""
    if rule.get("not_followed_by") in FOLLOWER_LABELS:
        words += f", and not {FOLLOWER_LABELS[rule['not_followed_by']]}"
    return words


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
