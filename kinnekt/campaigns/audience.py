"""Who a campaign texts: include segments minus exclude segments, the live breakdown, and the snapshot into messages.

Every segment, included or excluded, is evaluated from its rules at the instant asked for (the snapshot's start,
or now for the composer's breakdown) with the one compiler (kinnekt/segments/compiler.py), never read from the
materialised `segment_members`. Those are kept fresh by re-check jobs queued after each change, which may run
seconds to minutes later under load: a campaign started right after an import of 3,448 people went to the
segment's 1,552 members from before it. Waiting for the pending re-checks instead was turned down: the queue
cannot tell which of its jobs concern this shop's segments without a ledger of its own, the wait grows with the
load it is meant to ride out, and a change committed during the wait queues yet another re-check. The rules
now are exactly what the merchant chose (static lists are read by `list` rules from the list's entries as they
are). The price is the compiled Select instead of a scan of members, about what the segment's live count costs:
+17 ms for the bench's 100k snapshot, +0.2 s for the heaviest rules at 100k (docs/benchmarks.md). Nothing is
written to the members or the enter/leave log here: the re-checks still apply and log each change with its own
time and cause, and automations still fire on those.

The compiler's Select holds only subscribed, unsuppressed people. Each person in the included segments gets
exactly one skip reason, or none (sendable), first match wins:

- `excluded`: in an excluded segment;
- `not_subscribed`, `suppressed`: not met by the compiler's people; kept so that a row's reason never depends on
  which Select fed the CASE (rows of campaigns started before this rule carry them);
- `no_clicks`: global suppression, as Settings words it: received `suppression_threshold` messages or more
  (`sent_count`) and never clicked a link (`clicks_count` 0) — counted in the breakdown's `suppressed`;
- `recently_texted`: smart sending, a campaign message sent in the last `smart_sending_hours`.

"In quiet hours now" is informational: those people are sendable, their messages wait for the window's end.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Iterable

from sqlalchemy import Integer, Select, String, and_, case, exists, func, literal, select, text, true, union
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from kinnekt.campaigns import quiet_hours
from kinnekt.db import UTCDateTime, aware_utc, on_postgresql
from kinnekt.models import Campaign, Message, Segment, Shop, Subscriber
from kinnekt.models.base import IdType
from kinnekt.models.message import MessageStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.segments.compiler import compile_definition, plan_for_sets
from kinnekt.subscribers.phones import gate_country

SKIP_REASONS = ("excluded", "not_subscribed", "suppressed", "no_clicks", "recently_texted")
SKIP_LABELS = {
    "excluded": "In an excluded segment",
    "not_subscribed": "Not subscribed",
    "suppressed": "Suppressed",
    "no_clicks": "Suppressed (no clicks)",
    "recently_texted": "Recently texted",
    "no_subscriber": "Subscriber deleted",
    "no_discount_code": "Shopify refused their discount code",
    "over_cap": "Over the plan's cap",
}
"""Skip reasons in the merchant's words (snapshot reasons, plus those set at send time by sending.py)."""

_COUNTED = MessageStatus.ACCEPTED


class AudienceError(ValueError):
    """The audience cannot be worked out (a segment whose rules no longer compile); the message says why."""


@dataclass(frozen=True)
class Breakdown:
    """The live audience funnel shown before sending."""

    in_segments: int = 0
    excluded: int = 0
    not_subscribed: int = 0
    suppressed: int = 0
    recently_texted: int = 0
    quiet_hours_now: int = 0
    sendable: int = 0
    sendable_by_country: dict = field(default_factory=dict)
    """Sendable recipients by country (None for an unknown one): what the cost estimate prices."""

    def as_dict(self) -> dict[str, int]:
        """The funnel's figures as a plain dict (without the by-country split)."""
        figures = asdict(self)
        figures.pop("sendable_by_country")
        return figures


def _members(session: OrmSession, shop: Shop, segment_ids: Iterable[int], now: dt.datetime):
    """A Select of the subscriber ids in any of these segments by their rules at `now`, or None when there are none."""
    ids = sorted({int(i) for i in segment_ids})
    if not ids:
        return None
    rows = session.execute(select(Segment.name, Segment.definition)
                           .where(Segment.shop_id == shop.id, Segment.id.in_(ids)).order_by(Segment.id)).all()
    parts = []
    for row in rows:
        try:
            parts.append(compile_definition(row.definition, shop=shop, now=now, session=session))
        except ValueError as exc:  # DefinitionError is a ValueError
            raise AudienceError(f"The segment “{row.name}” cannot be evaluated: {exc}") from None
    if not parts:
        return None
    plan_for_sets(session)
    return parts[0] if len(parts) == 1 else union(*parts)


def _people(shop: Shop, included, *columns) -> Select:
    """A Select of `columns` over the people in `included`.

    One segment: its compiled Select with these columns instead of the id (its FROM and WHERE already read
    `subscribers`, so they are not read a second time to join the ids back: 0.1 s less for 20k of 100k).
    Several: `id IN (union of their Selects)`.
    """
    if isinstance(included, Select):
        return included.with_only_columns(*columns)
    return select(*columns).where(Subscriber.shop_id == shop.id, Subscriber.id.in_(included))


def _zone_column(shop: Shop):
    return func.coalesce(Subscriber.timezone, literal(shop.timezone or "UTC", String))


def _reason(shop: Shop, excluded, now: dt.datetime, campaign_id: int | None):
    """The CASE giving each subscriber's skip reason (NULL = sendable)."""
    whens = []
    if excluded is not None:
        whens.append((Subscriber.id.in_(excluded), literal("excluded")))
    whens.append((Subscriber.status != SubscriberStatus.SUBSCRIBED, literal("not_subscribed")))
    whens.append((Subscriber.suppressed_at.is_not(None), literal("suppressed")))
    threshold = int(shop.suppression_threshold or 0)
    if threshold > 0:
        whens.append((and_(Subscriber.sent_count >= threshold, Subscriber.clicks_count == 0), literal("no_clicks")))
    hours = int(shop.smart_sending_hours or 0)
    if hours > 0:
        recent = [Message.subscriber_id == Subscriber.id, Message.campaign_id.is_not(None),
                  Message.status.in_(_COUNTED), Message.sent_at >= now - dt.timedelta(hours=hours)]
        if campaign_id is not None:
            recent.append(Message.campaign_id != campaign_id)
        whens.append((exists().where(*recent), literal("recently_texted")))
    return case(*whens, else_=literal(None, String))


def _audience(session: OrmSession, shop: Shop, include_ids, exclude_ids, now: dt.datetime, campaign_id=None):
    """(included Select or None, reason CASE, zone column) for these segments."""
    included = _members(session, shop, include_ids, now)
    if included is None:
        return None, None, None
    excluded = _members(session, shop, exclude_ids, now)
    return included, _reason(shop, excluded, now, campaign_id), _zone_column(shop)


def breakdown(session: OrmSession, shop: Shop, include_ids, exclude_ids, *, now: dt.datetime | None = None
              ) -> Breakdown:
    """The funnel for a choice of segments at `now`: in the segments, each skip reason, quiet now, sendable."""
    now = aware_utc(now)
    included, reason, zone = _audience(session, shop, include_ids, exclude_ids, now)
    if included is None:
        return Breakdown()
    country = gate_country(Subscriber.country, Subscriber.phone)  # a +1 number of no country: by its area code
    rows = session.execute(
        _people(shop, included, reason.label("reason"), zone.label("zone"), country.label("country"),
                func.count().label("n"))
        .group_by(reason, zone, country)).all()
    counts = {name: 0 for name in SKIP_REASONS}
    total = sendable = quiet = 0
    by_country: dict[str | None, int] = {}
    for row in rows:
        total += row.n
        if row.reason is None:
            sendable += row.n
            by_country[row.country] = by_country.get(row.country, 0) + row.n
            if quiet_hours.is_quiet(shop, now, quiet_hours.zone_for(row.zone, shop.timezone)):
                quiet += row.n
        else:
            counts[row.reason] += row.n
    return Breakdown(in_segments=total, excluded=counts["excluded"], not_subscribed=counts["not_subscribed"],
                     suppressed=counts["suppressed"] + counts["no_clicks"],
                     recently_texted=counts["recently_texted"], quiet_hours_now=quiet, sendable=sendable,
                     sendable_by_country=by_country)


def campaign_segments(session: OrmSession, campaign: Campaign) -> tuple[list[int], list[int]]:
    """(include ids, exclude ids) of a campaign."""
    from kinnekt.models import CampaignSegment
    rows = session.execute(select(CampaignSegment.segment_id, CampaignSegment.mode)
                           .where(CampaignSegment.campaign_id == campaign.id)).all()
    return ([s for s, mode in rows if mode == "include"], [s for s, mode in rows if mode != "include"])


def first_due(shop: Shop, campaign: Campaign, zone: quiet_hours.ZoneInfo, start: dt.datetime) -> dt.datetime:
    """When a recipient in `zone` is first due: the start (or the local wall-clock time), past quiet hours."""
    when = start
    if campaign.recipient_local_time and campaign.send_at is not None:
        local = quiet_hours.wall_clock_in(campaign.send_at, quiet_hours.zone_for(shop.timezone), zone)
        when = max(local, start)
    return quiet_hours.defer(shop, when, zone)


def snapshot(session: OrmSession, campaign: Campaign, *, now: dt.datetime) -> dict[str, int]:
    """Freeze the audience, its segments evaluated from their rules at `now`, into one messages row per person
    (pending, or skipped with its reason); commits.

    One INSERT ... SELECT ... ON CONFLICT DO NOTHING on both databases: running it again (a restarted
    start) inserts nothing twice. Each pending row's due_at is its first allowed instant (recipient's
    local time, quiet hours). Returns the counts of the rows of the campaign by status / skip reason.
    """
    now = aware_utc(now)
    shop = session.get(Shop, campaign.shop_id)
    include_ids, exclude_ids = campaign_segments(session, campaign)
    included, reason, zone = _audience(session, shop, include_ids, exclude_ids, now, campaign.id)
    if included is not None:
        names = session.scalars(_people(shop, included, zone).distinct()).all()
        dues = {name: first_due(shop, campaign, quiet_hours.zone_for(name, shop.timezone), now) for name in names}
        # Each person's reason is worked out once (a materialised CTE): used inline, the CASE and its
        # smart-sending EXISTS would be evaluated three times, once per column that depends on it.
        people = (_people(shop, included, Subscriber.id.label("id"), Subscriber.phone.label("phone"),
                          reason.label("reason"), zone.label("zone"))
                  .cte("audience").prefix_with("MATERIALIZED", dialect="postgresql"))
        due = case({name: literal(when, UTCDateTime) for name, when in dues.items()}, value=people.c.zone,
                   else_=literal(now, UTCDateTime)) if dues else literal(now, UTCDateTime)
        source = select(
            literal(shop.id, IdType), literal(campaign.id, IdType), people.c.id, literal("campaign"),
            people.c.phone,
            case((people.c.reason.is_(None), literal(MessageStatus.PENDING)), else_=literal(MessageStatus.SKIPPED)),
            people.c.reason,
            case((people.c.reason.is_(None), due), else_=literal(None, UTCDateTime)),
            literal(0, Integer),
            literal(now, UTCDateTime), literal(now, UTCDateTime),
        ).where(true())  # SQLite reads "FROM audience ON CONFLICT" as a join without it
        dialect = postgresql if on_postgresql(session) else sqlite
        if dialect is postgresql:
            # The planner's cost for 100k rows switches JIT on, and compiling the plan took longer (~3 s on
            # these two cores) than running it; this statement is row-at-a-time work JIT cannot speed up.
            session.execute(text("SET LOCAL jit = off"))
        statement = (dialect.insert(Message.__table__)
                     .from_select(["shop_id", "campaign_id", "subscriber_id", "kind", "to_phone", "status",
                                   "skip_reason", "due_at", "attempts", "created_at", "updated_at"],
                                  source)
                     .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id", "occurrence"]))
        session.execute(statement)
    session.commit()
    return counts(session, campaign)


def counts(session: OrmSession, campaign: Campaign) -> dict[str, int]:
    """The campaign's rows by status, and skipped rows by reason ("skipped:<reason>")."""
    out: dict[str, int] = {}
    for status, skip, n in session.execute(
            select(Message.status, Message.skip_reason, func.count())
            .where(Message.campaign_id == campaign.id).group_by(Message.status, Message.skip_reason)):
        out[status] = out.get(status, 0) + n
        if status == MessageStatus.SKIPPED:
            out[f"skipped:{skip}"] = out.get(f"skipped:{skip}", 0) + n
    out["total"] = sum(v for k, v in out.items() if ":" not in k)
    return out
