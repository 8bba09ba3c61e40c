"""Making flows: a flow and the steps of a version from a plain description, checked; switching a flow on or off.

A description of steps is a list, top to bottom, of dicts: `{"kind": "wait", "seconds": 1800}`,
`{"kind": "wait", "until": "10:00"}` (the recipient's clock), `{"kind": "send", "body": "…"}` (optionally
`discount_mode`, `discount_code`, `discount_kind`, `discount_value` as campaigns take them),
`{"kind": "condition", "definition": {segment rules}, "yes": [steps], "no": [steps]}` and `{"kind": "end"}`.
Each send step gets a backing Campaign of kind "flow". The editor (kinnekt/web/flows.py) saves through `save`: the
settings and a new version of the steps, waiting runs keeping theirs or moving to it (`move_runs_to`).
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import db
from kinnekt.automations.service import WINBACK_DEFINITION, WINBACK_SEGMENT, WINBACK_TEXT
from kinnekt.campaigns import lifecycle
from kinnekt.db import aware_utc
from kinnekt.models import Campaign, Flow, FlowRun, FlowStep, Segment, Shop, Subscriber
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.flow import EXITS, STEP_KINDS, TRIGGERS, FlowStatus, RunState
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.segments import membership, rules
from kinnekt.segments import service as segments
from kinnekt.sms import registration
from kinnekt.subscribers.phones import gate_country

MAX_STEPS = 50
"""Steps one flow version may have, branches included."""

MAX_WAIT_SECONDS = 366 * 86400
"""The longest wait a step may have (a year)."""


class FlowError(ValueError):
    """A flow or its steps cannot be made as described; the message says why, in the merchant's words."""


def create(session: OrmSession, shop: Shop, *, name: str, trigger: str, steps: list[Mapping[str, Any]],
           segment_id: int | None = None, trigger_config: Mapping[str, Any] | None = None,
           exit_conditions: list[str] | None = None, reentry_cooldown_seconds: int = 0,
           builtin: str | None = None) -> Flow:
    """A new flow (off) with version 1 of its steps; commits; raises FlowError and saves nothing when invalid."""
    checked = check_settings(session, shop, name=name, trigger=trigger, segment_id=segment_id,
                             trigger_config=trigger_config, exit_conditions=exit_conditions,
                             reentry_cooldown_seconds=reentry_cooldown_seconds)
    flow = Flow(shop_id=shop.id, status=FlowStatus.OFF, version=1, builtin=builtin, **checked)
    session.add(flow)
    session.flush()
    try:
        write_steps(session, shop, flow, steps, version=1)
    except Exception:
        session.rollback()
        raise
    session.commit()
    return flow


def check_settings(session: OrmSession, shop: Shop, *, name: str, trigger: str, segment_id: int | None = None,
                   trigger_config: Mapping[str, Any] | None = None, exit_conditions: list[str] | None = None,
                   reentry_cooldown_seconds: int = 0) -> dict[str, Any]:
    """A flow's settings (name, trigger and its segment or keyword, exits, cool-down) checked, as the Flow's
    column values; raises FlowError on the first thing wrong."""
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise FlowError("Give the flow a name of at most 255 characters.")
    if trigger not in TRIGGERS:
        raise FlowError(f"Unknown trigger {trigger!r}.")
    if trigger in ("segment_enter", "segment_leave"):
        if segment_id is None or session.scalar(select(Segment.id).where(
                Segment.id == segment_id, Segment.shop_id == shop.id)) is None:
            raise FlowError("Choose the segment that starts the flow.")
    elif segment_id is not None and session.scalar(select(Segment.id).where(
            Segment.id == segment_id, Segment.shop_id == shop.id)) is None:
        raise FlowError("That segment does not exist.")
    exits = list(exit_conditions or [])
    if any(name_ not in EXITS for name_ in exits) or len(set(exits)) != len(exits):
        raise FlowError(f"Exit conditions are some of {', '.join(EXITS)}, each once.")
    if "left_segment" in exits and segment_id is None:
        raise FlowError("“No longer in the segment” needs the flow's segment.")
    cooldown = int(reentry_cooldown_seconds or 0)
    if not 0 <= cooldown <= MAX_WAIT_SECONDS:
        raise FlowError("The re-entry cool-down is between none and a year.")
    config = dict(trigger_config or {})
    if set(config) - {"keyword"} or (config.get("keyword") is not None and not str(config["keyword"]).strip()):
        raise FlowError("The trigger's settings are a keyword (subscribed), or nothing.")
    if config.get("keyword") is not None:
        if trigger != "subscribed":
            raise FlowError("Only the “subscribes” trigger takes a keyword.")
        config["keyword"] = str(config["keyword"]).strip()
        if len(config["keyword"]) > 40 or any(not ch.isprintable() for ch in config["keyword"]):
            raise FlowError("A keyword is one word of at most 40 characters.")
    return dict(name=name, trigger=trigger, trigger_config=config, segment_id=segment_id, exit_conditions=exits,
                reentry_cooldown_seconds=cooldown)


def write_steps(session: OrmSession, shop: Shop, flow: Flow, steps: list[Mapping[str, Any]], *, version: int) -> int:
    """Add the steps of `version` of the flow from their description (in the caller's transaction, not committed);
    returns how many were written. Raises FlowError on the first thing wrong."""
    if not isinstance(steps, list) or not steps:
        raise FlowError("A flow needs at least one step.")
    count = _count(steps)
    if count > MAX_STEPS:
        raise FlowError(f"A flow has at most {MAX_STEPS} steps.")
    if not any(_sends(steps)):
        raise FlowError("A flow needs at least one message to send.")
    _write(session, shop, flow, steps, version=version, parent=None, branch=None, numbering=[0])
    return count


def _count(steps) -> int:
    total = 0
    for step in steps:
        total += 1
        if isinstance(step, Mapping) and step.get("kind") == "condition":
            total += _count(step.get("yes") or []) + _count(step.get("no") or [])
    return total


def _sends(steps):
    for step in steps:
        if isinstance(step, Mapping):
            yield step.get("kind") == "send"
            if step.get("kind") == "condition":
                yield from _sends(step.get("yes") or [])
                yield from _sends(step.get("no") or [])


def _write(session: OrmSession, shop: Shop, flow: Flow, steps, *, version: int, parent: FlowStep | None,
           branch: str | None, numbering: list[int]) -> None:
    for position, spec in enumerate(steps):
        if not isinstance(spec, Mapping) or spec.get("kind") not in STEP_KINDS:
            raise FlowError(f"Step {position + 1}: a step is one of {', '.join(STEP_KINDS)}.")
        kind = spec["kind"]
        step = FlowStep(shop_id=shop.id, flow_id=flow.id, version=version, parent_id=parent.id if parent else None,
                        branch=branch, position=position, kind=kind)
        if kind == "wait":
            step.wait_seconds, step.wait_until_minute = _wait(spec, position)
        elif kind == "condition":
            try:
                step.condition = rules.validate(spec.get("definition"), shop_id=shop.id, session=session)
            except rules.DefinitionError as exc:
                raise FlowError(f"Step {position + 1}: the condition is not valid: {exc}") from exc
        elif kind == "send":
            numbering[0] += 1
            step.campaign_id = _campaign(session, shop, flow, spec, numbering[0]).id
        session.add(step)
        session.flush()
        if kind == "condition":
            for name in ("yes", "no"):
                children = spec.get(name) or []
                if not isinstance(children, list):
                    raise FlowError(f"Step {position + 1}: the {name} branch is a list of steps.")
                _write(session, shop, flow, children, version=version, parent=step, branch=name, numbering=numbering)


def _wait(spec: Mapping, position: int) -> tuple[int | None, int | None]:
    """(wait_seconds, wait_until_minute) of a wait step's description."""
    until = spec.get("until")
    if until is not None:
        try:
            hours, minutes = (int(part) for part in str(until).split(":"))
        except ValueError:
            raise FlowError(f"Step {position + 1}: wait until a time like 10:00.") from None
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise FlowError(f"Step {position + 1}: wait until a time like 10:00.")
        return None, hours * 60 + minutes
    try:
        seconds = int(spec.get("seconds"))
    except (TypeError, ValueError):
        raise FlowError(f"Step {position + 1}: say how long to wait.") from None
    if not 0 < seconds <= MAX_WAIT_SECONDS:
        raise FlowError(f"Step {position + 1}: a wait is longer than nothing and at most a year.")
    return seconds, None


def _campaign(session: OrmSession, shop: Shop, flow: Flow, spec: Mapping, number: int) -> Campaign:
    """The backing campaign of a send step (a draft until the flow is switched on)."""
    body = str(spec.get("body") or "").strip()
    if not body:
        raise FlowError(f"Message {number}: write the text.")
    if len(body) > 1600:
        raise FlowError(f"Message {number}: at most 1,600 characters.")
    mode = spec.get("discount_mode") or "none"
    if mode not in ("none", "shared", "unique"):
        raise FlowError(f"Message {number}: the discount is none, shared or unique.")
    value = None
    if mode != "none":
        try:
            value = Decimal(str(spec.get("discount_value")))
        except (InvalidOperation, ValueError):
            raise FlowError(f"Message {number}: the discount needs a value.") from None
        if spec.get("discount_kind") not in ("percent", "amount") or not value.is_finite() or value <= 0 or (
                spec.get("discount_kind") == "percent" and value > 100):
            raise FlowError(f"Message {number}: a discount is a percentage up to 100 or an amount above 0.")
        if "{discount_code}" not in body:
            raise FlowError(f"Message {number}: put {{discount_code}} in the text to give the code.")
    campaign = Campaign(shop_id=shop.id, name=f"{flow.name}: message {number}"[:255], body=body, kind="flow",
                        status=CampaignStatus.DRAFT, enabled=True, discount_mode=mode,
                        discount_code=(str(spec.get("discount_code") or "").strip().upper() or None)
                        if mode != "none" else None,
                        discount_kind=spec.get("discount_kind") if mode != "none" else None, discount_value=value)
    session.add(campaign)
    session.flush()
    return campaign


def campaign_ids(session: OrmSession, flow: Flow) -> list[int]:
    """The backing campaigns of every version's send steps."""
    return list(session.scalars(select(FlowStep.campaign_id).where(FlowStep.flow_id == flow.id,
                                                                   FlowStep.campaign_id.is_not(None))))


def us_hold(session: OrmSession, shop_id: int) -> str | None:
    """Why the shop's flows with a message step may not be switched on: it has subscribed US numbers and no approved
    US sender (kinnekt.sms.registration.us_block_reason: only shops with senders of their own are held), or None."""
    blocked = registration.us_block_reason(session, shop_id)
    if blocked is None:
        return None
    us = session.scalar(select(Subscriber.id).where(Subscriber.shop_id == shop_id,
                                                    Subscriber.status == SubscriberStatus.SUBSCRIBED,
                                                    gate_country(Subscriber.country, Subscriber.phone) == "US")
                   .limit(1))
    return None if us is None else blocked


def us_hold_reason(session: OrmSession, flow: Flow, sends: bool = True) -> str | None:
    """Why this flow (with a message step: `sends`) may not be switched on (`us_hold`), or None. A flow already on
    when the hold begins keeps running (docs/us-registration.md)."""
    blocked = us_hold(session, flow.shop_id) if sends else None
    return f"“{flow.name}” texts your US subscribers, so it cannot be switched on yet. {blocked}" if blocked else None


def set_status(session: OrmSession, flow: Flow, on: bool, *, now: dt.datetime | None = None) -> Flow:
    """Switch a flow on (entries from now on: occurrences before it never start a run) or off; commits.

    On: its messages' campaigns are In Progress, so the senders send them; refused (FlowError) while it would text
    US subscribers without an approved US sender (`us_hold_reason`). Off: no new runs, its runs wait where
    they are, its campaigns are Drafts again and their messages not yet sent end (as automations do)."""
    now = aware_utc(now)
    campaigns = session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids(session, flow)))).all()
    if on:
        if flow.status == FlowStatus.ON:
            return flow
        held = us_hold_reason(session, flow, bool(campaigns))
        if held:
            raise FlowError(held)
        flow.status, flow.enabled_at, flow.scanned_through = FlowStatus.ON, now, now
        for campaign in campaigns:
            campaign.status, campaign.enabled = CampaignStatus.IN_PROGRESS, True
            campaign.started_at, campaign.snapshot_at = now, now
            campaign.finished_at = campaign.failure_reason = None
    else:
        flow.status = FlowStatus.OFF
        for campaign in campaigns:
            campaign.status = CampaignStatus.DRAFT
            lifecycle.stop_rows(session, campaign.id, now=now)
    session.commit()
    return flow


# ---------------------------------------------------------------------------------------------- built-ins

BUILTINS: dict[str, dict[str, Any]] = {
    "abandoned_checkout": dict(
        name="Abandoned checkout", trigger="checkout_started", exit_conditions=["order", "unsubscribed"],
        reentry_cooldown_seconds=86400,
        steps=[{"kind": "wait", "seconds": 30 * 60},
               {"kind": "send", "body": "{shop_name}: you left something in your cart. Pick up where you left off: "
                                        "{checkout_url}"},
               {"kind": "wait", "seconds": 24 * 3600},
               {"kind": "send", "body": "{shop_name}: still thinking it over? Here is 10% off to finish your order "
                                        "with {discount_code}: {checkout_url}",
                "discount_mode": "unique", "discount_code": "BACK", "discount_kind": "percent",
                "discount_value": "10"}]),
    "post_purchase": dict(
        name="Post-purchase", trigger="order_fulfilled", exit_conditions=["unsubscribed"],
        steps=[{"kind": "send", "body": "{shop_name}: your order {order_name} is on its way. Thank you, "
                                        "{first_name}!"},
               {"kind": "wait", "seconds": 14 * 86400},
               {"kind": "send",
                "body": "{shop_name}: how is your {product_title}? Our new arrivals go well with it."}]),
    "welcome_series": dict(
        name="Welcome series", trigger="subscribed", exit_conditions=["unsubscribed"],
        steps=[{"kind": "send", "body": "Welcome to {shop_name}, {first_name}! Here is 10% off your first order: "
                                        "{discount_code}",
                "discount_mode": "unique", "discount_code": "WELCOME", "discount_kind": "percent",
                "discount_value": "10"},
               {"kind": "wait", "seconds": 3 * 86400},
               {"kind": "condition", "definition": {"match": "all", "rules": [
                   {"field": "number_of_orders", "op": "eq", "value": 0}]},
                "yes": [{"kind": "send", "body": "{shop_name}: your welcome code {discount_code} is still waiting "
                                                 "for you.", "discount_mode": "unique", "discount_code": "WELCOME",
                         "discount_kind": "percent", "discount_value": "10"}],
                "no": []}]),
    "browse_abandonment": dict(
        name="Browse abandonment", trigger="product_viewed",
        exit_conditions=["order", "added_to_cart", "started_checkout", "unsubscribed"],
        reentry_cooldown_seconds=7 * 86400,
        steps=[{"kind": "wait", "seconds": 3600},
               {"kind": "send", "body": "{shop_name}: still thinking about the {product_title}? It is waiting for "
                                        "you in the store."}]),
    "winback": dict(
        name="Win-back", trigger="segment_enter", exit_conditions=["unsubscribed"],
        steps=[{"kind": "send", "body": WINBACK_TEXT}]),
    "cart_abandonment": dict(
        name="Cart abandonment", trigger="added_to_cart", exit_conditions=["order", "started_checkout", "unsubscribed"],
        reentry_cooldown_seconds=86400,
        steps=[{"kind": "wait", "seconds": 3600},
               {"kind": "send", "body": "{shop_name}: your {product_title} is still in your cart. Check out "
                                        "whenever you are ready."}]),
}
"""The ready-made flows every shop may add, switched off: abandoned checkout (30 minutes, then a code after 24
hours; leaves on an order), post-purchase (thanks when fulfilled, a cross-sell 14 days later), a welcome series
(a code, then a reminder after 3 days unless they ordered), browse abandonment (viewed a product, no cart, checkout
or order within an hour: a text naming it; once a week at most) and cart abandonment (added to the cart, no
checkout or order within an hour; once a day at most) and win-back (the automation it was: a text when someone
enters the segment WINBACK_SEGMENT, their last order more than 90 days old; the segment is made with it when the
shop has none). Each is an ordinary flow once added."""

BUILTIN_SEGMENTS = {"winback": (WINBACK_SEGMENT, WINBACK_DEFINITION)}
"""The built-ins that start on a segment of their own: its name and rules (made when the built-in is added)."""


def _builtin_segment(session: OrmSession, shop: Shop, key: str) -> int:
    """The id of the built-in's segment, made now (manual, built) when the shop has none of that name."""
    name, definition = BUILTIN_SEGMENTS[key]
    found = session.scalar(select(Segment.id).where(Segment.shop_id == shop.id, Segment.name == name))
    if found is not None:
        return found
    try:
        return segments.create_segment(session, shop, name=name, definition=definition).id
    except segments.SegmentNameTaken:  # made meanwhile by another request
        session.rollback()
        return session.scalar(select(Segment.id).where(Segment.shop_id == shop.id, Segment.name == name))


def add_builtin(session: OrmSession, shop: Shop, key: str) -> Flow:
    """Add the ready-made flow `key` to the shop, off; commits; FlowError for an unknown key or one already added."""
    spec = BUILTINS.get(key)
    if spec is None:
        raise FlowError("There is no such ready-made flow.")
    if session.scalar(select(Flow.id).where(Flow.shop_id == shop.id, Flow.builtin == key)) is not None:
        raise FlowError(f"“{spec['name']}” is already added.")
    if key in BUILTIN_SEGMENTS:
        spec = dict(spec, segment_id=_builtin_segment(session, shop, key))
    return create(session, shop, builtin=key, **spec)


def new_version(session: OrmSession, shop: Shop, flow: Flow, steps: list[Mapping[str, Any]]) -> Flow:
    """Replace the flow's steps with a new version (runs already in the flow keep the version they started with;
    new runs get this one); its send steps' campaigns follow the flow's status; commits; FlowError saves nothing."""
    try:
        flow = lock(session, flow)
        version = int(flow.version) + 1
        write_steps(session, shop, flow, steps, version=version)
    except Exception:
        session.rollback()
        raise
    flow.version = version
    session.flush()
    if flow.status == FlowStatus.ON:
        now = aware_utc(None)
        for campaign in session.scalars(select(Campaign).join(FlowStep, FlowStep.campaign_id == Campaign.id).where(
                FlowStep.flow_id == flow.id, FlowStep.version == version)):
            campaign.status, campaign.enabled = CampaignStatus.IN_PROGRESS, True
            campaign.started_at = campaign.snapshot_at = now
    session.commit()
    return flow


def save(session: OrmSession, shop: Shop, flow: Flow, *, settings: Mapping[str, Any], steps: list[Mapping[str, Any]],
         move_runs: bool, now: dt.datetime | None = None) -> tuple[int, int]:
    """The editor's save: the flow's settings (as `check_settings` takes them) and a new version of its steps;
    waiting runs keep the version they started with, or, with `move_runs`, move to the new version's step at the
    same place (`move_runs_to`). Commits; FlowError saves nothing. Returns (runs moved, runs that kept theirs)."""
    now = aware_utc(now)
    try:
        flow = lock(session, flow)
        checked = check_settings(session, shop, **settings)
        starts_anew = flow.status == FlowStatus.ON and (
            checked["trigger"] != flow.trigger or checked["segment_id"] != flow.segment_id
            or checked["trigger_config"] != (flow.trigger_config or {}))
        for key, value in checked.items():
            setattr(flow, key, value)
        if starts_anew:  # a new trigger counts its occurrences from now, as when a flow is switched on
            flow.enabled_at = flow.scanned_through = now
        version = int(flow.version) + 1
        write_steps(session, shop, flow, steps, version=version)
        flow.version = version
        session.flush()
        if flow.status == FlowStatus.ON:
            for campaign in session.scalars(select(Campaign).join(FlowStep, FlowStep.campaign_id == Campaign.id)
                                            .where(FlowStep.flow_id == flow.id, FlowStep.version == version)):
                campaign.status, campaign.enabled = CampaignStatus.IN_PROGRESS, True
                campaign.started_at = campaign.snapshot_at = now
        moved = kept = 0
        if move_runs:
            moved, kept = move_runs_to(session, flow, version)
        else:
            kept = session.scalar(select(func.count()).select_from(FlowRun).where(
                FlowRun.flow_id == flow.id, FlowRun.state == RunState.ACTIVE, FlowRun.version != version)) or 0
    except Exception:
        session.rollback()
        raise
    session.commit()
    return moved, kept


def lock(session: OrmSession, flow: Flow) -> Flow:
    """The flow re-read and held for this transaction (PostgreSQL: its row locked; SQLite: the write lock), so
    that two saves at once write versions one after the other, never the same version twice."""
    db.begin_writing(session)
    return session.scalar(select(Flow).where(Flow.id == flow.id).with_for_update()
                          .execution_options(populate_existing=True))


def step_places(session: OrmSession, flow_id: int, version: int) -> dict[int, tuple]:
    """Each step of a version by its place: (position,) at the top, (position, branch, position, …) inside
    branches; as {step id: place}."""
    rows = session.scalars(select(FlowStep).where(FlowStep.flow_id == flow_id, FlowStep.version == version)).all()
    by_id = {step.id: step for step in rows}
    places: dict[int, tuple] = {}

    def place(step: FlowStep) -> tuple:
        if step.id not in places:
            parent = by_id.get(step.parent_id) if step.parent_id is not None else None
            places[step.id] = (place(parent) + (step.branch,) if parent else ()) + (step.position,)
        return places[step.id]

    for step in rows:
        place(step)
    return places


def move_runs_to(session: OrmSession, flow: Flow, version: int) -> tuple[int, int]:
    """Move the flow's waiting runs of older versions to `version`: each to the step at the same place (same
    position in the same branch of the same condition), keeping when it is due. A run whose place the new
    version does not have keeps its version. In the caller's transaction; returns (moved, kept)."""
    new_places = {place: step_id for step_id, place in step_places(session, flow.id, version).items()}
    moved = kept = 0
    old_versions = session.scalars(select(FlowRun.version).where(
        FlowRun.flow_id == flow.id, FlowRun.state == RunState.ACTIVE, FlowRun.version != version).distinct()).all()
    for old in old_versions:
        for step_id, place in step_places(session, flow.id, old).items():
            target = new_places.get(place)
            where = (FlowRun.flow_id == flow.id, FlowRun.state == RunState.ACTIVE, FlowRun.version == old,
                     FlowRun.current_step_id == step_id)
            if target is None:
                kept += session.scalar(select(func.count()).select_from(FlowRun).where(*where)) or 0
                continue
            moved += session.execute(update(FlowRun).where(*where).values(version=version, current_step_id=target)
                                     .execution_options(synchronize_session=False)).rowcount or 0
    return moved, kept


def describe(session: OrmSession, flow: Flow, version: int | None = None) -> list[dict[str, Any]]:
    """The steps of a version of the flow (the current one by default) as the description `write_steps` takes."""
    version = flow.version if version is None else version
    rows = session.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id, FlowStep.version == version)
                           .order_by(FlowStep.position, FlowStep.id)).all()
    campaigns = {c.id: c for c in session.scalars(select(Campaign).where(
        Campaign.id.in_([s.campaign_id for s in rows if s.campaign_id])))}
    lanes: dict[tuple, list[FlowStep]] = {}
    for step in rows:
        lanes.setdefault((step.parent_id, step.branch if step.parent_id is not None else None), []).append(step)

    def lane(parent_id, branch) -> list[dict[str, Any]]:
        out = []
        for step in lanes.get((parent_id, branch), []):
            spec: dict[str, Any] = {"kind": step.kind}
            if step.kind == "wait":
                if step.wait_until_minute is not None:
                    spec["until"] = f"{step.wait_until_minute // 60:02d}:{step.wait_until_minute % 60:02d}"
                else:
                    spec["seconds"] = step.wait_seconds
            elif step.kind == "send":
                campaign = campaigns.get(step.campaign_id)
                spec["body"] = campaign.body if campaign else ""
                spec["discount_mode"] = (campaign.discount_mode if campaign else None) or "none"
                if spec["discount_mode"] != "none":
                    spec.update(discount_code=campaign.discount_code or "", discount_kind=campaign.discount_kind,
                                discount_value=str(campaign.discount_value))
            elif step.kind == "condition":
                spec.update(definition=step.condition, yes=lane(step.id, "yes"), no=lane(step.id, "no"))
            out.append(spec)
        return out

    return lane(None, None)


# ---------------------------------------------------------------------------------------------- segments

SEGMENT_ROLES = {"segment_enter": "When someone enters", "segment_leave": "When someone leaves"}
"""How a flow uses its segment, in the merchant's words (other triggers: only as the "no longer in it" exit)."""


def flows_using(session: OrmSession, segment: Segment) -> list[segments.Usage]:
    """Every flow of the shop on this segment (its trigger's segment, or the one its "no longer in the segment" exit
    watches), on or off, by name."""
    rows = session.execute(select(Flow.id, Flow.name, Flow.status, Flow.trigger)
                           .where(Flow.shop_id == segment.shop_id, Flow.segment_id == segment.id)
                           .order_by(Flow.name, Flow.id)).all()
    return [segments.Usage("flow", id_, name, "On" if status == FlowStatus.ON else "Off",
                           SEGMENT_ROLES.get(trigger, "Leaves when no longer in it"))
            for id_, name, status, trigger in rows]


def segment_users(session: OrmSession, segment: Segment) -> list[tuple[Flow, str]]:
    """The flows that are on and start when someone enters or leaves this segment, or a segment whose rules refer to
    it (rebuilt with the same cause when it changes), with the name of the segment each one watches: this
    segment's own first, each group by name. An edit of the segment starts them only when the merchant says so."""
    watched = [segment.id, *membership.dependent_segments(session, segment.shop_id, segment.id)]
    rows = session.execute(select(Flow, Segment.name).join(Segment, Segment.id == Flow.segment_id)
                           .where(Flow.shop_id == segment.shop_id, Flow.segment_id.in_(watched),
                                  Flow.status == FlowStatus.ON, Flow.trigger.in_(list(SEGMENT_ROLES)))
                           .order_by(Flow.segment_id != segment.id, Segment.name, Flow.name)).all()
    return [(flow, name) for flow, name in rows]


def _let_go_of(session: OrmSession, segment: Segment) -> None:
    """A segment is being deleted: the flows it starts are switched off (their unsent messages end, their runs wait
    where they are), as automations were; in the deleting transaction, no commit."""
    now = aware_utc(None)
    for flow in session.scalars(select(Flow).where(Flow.shop_id == segment.shop_id, Flow.segment_id == segment.id,
                                                   Flow.status == FlowStatus.ON,
                                                   Flow.trigger.in_(list(SEGMENT_ROLES)))):
        flow.status = FlowStatus.OFF
        for campaign in session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids(session, flow)))):
            campaign.status = CampaignStatus.DRAFT
            lifecycle.stop_rows(session, campaign.id, now=now)


segments.register_usage_finder(flows_using)
segments.register_delete_hook(_let_go_of)
