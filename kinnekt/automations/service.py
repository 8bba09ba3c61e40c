"""What merchants do with automations: the form's validation, create, edit, delete, switch on/off, the built-ins.

An automation's message, discount, messages and statistics live on its backing Campaign (kind "automation"),
so the message is checked by the campaign composer's own rules (`composer.validate`) and sent by the campaign
sender. The engine (kinnekt/automations/engine.py) reads the segment enter/leave log past `last_event_id`.

Switching on: `enabled`, `enabled_at` = now, `last_event_id` = the shop's newest segment event (so entries
from before never fire), and the campaign In Progress with `started_at` / `snapshot_at`. Switching off: the
campaign back to Draft and its pending / claimed rows ended. Deleting deletes the campaign (the automation
goes with it).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt.campaigns import composer, lifecycle
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Keyword, Segment, SegmentEvent, Shop
from kinnekt.models.automation import TRIGGERS, Automation
from kinnekt.models.campaign import CampaignStatus
from kinnekt.numbers import MAX_ID, record_id, whole_number
from kinnekt.segments import membership, service as segments

DELAY_UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
"""The units a delay is entered in, as seconds."""

MAX_DELAY_SECONDS = 365 * 86400
"""The longest delay an automation may wait before sending (a year)."""

TRIGGER_LABELS = {"enter": "Enters", "leave": "Leaves"}
"""The triggers in the merchant's words ("Enters All subscribers")."""

WINBACK_SEGMENT = "No order in 90 days"
"""The manual segment the Win-back built-in sends to (created with it when missing)."""

WINBACK_DEFINITION = {"match": "all", "rules": [{"field": "last_order_created", "op": "more_than_days_ago",
                                                  "value": 90}]}
"""Customers whose last order is more than 90 days old (those who never ordered are not in it)."""

WELCOME_TEXT = "Hi {first_name}, welcome to {shop_name}! Thanks for subscribing: we'll text you our best offers."
KEYWORD_WELCOME_TEXT = "Hi {first_name}, thanks for texting {keyword} to {shop_name}! You're on the list."
WINBACK_TEXT = "Hi {first_name}, we miss you at {shop_name}! It's been a while: come see what's new."


class AutomationError(ValueError):
    """An action the automation does not allow; the message says why, in the merchant's words."""


# ---------------------------------------------------------------------------------------------- the form

def split_delay(seconds: int) -> tuple[int, str]:
    """A delay in seconds as the largest whole unit that expresses it: 7200 -> (2, "hours")."""
    seconds = int(seconds or 0)
    for unit in ("days", "hours"):
        if seconds and seconds % DELAY_UNITS[unit] == 0:
            return seconds // DELAY_UNITS[unit], unit
    if seconds % 60 == 0:
        return seconds // 60, "minutes"
    return seconds, "seconds"


def delay_label(seconds: int) -> str:
    """The delay in the merchant's words: "Immediately", "2 hours after", "1 day after"."""
    if not seconds:
        return "Immediately"
    amount, unit = split_delay(seconds)
    word = unit[:-1] if amount == 1 else unit
    return f"{amount} {word} after"


def trigger_label(automation: Automation, segment: Segment | None) -> str:
    """The trigger in the merchant's words: "Enters All subscribers" (or a note that the segment is gone)."""
    verb = TRIGGER_LABELS.get(automation.trigger, automation.trigger)
    return f"{verb} {segment.name}" if segment is not None else f"{verb} a deleted segment"


def validate(form: Mapping, *, session: OrmSession, shop: Shop) -> tuple[dict, dict[str, str]]:
    """Check a posted automation form: the automation's values, and an error per field that is wrong.

    Fields: name, trigger (enter | leave), segment (an id of this shop's segment), delay_value and delay_unit
    (minutes | hours | days; 0 sends at once, at most a year), body, and the discount fields of the campaign
    composer (discount_mode none | shared | unique, discount_code, discount_kind, discount_value). The message
    and discount are judged by the campaign composer's rules. Nothing is written.
    """
    errors: dict[str, str] = {}
    name = composer.check_name(form, errors, "automation")

    trigger = composer.form_value(form, "trigger") or "enter"
    if trigger not in TRIGGERS:
        errors["trigger"] = "Choose whether subscribers enter or leave the segment."

    raw_segment = composer.form_value(form, "segment").strip()
    segment_id = record_id(raw_segment)
    if segment_id is None or session.scalar(
            select(Segment.id).where(Segment.shop_id == shop.id, Segment.id == segment_id)) is None:
        errors["segment"] = "Choose a segment of this shop." if raw_segment else "Choose a segment."
        segment_id = None

    delay_seconds = 0
    unit = composer.form_value(form, "delay_unit") or "minutes"
    delay_value = whole_number(composer.form_value(form, "delay_value").strip() or "0", MAX_ID)
    if unit not in DELAY_UNITS:
        errors["delay"] = "Choose minutes, hours or days."
    elif delay_value is None:
        errors["delay"] = "Enter the delay as a whole number (0 sends at once)."
    else:
        delay_seconds = delay_value * DELAY_UNITS[unit]
        if delay_seconds > MAX_DELAY_SECONDS:
            errors["delay"] = "A delay can be at most 365 days."
            delay_seconds = 0

    # The message and the discount follow the campaign composer's rules exactly (a draft: no audience, no time).
    message_form = {key: composer.form_value(form, key)
                    for key in ("body", "discount_mode", "discount_code", "discount_kind", "discount_value")}
    message_form["name"] = name or "automation"
    message, message_errors = composer.validate(message_form, session=session, shop=shop, draft=True)
    for key, error in message_errors.items():
        if key == "body" or key.startswith("discount"):
            errors[key] = error

    values = {"name": name, "trigger": trigger, "segment_id": segment_id, "delay_seconds": delay_seconds,
              "body": message["body"], "discount_mode": message["discount_mode"],
              "discount_code": message["discount_code"], "discount_kind": message["discount_kind"],
              "discount_value": message["discount_value"]}
    return values, errors


# ---------------------------------------------------------------------------------------------- create / edit

_CAMPAIGN_FIELDS = ("body", "discount_mode", "discount_code", "discount_kind", "discount_value")


_DISCOUNT_FIELDS = ("discount_mode", "discount_code", "discount_kind", "discount_value")


def _apply(automation: Automation, values: Mapping) -> None:
    for key in ("name", "trigger", "segment_id", "delay_seconds"):
        if key in values:
            setattr(automation, key, values[key])
    campaign = automation.campaign
    campaign.name = automation.name
    discount_before = tuple(getattr(campaign, key) for key in _DISCOUNT_FIELDS)
    for key in _CAMPAIGN_FIELDS:
        if key in values:
            setattr(campaign, key, values[key])
    if campaign.discount_mode == "none":
        campaign.discount_code = campaign.discount_kind = campaign.discount_value = None
    if tuple(getattr(campaign, key) for key in _DISCOUNT_FIELDS) != discount_before:
        campaign.discount_shopify_id = None  # the next fire creates the discount as it is now at Shopify


def create(session: OrmSession, shop: Shop, values: Mapping, *, builtin: str | None = None) -> Automation:
    """Save a new automation (switched off) with its message campaign, from `validate` values; commits."""
    campaign = Campaign(shop_id=shop.id, name=values["name"], kind="automation", status=CampaignStatus.DRAFT,
                        enabled=True)
    automation = Automation(shop_id=shop.id, name=values["name"], campaign=campaign, enabled=False,
                            builtin=builtin, last_event_id=0)
    _apply(automation, values)
    session.add_all([campaign, automation])
    session.commit()
    return automation


def update(session: OrmSession, automation: Automation, values: Mapping) -> Automation:
    """Save changes to an automation (on or off: messages not sent yet use the new text); commits.

    An automation that is on and now watches another segment or trigger starts reading that log from now:
    entries from before the change never fire.
    """
    watched = (automation.segment_id, automation.trigger)
    _apply(automation, values)
    if automation.enabled and (automation.segment_id, automation.trigger) != watched \
            and automation.segment_id is not None:
        automation.last_event_id = _newest_event(session, automation)
    session.commit()
    return automation


def _newest_event(session: OrmSession, automation: Automation) -> int:
    """The shop's newest log entry id, read under the segment's lock (as every writer of its log holds it until
    commit, no entry with a lower id can still be uncommitted, to surface below the cursor and never fire)."""
    membership.lock_segments(session, [automation.segment_id])
    newest = session.scalar(select(func.max(SegmentEvent.id)).where(SegmentEvent.shop_id == automation.shop_id))
    return int(newest or 0)


def delete(session: OrmSession, automation: Automation) -> None:
    """Delete the automation with its message campaign, messages and statistics (orders stay); commits."""
    campaign_id = automation.campaign_id
    lifecycle.stop_rows(session, campaign_id)
    session.delete(automation)
    session.flush()
    session.execute(Campaign.__table__.delete().where(Campaign.__table__.c.id == campaign_id))
    session.commit()
    session.expire_all()


def set_enabled(session: OrmSession, automation: Automation, enabled: bool, *,
                now: dt.datetime | None = None) -> Automation:
    """Switch an automation on (from the newest segment event on: earlier entries never fire) or off; commits.

    On: the campaign is In Progress, so the sender sends its messages. Off: the campaign is a Draft again and
    its messages not yet sent end. Raises AutomationError when the automation cannot send (no segment, no message).
    """
    now = now or utcnow()
    campaign = automation.campaign
    if enabled:
        if automation.segment_id is None:
            raise AutomationError(f"“{automation.name}” has no segment (it was deleted): choose one first.")
        if not (campaign.body or "").strip():
            raise AutomationError(f"Write the message of “{automation.name}” first.")
        if automation.enabled and campaign.status == CampaignStatus.IN_PROGRESS:
            return automation  # (an uninstall ends the campaign and leaves `enabled`: switching on re-arms it)
        automation.enabled, automation.enabled_at = True, now
        automation.last_event_id = _newest_event(session, automation)
        campaign.status, campaign.enabled = CampaignStatus.IN_PROGRESS, True
        campaign.started_at, campaign.snapshot_at = now, now
        campaign.finished_at = campaign.failure_reason = None
    else:
        _switch_off(session, automation, now)
    session.commit()
    return automation


def _switch_off(session: OrmSession, automation: Automation, now: dt.datetime) -> None:
    """Off, in the caller's transaction: the campaign back to Draft and its messages not yet sent ended."""
    automation.enabled = False
    automation.campaign.status = CampaignStatus.DRAFT
    lifecycle.stop_rows(session, automation.campaign_id, now=now)


# ---------------------------------------------------------------------------------------------- built-ins

@dataclass(frozen=True)
class Builtin:
    """A ready-made automation offered to every shop: its key, name, segment and message.

    `segment` is None for Win-back while its segment does not exist yet (it is made when the merchant adds it);
    `segment_name` names it either way.
    """

    key: str
    name: str
    segment: Segment | None
    segment_name: str
    body: str
    description: str


def _winback_segment(session: OrmSession, shop: Shop, *, make: bool) -> Segment | None:
    found = session.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.name == WINBACK_SEGMENT))
    if found is not None or not make:
        return found
    try:
        return segments.create_segment(session, shop, name=WINBACK_SEGMENT, definition=WINBACK_DEFINITION)
    except segments.SegmentNameTaken:  # created meanwhile by another request
        session.rollback()
        return session.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.name == WINBACK_SEGMENT))


def builtins(session: OrmSession, shop: Shop, *, existing: frozenset[str] = frozenset(),
             make_segments: bool = True) -> list[Builtin]:
    """The shop's built-in automations: Welcome, a keyword welcome per keyword, Win-back.

    Welcome needs the "All subscribers" auto segment, a keyword welcome its keyword's segment: one whose
    segment the merchant deleted is left out. Win-back's segment is made here if missing only with
    `make_segments` (adding it); without, nothing is written.
    """
    found: list[Builtin] = []
    everyone = session.scalar(select(Segment).where(Segment.shop_id == shop.id, Segment.auto_source == "all",
                                                    Segment.keyword_id.is_(None)))
    if everyone is not None:
        found.append(Builtin("welcome", "Welcome", everyone, everyone.name, WELCOME_TEXT,
                             "Greets every new subscriber as soon as they join."))
    rows = session.execute(select(Keyword, Segment).join(Segment, Segment.keyword_id == Keyword.id)
                           .where(Keyword.shop_id == shop.id, Segment.shop_id == shop.id,
                                  Segment.auto_source == "keyword").order_by(Keyword.word, Keyword.id)).all()
    for keyword, segment in rows:
        word = keyword.word.strip().upper()
        found.append(Builtin(f"keyword:{keyword.id}", f"Keyword welcome: {word}", segment, segment.name,
                             KEYWORD_WELCOME_TEXT.replace("{keyword}", word),
                             f"Thanks everyone who joins by texting {word}."))
    if "winback" not in existing:  # its segment is made only with it: a merchant may delete both
        found.append(Builtin("winback", "Win-back", _winback_segment(session, shop, make=make_segments),
                             WINBACK_SEGMENT, WINBACK_TEXT,
                             f"Invites customers back when their last order is 90 days old "
                             f"(adds the segment “{WINBACK_SEGMENT}” if you have none)."))
    return found


def _existing_builtins(session: OrmSession, shop: Shop) -> set[str]:
    return set(session.scalars(select(Automation.builtin).where(Automation.shop_id == shop.id,
                                                                Automation.builtin.is_not(None))))


def offered_builtins(session: OrmSession, shop: Shop) -> list[Builtin]:
    """The built-ins the shop has not added (a deleted one is offered again); reads only, writes nothing."""
    existing = _existing_builtins(session, shop)
    return [spec for spec in builtins(session, shop, existing=frozenset(existing), make_segments=False)
            if spec.key not in existing]


def _add(session: OrmSession, shop: Shop, spec: Builtin) -> Automation | None:
    """Insert one built-in, switched off, in a savepoint; None when it exists already (the unique constraint)."""
    campaign = Campaign(shop_id=shop.id, name=spec.name, kind="automation", status=CampaignStatus.DRAFT, enabled=True,
                        body=spec.body, discount_mode="none")
    automation = Automation(shop_id=shop.id, name=spec.name, campaign=campaign, trigger="enter",
                            segment_id=spec.segment.id, delay_seconds=0, enabled=False, builtin=spec.key,
                            last_event_id=0)
    try:
        with session.begin_nested():
            session.add_all([campaign, automation])
    except IntegrityError:
        return None  # another request created this one first
    return automation


def add_builtin(session: OrmSession, shop: Shop, key: str) -> Automation:
    """Add the built-in the merchant picked, switched off (Win-back makes its segment if missing); commits.

    Adding one twice (a double click, two tabs) adds it once: the (shop, builtin) unique constraint decides,
    and the one already there is returned. Raises AutomationError when `key` is not a built-in of this shop
    (e.g. its keyword was deleted meanwhile).
    """
    existing = _existing_builtins(session, shop)
    if key not in existing:
        wanted = [spec for spec in builtins(session, shop, existing=frozenset(existing), make_segments=False)
                  if spec.key == key]
        if not wanted:
            raise AutomationError("That ready-made automation is not available any more: reload the page.")
        spec = wanted[0]
        if spec.segment is None:  # Win-back: its segment is made now, with it
            spec = Builtin(spec.key, spec.name, _winback_segment(session, shop, make=True), spec.segment_name,
                           spec.body, spec.description)
        added = _add(session, shop, spec)
        session.commit()
        if added is not None:
            return added
    return session.scalar(select(Automation).where(Automation.shop_id == shop.id, Automation.builtin == key))


def ensure_builtins(session: OrmSession, shop: Shop) -> list[Automation]:
    """Create all of the shop's missing built-in automations, switched off; idempotent through the database.

    The pages never call this (a merchant adds built-ins one by one with `add_builtin`); seeding and tests do.
    The (shop, builtin) unique constraint makes a second call (even at the same time) create nothing; a
    built-in the merchant deleted comes back. Returns the built-ins created now; commits.
    """
    existing = _existing_builtins(session, shop)
    created = []
    for spec in builtins(session, shop, existing=frozenset(existing)):
        if spec.key in existing:
            continue
        added = _add(session, shop, spec)
        if added is not None:
            created.append(added)
    session.commit()
    return created


# ---------------------------------------------------------------------------------------------- usages

def enabled_users(session: OrmSession, segment: Segment) -> list[tuple[Automation, str]]:
    """The switched-on automations that an edit of this segment can fire, with the name of the segment each one
    watches: this segment's own, and those of the segments whose rules refer to it (they are rebuilt with the
    same cause), own ones first, each group by name."""
    watched = [segment.id, *membership.dependent_segments(session, segment.shop_id, segment.id)]
    rows = session.execute(select(Automation, Segment.name).join(Segment, Segment.id == Automation.segment_id)
                           .where(Automation.shop_id == segment.shop_id, Automation.segment_id.in_(watched),
                                  Automation.enabled.is_(True))
                           .order_by(Automation.segment_id != segment.id, Segment.name, Automation.name)).all()
    return [(automation, name) for automation, name in rows]


def _automation_usages(session: OrmSession, segment: Segment) -> list[segments.Usage]:
    rows = session.execute(select(Automation.id, Automation.name, Automation.enabled)
                           .where(Automation.shop_id == segment.shop_id, Automation.segment_id == segment.id)
                           .order_by(Automation.id)).all()
    return [segments.Usage("automation", id_, name, "On" if enabled else "Off") for id_, name, enabled in rows]


segments.register_usage_finder(_automation_usages)


def _let_go_of(session: OrmSession, segment: Segment) -> None:
    """A segment is being deleted: its automations are switched off (their waiting messages end); no commit."""
    now = utcnow()
    for automation in session.scalars(select(Automation).where(Automation.shop_id == segment.shop_id,
                                                               Automation.segment_id == segment.id,
                                                               Automation.enabled.is_(True))):
        _switch_off(session, automation, now)


segments.register_delete_hook(_let_go_of)

