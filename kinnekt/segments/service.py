"""What merchants do with segments: create, edit, copy, delete (naming what uses it first), suggestions, CSV export.

The builder UI, the JSON API and the CLI call these functions; each validates with `rules.validate`,
keeps names unique per shop through the database, commits, and queues the build that materialises
the members (`membership.request_build`).
"""
from __future__ import annotations

import copy
import csv
import datetime as dt
import io
from dataclasses import dataclass
from typing import Callable, Iterator

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.db import utcnow
from kinnekt.models import Automation, Campaign, CampaignSegment, Customer, Segment, Shop, Subscriber
from kinnekt.models.campaign import STATUS_LABELS, CampaignStatus
from kinnekt.models.segment import BuildStatus
from kinnekt.segments import membership
from kinnekt.segments.compiler import compile_definition, plan_for_sets
from kinnekt.segments.exports import spreadsheet_safe
from kinnekt.segments.rules import Definition, has_relative_time, segment_references, validate

MAX_NAME_LENGTH = 255


class InvalidSegmentName(ValueError):
    """A segment name the shop cannot use; the message says why, in the merchant's words."""


class SegmentNameTaken(InvalidSegmentName):
    """Another segment of the shop already has this name."""


class SegmentNotEditable(ValueError):
    """Auto segments follow their subscription source: they can be deleted, not edited."""


# ---------------------------------------------------------------------------------------------- names

def clean_name(name: object) -> str:
    """The name trimmed, or InvalidSegmentName when it is empty or too long."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSegmentName("Enter a name for the segment.")
    name = " ".join(name.split())
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidSegmentName(f"The name can be at most {MAX_NAME_LENGTH} characters.")
    return name


def _save_unique_name(session: OrmSession, segment: Segment, **changes) -> None:
    """Write the segment (with `changes` applied) in a savepoint; the (shop, name) unique constraint turns a
    clash into SegmentNameTaken, and then the savepoint's rollback leaves the stored segment as it was."""
    name = changes.get("name", segment.name)
    try:
        with session.begin_nested():  # flushes earlier work first, so only this write is inside
            session.add(segment)
            for key, value in changes.items():
                setattr(segment, key, value)
    except IntegrityError:
        raise SegmentNameTaken(f"A segment named “{name}” already exists. Choose another name.") from None


def _relative(session: OrmSession, definition: Definition, shop_id: int) -> bool:
    return has_relative_time(definition, session=session, shop_id=shop_id)


def _refresh_dependents_time(session: OrmSession, segment: Segment) -> None:
    """Segments that refer to this one change with time when it does: keep their sweep flag right."""
    for segment_id in membership.dependent_segments(session, segment.shop_id, segment.id):
        other = session.get(Segment, segment_id)
        other.has_relative_time = _relative(session, other.definition, other.shop_id)


# ---------------------------------------------------------------------------------------------- create / edit

def create_segment(session: OrmSession, shop: Shop, *, name: str, definition: object) -> Segment:
    """Save a new manual segment and queue its first build; commits.

    Raises DefinitionError (every problem, with its JSON path), InvalidSegmentName or SegmentNameTaken;
    nothing is saved then.
    """
    name = clean_name(name)
    normalised = validate(definition, shop_id=shop.id, session=session)
    segment = Segment(shop_id=shop.id, name=name, kind="manual", definition=normalised,
                      has_relative_time=_relative(session, normalised, shop.id), build_status=BuildStatus.PENDING)
    _save_unique_name(session, segment)
    session.commit()
    membership.request_build(segment, cause="build", session=session)
    return segment


def update_segment(session: OrmSession, segment: Segment, *, name: str, definition: object,
                   trigger_automations: bool = False) -> Segment:
    """Rename and/or change a manual segment; a changed definition is rebuilt, logging enters/leaves as "edit".

    With `trigger_automations` the rebuild logs them as "edit_trigger" instead, so automations on the segment
    fire for the subscribers who enter or leave because of this edit (the merchant chose so; default: no).
    Raises SegmentNotEditable for auto segments, and the errors of `create_segment`; nothing is saved then.
    """
    if not segment.editable:
        raise SegmentNotEditable("Automatic segments cannot be edited. You can copy it and edit the copy.")
    name = clean_name(name)
    normalised = validate(definition, shop_id=segment.shop_id, session=session, segment_id=segment.id)
    changed = normalised != segment.definition
    changes = {"name": name}
    if changed:
        changes.update(definition=normalised, has_relative_time=_relative(session, normalised, segment.shop_id),
                       build_status=BuildStatus.PENDING)
        membership.lock_segments(session, [segment.id] + membership.dependent_segments(
            session, segment.shop_id, segment.id))
    try:
        _save_unique_name(session, segment, **changes)
    except SegmentNameTaken:
        session.rollback()  # and release the locks
        raise
    if changed:
        _refresh_dependents_time(session, segment)
    session.commit()
    if changed:
        membership.request_build(segment, cause="edit_trigger" if trigger_automations else "edit", session=session)
    return segment


def copy_segment(session: OrmSession, segment: Segment) -> Segment:
    """A new manual segment named "Copy of <name>" (made unique) with the same definition, queued to build."""
    base = f"Copy of {segment.name}"[:MAX_NAME_LENGTH - 6]
    for n in range(1, 1000):
        candidate = base if n == 1 else f"{base} ({n})"
        duplicate = Segment(shop_id=segment.shop_id, name=candidate, kind="manual",
                            definition=copy.deepcopy(segment.definition),
                            has_relative_time=segment.has_relative_time, build_status=BuildStatus.PENDING)
        try:
            _save_unique_name(session, duplicate)
        except SegmentNameTaken:
            continue
        session.commit()
        membership.request_build(duplicate, cause="build", session=session)
        return duplicate
    raise SegmentNameTaken(f"Too many copies of “{segment.name}” exist already.")


# ---------------------------------------------------------------------------------------------- usages

@dataclass(frozen=True)
class Usage:
    """Something that uses a segment: deleting the segment changes it, so the merchant is asked first."""

    kind: str  # campaign | segment | automation | flow
    id: int
    name: str
    status: str | None = None
    role: str | None = None
    """How it uses the segment, in the merchant's words ("Sends to it", "When someone enters"), where listed."""

    @property
    def label(self) -> str:
        """The usage in the merchant's words, e.g. Campaign “Spring sale” (Scheduled)."""
        what = {"campaign": "Campaign", "segment": "Segment", "automation": "Automation",
                "flow": "Flow"}.get(self.kind, self.kind)
        return f"{what} “{self.name}”" + (f" ({self.status})" if self.status else "")


UsageFinder = Callable[[OrmSession, Segment], list[Usage]]

ACTIVE_CAMPAIGN_STATUSES = CampaignStatus.ACTIVE
"""Campaigns that still read their segments: deleting one of those segments changes who they text."""


def _campaign_usages(session: OrmSession, segment: Segment) -> list[Usage]:
    rows = session.execute(
        select(Campaign.id, Campaign.name, Campaign.status)
        .join(CampaignSegment, CampaignSegment.campaign_id == Campaign.id)
        .where(CampaignSegment.shop_id == segment.shop_id, CampaignSegment.segment_id == segment.id,
               Campaign.status.in_(ACTIVE_CAMPAIGN_STATUSES))
        .distinct().order_by(Campaign.id)).all()
    return [Usage("campaign", id_, name, STATUS_LABELS.get(status, status)) for id_, name, status in rows]


def _segment_usages(session: OrmSession, segment: Segment) -> list[Usage]:
    """Segments whose rules say "in / not in" this one: without it, that rule has no members."""
    rows = session.execute(select(Segment.id, Segment.name, Segment.definition)
                           .where(Segment.shop_id == segment.shop_id, Segment.id != segment.id)
                           .order_by(Segment.id)).all()
    return [Usage("segment", id_, name) for id_, name, definition in rows
            if segment.id in segment_references(definition)]


USAGE_FINDERS: list[UsageFinder] = [_campaign_usages, _segment_usages]
"""Everything that can use a segment. Automations add their finder with register_usage_finder."""

DeleteHook = Callable[[OrmSession, Segment], None]

DELETE_HOOKS: list[DeleteHook] = []
"""Called in the deleting transaction, under the segment's lock, before the segment goes (automations switch off)."""


def register_usage_finder(finder: UsageFinder) -> UsageFinder:
    """Extension point: another module (automations) reports what of its own uses a segment."""
    if finder not in USAGE_FINDERS:
        USAGE_FINDERS.append(finder)
    return finder


def register_delete_hook(hook: DeleteHook) -> DeleteHook:
    """Extension point: another module (automations) lets go of a segment about to be deleted (no commit)."""
    if hook not in DELETE_HOOKS:
        DELETE_HOOKS.append(hook)
    return hook


def segment_usages(session: OrmSession, segment: Segment) -> list[Usage]:
    """What uses the segment now: scheduled and sending campaigns, segments referring to it, automations."""
    return [usage for finder in USAGE_FINDERS for usage in finder(session, segment)]


CAMPAIGN_ROLES = {"include": "Sends to it", "exclude": "Leaves it out"}
AUTOMATION_ROLES = {"enter": "When someone enters", "leave": "When someone leaves"}


def campaigns_using(session: OrmSession, segment: Segment) -> list[Usage]:
    """Every campaign the merchant composed (any status; not the runs of recurring ones, nor automations'
    messages) that sends to the segment or leaves it out, newest first."""
    rows = session.execute(
        select(Campaign.id, Campaign.name, Campaign.status, CampaignSegment.mode)
        .join(CampaignSegment, CampaignSegment.campaign_id == Campaign.id)
        .where(CampaignSegment.shop_id == segment.shop_id, Campaign.shop_id == segment.shop_id,
               CampaignSegment.segment_id == segment.id, Campaign.kind == "campaign")
        .order_by(Campaign.created_at.desc(), Campaign.id.desc())).all()
    return [Usage("campaign", id_, name, STATUS_LABELS.get(status, status), CAMPAIGN_ROLES.get(mode, mode))
            for id_, name, status, mode in rows]


def automations_using(session: OrmSession, segment: Segment) -> list[Usage]:
    """Every automation triggered by someone entering or leaving the segment (on or off), by name."""
    rows = session.execute(
        select(Automation.id, Automation.name, Automation.enabled, Automation.trigger)
        .where(Automation.shop_id == segment.shop_id, Automation.segment_id == segment.id)
        .order_by(Automation.name, Automation.id)).all()
    return [Usage("automation", id_, name, "On" if enabled else "Off", AUTOMATION_ROLES.get(trigger, trigger))
            for id_, name, enabled, trigger in rows]


def delete_segment(session: OrmSession, segment: Segment, *, confirmed: bool) -> list[Usage]:
    """Delete a segment (auto or manual) and its materialised members; subscribers are never touched.

    When something uses the segment and `confirmed` is false, nothing is deleted and the usages are
    returned for the merchant to confirm. Otherwise the segment is deleted (campaigns lose it from
    their audience, referring segments are rebuilt, automations on it are switched off) and the usages
    it had are returned; commits.
    """
    usages = segment_usages(session, segment)
    if usages and not confirmed:
        return usages
    shop_id, segment_id = segment.shop_id, segment.id
    dependents = membership.dependent_segments(session, shop_id, segment_id)
    membership.lock_segments(session, [segment_id] + dependents)
    for hook in DELETE_HOOKS:
        hook(session, segment)
    signals.announce(signals.segment_deleting, session, segment=segment)
    session.delete(segment)
    session.flush()
    for other_id in dependents:
        other = session.get(Segment, other_id)
        other.has_relative_time = _relative(session, other.definition, shop_id)
    session.commit()
    for other_id in dependents:
        # Their `segment` rules now name a segment with no members: rebuild (request_build covers their dependents).
        membership.request_build(session.get(Segment, other_id), cause="edit", session=session)
    return usages


# ---------------------------------------------------------------------------------------------- suggestions

@dataclass(frozen=True)
class Suggestion:
    """A ready-made segment the merchant can create in one click."""

    name: str
    description: str
    definition: Definition


def _rule(field: str, op: str, value=None, **extras) -> dict:
    out = {"field": field, "op": op, **extras}
    if value is not None:
        out["value"] = value
    return out


_SUGGESTIONS = (
    ("Ordered in last 30 days and spent over $25",
     "Recent buyers whose total spend is over 25 in the shop's currency.",
     [_rule("last_order_created", "eq", "last_30_days"), _rule("money_spent", "gt", 25)]),
    ("Loyal but inactive: spent over 1,000 and no order in 90 days",
     "Big spenders who have not ordered for three months: win them back.",
     [_rule("money_spent", "gt", 1000), _rule("last_order_created", "more_than_days_ago", 90)]),
    ("Clickers who got only one message",
     "Subscribers who clicked a link in the one message they received.",
     [_rule("sent_count", "eq", 1), _rule("clicks_count", "gte", 1)]),
    ("Clicked but not texted for 30 days",
     "Engaged subscribers who have not received a message in the last 30 days.",
     [_rule("clicks_count", "gte", 1), _rule("last_received_sms", "more_than_days_ago", 30)]),
    ("Never clicked, texted once",
     "Subscribers who received one message and never clicked a link.",
     [_rule("sent_count", "eq", 1), _rule("clicks_count", "eq", 0)]),
    ("New subscribers this week",
     "Subscribers who joined in the last 7 days (today included).",
     [_rule("subscribed_at", "eq", "last_7_days")]),
    ("Abandoned checkout in the last 7 days",
     "Subscribers who started a checkout and did not complete it this week.",
     [_rule("event", "performed", event="started_checkout", within="last_7_days")]),
    ("Repeat customers",
     "Subscribers with at least two orders.",
     [_rule("number_of_orders", "gte", 2)]),
    ("Subscribers who never ordered",
     "Subscribers without an order yet: good for a first-order discount.",
     [_rule("number_of_orders", "eq", 0)]),
    ("Loyal customers",
     "Recent, frequent, big-spending customers compared with your other customers (updated daily).",
     [_rule("lifecycle_stage", "eq", "loyal")]),
    ("Churn risk: was loyal, now dormant",
     "Customers whose stage went from Loyal straight to Dormant at its latest change: win them back.",
     [_rule("lifecycle_stage", "eq", "dormant"), _rule("previous_lifecycle_stage", "eq", "loyal")]),
    ("Got a discount code, did not use it",
     "Received a text with a discount code in the last 7 days and placed no order with one since.",
     [_rule("event", "performed", event="received_discount", within={"last_days": 7}),
      _rule("event", "not_performed", event="used_discount", within={"last_days": 7})]),
    ("Viewed a product, did not order it",
     "Looked at a product in your store in the last 7 days and has not ordered that product since.",
     [_rule("event", "performed", event="viewed_product", within={"last_days": 7}, not_followed_by="placed_order")]),
    ("Added to cart, no checkout",
     "Added a product to the cart in the last 7 days and has not started a checkout since.",
     [_rule("event", "performed", event="added_to_cart", within={"last_days": 7}, not_followed_by="started_checkout")]),
)


def suggested_segments() -> list[Suggestion]:
    """Ready-made segments (the seed examples first); each definition is a valid contract definition."""
    return [Suggestion(name, description, {"match": "all", "rules": copy.deepcopy(rules)})
            for name, description, rules in _SUGGESTIONS]


# ---------------------------------------------------------------------------------------------- export

EXPORT_HEADER = ("phone", "first_name", "last_name", "email", "status", "source", "subscribed_at")


def _safe(value: str | None) -> str:
    """Text a spreadsheet will not run as a formula (free-text fields only; phones are E.164 digits)."""
    return spreadsheet_safe(value) if value else ""


def _csv_lines(rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(rows)
    return buffer.getvalue()


def export_members_csv(session: OrmSession, segment: Segment, *, now: dt.datetime | None = None) -> Iterator[str]:
    """The segment's members at `now` as CSV text, streamed: the header line, then chunks of lines.

    Members are evaluated with the compiler (so the export is right even while a build is pending) and
    fetched `SEGMENT_EXPORT_CHUNK` rows at a time; memory stays flat however big the segment is.
    Columns: phone (E.164), first_name, last_name, email, status, source, subscribed_at (ISO 8601, UTC).
    """
    shop = session.get(Shop, segment.shop_id)
    member_ids = compile_definition(segment.definition, shop=shop, now=now or utcnow(), session=session).subquery()
    plan_for_sets(session)
    query = (select(Subscriber.phone, Subscriber.first_name, Customer.first_name, Customer.last_name, Customer.email,
                    Subscriber.status, Subscriber.source, Subscriber.subscribed_at)
             .join(member_ids, member_ids.c.id == Subscriber.id)
             .outerjoin(Customer, Customer.id == Subscriber.customer_id)
             .order_by(Subscriber.id)
             .execution_options(yield_per=defaults.SEGMENT_EXPORT_CHUNK))
    yield _csv_lines([EXPORT_HEADER])
    for partition in session.execute(query).partitions():
        yield _csv_lines(
            (phone, _safe(sub_first or first), _safe(last), _safe(email), status, source,
             subscribed.isoformat().replace("+00:00", "Z") if subscribed else "")
            for phone, sub_first, first, last, email, status, source, subscribed in partition)
