"""The flow editor's form codec: a flow (settings and steps) as the flat form the HTMX editor posts, back again,
the editor's structural edits (add, remove, move up/down) and the checks that turn a posted form into the
description `kinnekt.flows.service.save` takes, with each problem beside the step or field that caused it.

Every step is announced by a hidden input `s<path>-kind`; its other inputs are `s<path>-<part>`. A path is the
step's position at the top (`0`, `1`, …) or inside a condition's branch (`2-yes-0`, `2-no-1-yes-0`). The editor
renders the whole draft after every structural edit, so paths are always numbered afresh from 0; nothing is
saved until the merchant presses Save.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.campaigns import composer, trigger_tags
from kinnekt.flows import service
from kinnekt.models import Segment, Shop
from kinnekt.models.flow import EXITS, STEP_KINDS, TRIGGERS
from kinnekt.numbers import MAX_ID, whole_number
from kinnekt.segments import references
from kinnekt.web import segment_form

UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
"""The units a wait or the cool-down is counted in, in seconds."""

ORDER_OPS = {"eq": "exactly", "gt": "more than", "lt": "fewer than", "gte": "at least", "lte": "at most"}
"""How a condition on the number of orders compares, in words."""

CONDITION_TESTS = {"orders": "Number of orders", "in_segment": "Is in the segment",
                   "not_in_segment": "Is not in the segment", "rules": "Matches these rules"}
"""The conditions the editor builds: the quick tests, and any segment definition with the segment builder's rows
("rules": kinnekt/web/segment_form.py and its partials, one builder per condition in the editor's form, its root
group keyed by the step's path, `root_key`)."""

TAG_TRIGGERS = {"checkout_url": ("checkout_started",), "order_name": ("order_placed", "order_fulfilled"),
                "product_title": ("order_placed", "order_fulfilled", "product_viewed", "added_to_cart")}
"""The triggers whose runs have the data of each trigger tag (other runs would send it empty)."""

MAX_DEPTH = 3
"""Conditions nest at most this deep in the editor."""

_PATH = r"\d{1,2}(?:-(?:yes|no)-\d{1,2}){0,3}"
_KIND = re.compile(rf"s({_PATH})-kind")
_LANE = re.compile(rf"top|(?:{_PATH})-(?:yes|no)")
_OP = re.compile(rf"(add)-({_LANE.pattern})-([a-z]+)|(remove|up|down)-({_PATH})|(refresh)")
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


class MalformedForm(ValueError):
    """The posted editor form is not one the editor renders (a tampered or truncated request)."""


@dataclass
class Step:
    """One step as the editor holds it: its kind, its inputs by part name, its problems, and (a condition) the
    steps of its yes and no branches."""

    kind: str
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    yes: list["Step"] = field(default_factory=list)
    no: list["Step"] = field(default_factory=list)
    tree: segment_form.Group | None = None  # a "rules" condition: the segment builder's groups and rows
    loose: list[str] = field(default_factory=list)  # its rules' problems that name no row


@dataclass
class Draft:
    """The whole editor: the flow's settings (as posted) and its steps, with a problem for the form as a whole."""

    settings: dict[str, Any]
    steps: list[Step]
    errors: dict[str, str] = field(default_factory=dict)
    general: str | None = None

    @property
    def has_errors(self) -> bool:
        """True when any field or step has a problem."""
        return bool(self.errors or self.general or any(_step_errors(self.steps)))


def _step_errors(steps: list[Step]):
    for step in steps:
        yield bool(step.errors)
        yield from _step_errors(step.yes)
        yield from _step_errors(step.no)


# ---------------------------------------------------------------------------------------------- from a flow

def _duration(seconds: int | None) -> tuple[str, str]:
    """(amount, unit) for a number of seconds, in the largest unit that divides it."""
    seconds = int(seconds or 0)
    for unit in ("days", "hours", "minutes"):
        if seconds and seconds % UNITS[unit] == 0:
            return str(seconds // UNITS[unit]), unit
    return str(round(seconds / 60)), "minutes"


def duration_words(seconds: int | None) -> str:
    """A duration in words, in the largest unit that divides it: "30 minutes", "1 day"."""
    amount, unit = _duration(seconds)
    return f"{amount} {unit[:-1] if amount == '1' else unit}"


def step_from_spec(spec: Mapping[str, Any]) -> Step:
    """A step of a flow description (service.describe) as the editor shows it."""
    kind = spec.get("kind")
    step = Step(kind=kind)
    if kind == "wait":
        if spec.get("until") is not None:
            step.values = {"mode": "until", "until": str(spec["until"]), "amount": "1", "unit": "hours"}
        else:
            amount, unit = _duration(spec.get("seconds"))
            step.values = {"mode": "for", "amount": amount, "unit": unit, "until": "10:00"}
    elif kind == "send":
        step.values = {"body": spec.get("body") or "", "discount_mode": spec.get("discount_mode") or "none",
                       "discount_code": spec.get("discount_code") or "", "discount_kind": spec.get("discount_kind")
                       or "percent", "discount_value": str(spec.get("discount_value") or "")}
    elif kind == "condition":
        step.values = condition_values(spec.get("definition"))
        if step.values["test"] == "rules":
            step.tree = new_tree(spec.get("definition"))
        step.yes = [step_from_spec(child) for child in spec.get("yes") or []]
        step.no = [step_from_spec(child) for child in spec.get("no") or []]
    return step


def condition_values(definition: Any) -> dict[str, str]:
    """A condition's definition as the editor's inputs: a number-of-orders or segment test when it is one, else the
    segment builder's rows ("rules"); only a definition without rules (not one the contract takes) is kept as JSON
    ("custom")."""
    values = {"test": "orders", "orders_op": "eq", "orders_value": "0", "segment": "", "definition": ""}
    rules_ = definition.get("rules") if isinstance(definition, Mapping) else None
    rule = rules_[0] if isinstance(rules_, list) and len(rules_) == 1 and isinstance(rules_[0], Mapping) else None
    if rule and rule.get("field") == "number_of_orders" and rule.get("op") in ORDER_OPS:
        values.update(test="orders", orders_op=rule["op"], orders_value=str(rule.get("value")))
    elif rule and rule.get("field") == "segment" and rule.get("op") in ("in", "not_in"):
        values.update(test="in_segment" if rule["op"] == "in" else "not_in_segment", segment=str(rule.get("value")))
    elif isinstance(definition, Mapping) and definition.get("rules"):
        values.update(test="rules")
    elif definition is not None:
        values.update(test="custom", definition=json.dumps(definition, sort_keys=True))
    return values


def root_key(path: str) -> str:
    """The key of a condition's root group in the editor's form, from the step's path ("2-yes-0" -> "c2y0"): the
    segment builder's keys are lowercase letters and digits."""
    return "c" + path.replace("-yes-", "y").replace("-no-", "n")


def new_tree(definition: Any) -> segment_form.Group:
    """A definition as the segment builder's groups and rows, every group and row under the root keyed afresh (the
    editor's form holds several builders: their keys must not meet)."""
    tree = segment_form.definition_to_tree(definition if isinstance(definition, Mapping) else None)
    for node in tree.walk():
        if node is not tree:
            node.key = segment_form.new_key()
    return tree


def key_trees(steps: list[Step], prefix: str = "") -> None:
    """Key each "rules" condition's root group by its step's path (paths are numbered afresh at every render)."""
    for index, step in enumerate(steps):
        path = f"{prefix}{index}"
        if step.tree is not None:
            step.tree.key = root_key(path)
        key_trees(step.yes, f"{path}-yes-")
        key_trees(step.no, f"{path}-no-")


def trees(steps: list[Step]):
    """The builders' trees of the "rules" conditions, top to bottom."""
    for step in steps:
        if step.tree is not None and step.values.get("test") == "rules":
            yield step.tree
        yield from trees(step.yes)
        yield from trees(step.no)


def settings_from_flow(flow) -> dict[str, Any]:
    """A flow's settings as the editor's inputs."""
    amount, unit = _duration(flow.reentry_cooldown_seconds) if flow.reentry_cooldown_seconds else ("0", "hours")
    return {"name": flow.name, "trigger": flow.trigger, "segment_id": str(flow.segment_id or ""),
            "keyword": str((flow.trigger_config or {}).get("keyword") or ""), "cooldown_amount": amount,
            "cooldown_unit": unit, "exits": list(flow.exit_conditions or []), "runs": "keep"}


def draft_from_flow(session: OrmSession, flow) -> Draft:
    """The editor's draft of a flow's current version."""
    return Draft(settings_from_flow(flow), [step_from_spec(spec) for spec in service.describe(session, flow)])


def new_draft() -> Draft:
    """The editor's draft of a new flow: an abandoned checkout's first text after 30 minutes."""
    settings = {"name": "", "trigger": "checkout_started", "segment_id": "", "keyword": "", "cooldown_amount": "1",
                "cooldown_unit": "days", "exits": ["order", "unsubscribed"], "runs": "keep"}
    return Draft(settings, [step_from_spec({"kind": "wait", "seconds": 1800}),
                            step_from_spec({"kind": "send", "body": ""})])


def blank(kind: str) -> Step:
    """A new step of `kind` as the editor adds it."""
    if kind == "wait":
        return step_from_spec({"kind": "wait", "seconds": 3600})
    if kind == "send":
        return step_from_spec({"kind": "send", "body": ""})
    if kind == "condition":
        return step_from_spec({"kind": "condition", "definition": {
            "match": "all", "rules": [{"field": "number_of_orders", "op": "eq", "value": 0}]}})
    return Step(kind="end")


# ---------------------------------------------------------------------------------------------- from the form

def _value(form: Mapping, key: str) -> str:
    value = form.get(key)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _list(form: Mapping, key: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(key)]
    value = form.get(key)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else ([str(value)] if value else [])


_PARTS = {"wait": ("mode", "amount", "unit", "until"),
          "send": ("body", "discount_mode", "discount_code", "discount_kind", "discount_value"),
          "condition": ("test", "shown_test", "orders_op", "orders_value", "segment", "definition"), "end": ()}


def parse(form: Mapping) -> Draft:
    """The posted editor form as a draft (not yet checked); MalformedForm when it is not the editor's form."""
    settings = {key: _value(form, key) for key in ("name", "trigger", "segment_id", "keyword", "cooldown_amount",
                                                   "cooldown_unit", "runs")}
    settings["exits"] = _list(form, "exits")
    nodes: dict[tuple, Step] = {}
    for key in form.keys():
        match = _KIND.fullmatch(key)
        if not match:
            continue
        kind = _value(form, key)
        if kind not in STEP_KINDS:
            raise MalformedForm("a step of an unknown kind")
        path = _split(match.group(1))
        nodes[path] = Step(kind=kind, values={part: _value(form, f"s{match.group(1)}-{part}")
                                              for part in _PARTS[kind]})
    if len(nodes) > service.MAX_STEPS + 1:
        raise MalformedForm("too many steps")
    try:
        forest = segment_form.parse_forest(form) if hasattr(form, "getlist") else {}
    except segment_form.MalformedForm as exc:
        raise MalformedForm(f"a condition's rules: {exc}") from None
    for path, step in nodes.items():
        if step.kind != "condition":
            continue
        parsed = forest.pop(root_key("-".join(str(part) for part in path)), None)  # switched away: dropped
        if step.values.get("test") == "rules":
            # Just switched to "rules": the builder starts from the quick test it replaces.
            step.tree = parsed.root if parsed is not None else new_tree(_definition(None, None, Step(
                "condition", dict(step.values, test=step.values.get("shown_test") or "orders"))))
    if forest:
        raise MalformedForm("rules of no condition")
    return Draft(settings, _assemble(nodes, ()))


def _split(path: str) -> tuple:
    parts = path.split("-")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _assemble(nodes: dict[tuple, Step], prefix: tuple) -> list[Step]:
    """The steps of one lane in order; a gap in the numbering or a branch under a non-condition is malformed."""
    lane = []
    index = 0
    while prefix + (index,) in nodes:
        step = nodes[prefix + (index,)]
        if step.kind == "condition":
            step.yes = _assemble(nodes, prefix + (index, "yes"))
            step.no = _assemble(nodes, prefix + (index, "no"))
        lane.append(step)
        index += 1
    if not prefix:
        placed = _count(lane)
        if placed != len(nodes):
            raise MalformedForm("steps out of order")
    return lane


def _count(steps: list[Step]) -> int:
    return sum(1 + _count(step.yes) + _count(step.no) for step in steps)


# ---------------------------------------------------------------------------------------------- editing

def apply(draft: Draft, op: str) -> str | None:
    """Apply one structural edit (`add-<lane>-<kind>`, `remove-<path>`, `up-<path>`, `down-<path>`, or `refresh`:
    only show the inputs a changed choice needs) to the draft; returns why it cannot be done, or None.
    MalformedForm for an edit the editor does not offer."""
    match = _OP.fullmatch(op or "")
    if not match:
        raise MalformedForm("an unknown edit")
    if match.group(6):
        return None
    if match.group(1):
        lane_text, kind = match.group(2), match.group(3)
        if kind not in STEP_KINDS:
            raise MalformedForm("an unknown kind of step")
        if lane_text == "top":
            lane = draft.steps
        else:
            path = _split(lane_text)
            parent = _at(draft.steps, path[:-1])
            if parent is None or parent.kind != "condition":
                raise MalformedForm("no such branch")
            if kind == "condition" and len(path) // 2 + 1 >= MAX_DEPTH:
                return f"Conditions go at most {MAX_DEPTH} deep."
            lane = getattr(parent, path[-1])
        if _count(draft.steps) >= service.MAX_STEPS:
            return f"A flow has at most {service.MAX_STEPS} steps."
        lane.append(blank(kind))
        return None
    action, path = match.group(4), _split(match.group(5))
    lane = _lane_of(draft.steps, path)
    if lane is None:
        raise MalformedForm("no such step")
    index = path[-1]
    if action == "remove":
        lane.pop(index)
    elif action == "up" and index > 0:
        lane[index - 1], lane[index] = lane[index], lane[index - 1]
    elif action == "down" and index + 1 < len(lane):
        lane[index + 1], lane[index] = lane[index], lane[index + 1]
    return None


def _at(steps: list[Step], path: tuple) -> Step | None:
    lane = _lane_of(steps, path)
    return lane[path[-1]] if lane is not None else None


def _lane_of(steps: list[Step], path: tuple) -> list[Step] | None:
    """The list holding the step at `path` (None when there is no such step)."""
    lane = steps
    for i in range(0, len(path) - 1, 2):
        index, branch = path[i], path[i + 1]
        if not isinstance(index, int) or index >= len(lane) or lane[index].kind != "condition":
            return None
        lane = getattr(lane[index], branch)
    return lane if isinstance(path[-1], int) and path[-1] < len(lane) else None


# ---------------------------------------------------------------------------------------------- checking

def check(session: OrmSession, shop: Shop, draft: Draft) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The draft as (settings for service.check_settings, steps for service.write_steps), or None with every
    problem put in the draft beside its field or step."""
    settings = _check_settings(session, shop, draft)
    steps = [_check_step(session, shop, draft, step, 1) for step in draft.steps]
    if not draft.steps:
        draft.general = "A flow needs at least one step."
    elif not any(_sends(draft.steps)):
        draft.general = "A flow needs at least one message to send."
    if draft.settings.get("runs") not in ("keep", "move"):
        draft.errors["runs"] = "Choose what happens to people already in the flow."
    return None if draft.has_errors else (settings, steps)


def _sends(steps: list[Step]):
    for step in steps:
        yield step.kind == "send"
        yield from _sends(step.yes)
        yield from _sends(step.no)


def _check_settings(session: OrmSession, shop: Shop, draft: Draft) -> dict[str, Any]:
    raw, errors = draft.settings, draft.errors
    name = raw.get("name", "").strip()
    if not name or len(name) > 255:
        errors["name"] = "Give the flow a name of at most 255 characters."
    trigger = raw.get("trigger", "")
    if trigger not in TRIGGERS:
        errors["trigger"] = "Choose what starts the flow."
    segment_id = None
    if raw.get("segment_id"):
        segment_id = whole_number(raw["segment_id"], MAX_ID)
        if segment_id is None or session.scalar(select(Segment.id).where(
                Segment.id == segment_id, Segment.shop_id == shop.id)) is None:
            errors["segment_id"] = "That segment does not exist."
            segment_id = None
    if trigger in ("segment_enter", "segment_leave") and segment_id is None and "segment_id" not in errors:
        errors["segment_id"] = "Choose the segment that starts the flow."
    keyword = raw.get("keyword", "").strip() if trigger == "subscribed" else ""
    if keyword and (len(keyword) > 40 or not keyword.isprintable() or " " in keyword):
        errors["keyword"] = "A keyword is one word of at most 40 characters."
    exits = raw.get("exits") or []
    if any(item not in EXITS for item in exits) or len(set(exits)) != len(exits):
        errors["exits"] = "Choose among the exits offered."
        exits = []
    elif "left_segment" in exits and segment_id is None:
        errors["exits"] = "“No longer in the segment” needs a segment: choose one above."
    cooldown = _seconds(raw.get("cooldown_amount", ""), raw.get("cooldown_unit", ""), allow_zero=True)
    if cooldown is None:
        errors["cooldown"] = "The cool-down is a whole number of minutes, hours or days, at most a year."
    return {"name": name, "trigger": trigger, "segment_id": segment_id,
            "trigger_config": {"keyword": keyword} if keyword else {},
            "exit_conditions": [item for item in EXITS if item in exits], "reentry_cooldown_seconds": cooldown or 0}


def _seconds(amount: str, unit: str, *, allow_zero: bool = False) -> int | None:
    number = whole_number((amount or "").strip(), 10**9)
    if number is None or unit not in UNITS or (number == 0 and not allow_zero):
        return None
    seconds = number * UNITS[unit]
    return seconds if seconds <= service.MAX_WAIT_SECONDS else None


def _check_step(session: OrmSession, shop: Shop, draft: Draft, step: Step, depth: int) -> dict[str, Any]:
    values, errors = step.values, step.errors
    if step.kind == "wait":
        if values.get("mode") == "until":
            match = _TIME.fullmatch(values.get("until", "").strip())
            if not match:
                errors["until"] = "Wait until a time of day like 10:00."
                return {"kind": "wait", "until": "00:00"}
            return {"kind": "wait", "until": f"{int(match.group(1)):02d}:{match.group(2)}"}
        if values.get("mode") != "for":
            errors["mode"] = "Wait for a while, or until a time of day."
        seconds = _seconds(values.get("amount", ""), values.get("unit", ""))
        if seconds is None:
            errors["amount"] = "Wait a whole number of minutes, hours or days, more than none and at most a year."
        return {"kind": "wait", "seconds": seconds or 60}
    if step.kind == "send":
        return _check_send(draft, step)
    if step.kind == "condition":
        if depth > MAX_DEPTH:
            errors["test"] = f"Conditions go at most {MAX_DEPTH} deep."
        definition = _definition(session, shop, step)
        return {"kind": "condition", "definition": definition,
                "yes": [_check_step(session, shop, draft, child, depth + 1) for child in step.yes],
                "no": [_check_step(session, shop, draft, child, depth + 1) for child in step.no]}
    return {"kind": "end"}


def _check_send(draft: Draft, step: Step) -> dict[str, Any]:
    values, errors = step.values, step.errors
    body = composer.normalize_tags(values.get("body", "")).strip()
    if not body:
        errors["body"] = "Write the text."
    elif len(body) > 1600:
        errors["body"] = "A message is at most 1,600 characters."
    else:
        known = set(composer.MERGE_TAGS) | set(trigger_tags.TAGS)
        unknown = [tag for tag in composer.tags_in(body) if tag not in known]
        trigger = draft.settings.get("trigger")
        unfit = [tag for tag in composer.tags_in(body) if tag in TAG_TRIGGERS and trigger not in TAG_TRIGGERS[tag]]
        if unknown:
            errors["body"] = ("Unknown merge tag " + ", ".join("{" + t + "}" for t in unknown) + ". Use "
                              + ", ".join("{" + t + "}" for t in [*composer.MERGE_TAGS, *trigger_tags.TAGS]) + ".")
        elif unfit:
            errors["body"] = ", ".join("{" + t + "}" for t in unfit) + " has no value for this flow's trigger."
    discount_errors: dict[str, str] = {}
    discount = composer.check_discount(values, discount_errors)
    errors.update(discount_errors)
    if discount["discount_mode"] != "none" and body and "{discount_code}" not in body and "body" not in errors:
        errors["body"] = "Put {discount_code} in the text to give the code."
    spec: dict[str, Any] = {"kind": "send", "body": body, "discount_mode": discount["discount_mode"]}
    if discount["discount_mode"] != "none":
        spec.update(discount_code=discount["discount_code"] or "", discount_kind=discount["discount_kind"],
                    discount_value=str(discount["discount_value"] or Decimal(0)))
    return spec


def _definition(session: OrmSession, shop: Shop, step: Step) -> dict | None:
    values, errors = step.values, step.errors
    test = values.get("test")
    if test == "orders":
        number = whole_number(values.get("orders_value", "").strip(), 10**6)
        if values.get("orders_op") not in ORDER_OPS:
            errors["orders_op"] = "Choose how to compare the number of orders."
        if number is None:
            errors["orders_value"] = "The number of orders is a whole number."
        return {"match": "all", "rules": [{"field": "number_of_orders", "op": values.get("orders_op"),
                                           "value": number or 0}]}
    if test in ("in_segment", "not_in_segment"):
        segment_id = whole_number(values.get("segment", ""), MAX_ID)
        if session is not None and (segment_id is None or session.scalar(select(Segment.id).where(
                Segment.id == segment_id, Segment.shop_id == shop.id)) is None):
            errors["segment"] = "Choose one of your segments."
        return {"match": "all", "rules": [{"field": "segment", "op": "in" if test == "in_segment" else "not_in",
                                           "value": segment_id or 0}]}
    if test == "rules":
        return _rules_definition(session, shop, step)
    if test == "custom":
        try:
            return json.loads(values.get("definition") or "null")
        except ValueError:
            errors["test"] = "This condition cannot be read; choose one of the conditions offered."
            return None
    errors["test"] = "Choose a condition."
    return None


def _rules_definition(session: OrmSession | None, shop: Shop | None, step: Step) -> dict | None:
    """A "rules" condition's definition from its builder, checked as the segment builder checks one
    (segments/references.check); each problem goes beside its row or group, as on the segment page."""
    if step.tree is None:
        step.errors["test"] = "Add the rules of this condition."
        return None
    parsed = segment_form.parsed_tree(step.tree)
    if session is None:
        return parsed.definition
    definition, problems = references.check(session, shop.id, parsed.definition)
    if definition is None:
        step.loose = parsed.place_errors(problems)
        step.errors["test"] = "Fix the highlighted rules of this condition."
        return parsed.definition
    return definition


# ---------------------------------------------------------------------------------------------- preview

def preview(shop: Shop, values: Mapping[str, str]) -> dict[str, Any]:
    """What a send step's live preview shows: the text a sample recipient gets (trigger tags filled with samples)
    and its analysis (encoding, parts, cost per message from the price table) as the composer counts it."""
    body = composer.fill_tags((values.get("body") or "")[:1600], trigger_tags.SAMPLES)
    mode = values.get("discount_mode") if values.get("discount_mode") in composer.DISCOUNT_MODES else "none"
    code = (values.get("discount_code") or "").strip()[:255] or None
    return {"analysis": composer.analysis(body, shop, discount_mode=mode, discount_code=code),
            "text": composer.sample_text(body, shop, discount_mode=mode, discount_code=code, shorten=False)}


def valid_path(path: str) -> bool:
    """True for a step path the editor writes."""
    return bool(re.fullmatch(_PATH, path or ""))
