"""A segment's history: its member count day by day, and its enter/leave log paged and filtered in the database.

Builds and re-checks (kinnekt.segments.membership) call `record_counts` in the transaction that changes the
members, so the daily counts never disagree with the log. The segment page reads both through this module.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

from sqlalchemy import Date, and_, func, literal, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.db import UTCDateTime, aware_utc, on_postgresql
from kinnekt.models import Customer, Segment, SegmentCount, SegmentEvent, SegmentMember, Subscriber
from kinnekt.segments.periods import day_start, shop_zone
from kinnekt.subscribers import search

CHART_DAYS = 90
"""Days the member count chart covers, today included."""
LOG_PAGE_SIZE = 25
"""Enter/leave log entries per page."""
SAMPLE_SIZE = 10
"""Members shown on the segment page."""
MAX_QUERY_LENGTH = 100
"""Longest log search text."""

LOG_KINDS = {"enter": "Entered", "leave": "Left"}
"""The log's two kinds of change, in the merchant's words."""

CAUSE_LABELS = {
    "build": "Segment counted",
    "edit": "Rules changed",
    "edit_trigger": "Rules changed (automations notified)",
    "recheck": "Subscriber's data changed",
    "sweep": "Dates moved on",
}
"""Why membership changed (membership.CAUSES), as the log shows it."""

CAUSE_HELP = {
    "build": "The segment was counted from its rules (its first count, or a rebuild).",
    "edit": "You changed the segment's rules.",
    "edit_trigger": "You changed the segment's rules and chose to let automations act on who moved.",
    "recheck": "An order, a click, a message or a subscription change moved this subscriber.",
    "sweep": "The segment's date rules were checked again as time passed.",
}
"""A longer explanation of each cause (the log shows it on hover and to screen readers)."""


# ---------------------------------------------------------------------------------------------- counts

def local_day(now: dt.datetime, timezone: str | None) -> dt.date:
    """The shop's local date at `now` (UTC where the shop has no time zone)."""
    return aware_utc(now).astimezone(shop_zone(timezone)).date()


def _upsert(session: OrmSession):
    if on_postgresql(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(SegmentCount.__table__)


def record_counts(session: OrmSession, segment_ids: Iterable[int], *, now: dt.datetime, timezone: str | None) -> None:
    """Write the segments' current member counts as their count of today (the shop's day); no commit.

    One INSERT ... SELECT from `segments` with an upsert on the unique (segment, day): the last write of a day is
    its count at the end of that day. All `segment_ids` belong to one shop (the one whose time zone is given).
    """
    ids = sorted(set(segment_ids))
    if not ids:
        return
    segments = Segment.__table__
    day = local_day(now, timezone)
    rows = select(segments.c.shop_id, segments.c.id, literal(day, Date()), segments.c.member_count,
                  literal(aware_utc(now), UTCDateTime())).where(segments.c.id.in_(ids))
    statement = _upsert(session).from_select(["shop_id", "segment_id", "day", "member_count", "at"], rows)
    statement = statement.on_conflict_do_update(
        index_elements=["segment_id", "day"],
        set_={"member_count": statement.excluded.member_count, "at": statement.excluded.at})
    session.execute(statement)


@dataclass(frozen=True)
class CountHistory:
    """Member counts, one per local day from the first recorded day (at most CHART_DAYS back) to today.

    `t` holds the start of each day in Unix seconds, for the chart; a day without a record kept the count of the
    day before (every change writes one). Empty when the segment was never counted.
    """

    timezone: str
    days: list[dt.date]
    t: list[int]
    counts: list[int]

    def as_chart(self) -> dict:
        """The chart's JSON: timezone, t, counts and a readable label per day."""
        return {"timezone": self.timezone, "t": self.t, "counts": self.counts,
                "labels": [f"{day:%b} {day.day}, {day.year}" for day in self.days]}


def count_history(session: OrmSession, segment: Segment, *, timezone: str | None, now: dt.datetime,
                  days: int = CHART_DAYS) -> CountHistory:
    """The segment's member count per local day over the last `days` days (today included), from segment_counts.

    Reads at most `days` rows plus the last one before the window (the count the window starts with).
    """
    zone_name = timezone or "UTC"
    zone = shop_zone(timezone)
    today = local_day(now, timezone)
    first = today - dt.timedelta(days=days - 1)
    scoped = (SegmentCount.shop_id == segment.shop_id, SegmentCount.segment_id == segment.id)
    inside = session.execute(select(SegmentCount.day, SegmentCount.member_count)
                             .where(*scoped, SegmentCount.day >= first, SegmentCount.day <= today)
                             .order_by(SegmentCount.day)).all()
    before = session.execute(select(SegmentCount.day, SegmentCount.member_count)
                             .where(*scoped, SegmentCount.day < first)
                             .order_by(SegmentCount.day.desc()).limit(1)).first()
    by_day = {day: count for day, count in inside}
    if before is not None:
        start, current = first, before.member_count
    elif inside:
        start, current = inside[0].day, inside[0].member_count
    else:
        return CountHistory(timezone=zone_name, days=[], t=[], counts=[])
    out_days, t, counts = [], [], []
    day = start
    while day <= today:
        current = by_day.get(day, current)
        begins = day_start(day, zone)
        out_days.append(day)
        t.append(int(begins.timestamp()) if begins is not None else 0)
        counts.append(current)
        day += dt.timedelta(days=1)
    return CountHistory(timezone=zone_name, days=out_days, t=t, counts=counts)


# ---------------------------------------------------------------------------------------------- the log

@dataclass(frozen=True)
class LogEntry:
    """One enter or leave of the log, with the subscriber as it is now (None when it was deleted since)."""

    id: int
    kind: str
    at: dt.datetime
    cause: str
    subscriber_id: int
    phone: str | None
    name: str | None

    @property
    def kind_label(self) -> str:
        """"Entered" or "Left"."""
        return LOG_KINDS.get(self.kind, self.kind)

    @property
    def cause_label(self) -> str:
        """Why, in the merchant's words."""
        return CAUSE_LABELS.get(self.cause, self.cause)

    @property
    def cause_help(self) -> str:
        """Why, in a sentence."""
        return CAUSE_HELP.get(self.cause, "")


@dataclass(frozen=True)
class LogSlice:
    """One page of the log: its entries, the page number shown (a page past the end is the last) and the total."""

    entries: list[LogEntry]
    number: int
    size: int
    total: int


def _name(own: str | None, first: str | None, last: str | None) -> str | None:
    return own or " ".join(part for part in (first, last) if part) or None


def log_page(session: OrmSession, segment: Segment, *, kind: str = "", query: str = "", page: int = 1,
             size: int = LOG_PAGE_SIZE) -> LogSlice:
    """One page of the segment's enter/leave log, newest first, optionally only enters or leaves (`kind`) and
    only subscribers whose phone or name matches `query`.

    The filter, the count and the page (LIMIT / OFFSET over the (segment_id, id) index) all run in the database;
    a page past the end is the last page. Raises ValueError for a kind that is not "enter", "leave" or "".
    """
    if kind not in ("", *LOG_KINDS):
        raise ValueError(f"kind must be one of {', '.join(LOG_KINDS)} or empty")
    conditions = [SegmentEvent.shop_id == segment.shop_id, SegmentEvent.segment_id == segment.id]
    if kind:
        conditions.append(SegmentEvent.kind == kind)
    query = query.strip()
    if query:
        # The shop's matching subscribers first (a few among thousands), then their entries: the search never
        # joins every entry of a long log to its subscriber.
        conditions.append(SegmentEvent.subscriber_id.in_(
            select(Subscriber.id).outerjoin(Customer, Customer.id == Subscriber.customer_id)
            .where(Subscriber.shop_id == segment.shop_id, search.matches(query))))
    total = session.scalar(select(func.count()).select_from(SegmentEvent).where(*conditions)) or 0
    last = max(1, -(-total // size))
    page = min(max(1, page), last)
    # The page's ids alone first (walked on the (segment_id, id) index), then their details: the rows OFFSET
    # skips are never joined to subscribers.
    ids = (select(SegmentEvent.id).where(*conditions).order_by(SegmentEvent.id.desc())
           .limit(size).offset((page - 1) * size).subquery())
    joined = and_(Subscriber.id == SegmentEvent.subscriber_id, Subscriber.shop_id == SegmentEvent.shop_id)
    rows = session.execute(
        select(SegmentEvent.id, SegmentEvent.kind, SegmentEvent.at, SegmentEvent.cause, SegmentEvent.subscriber_id,
               Subscriber.phone, Subscriber.first_name, Customer.first_name, Customer.last_name)
        .join(ids, ids.c.id == SegmentEvent.id)
        .outerjoin(Subscriber, joined)
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .order_by(SegmentEvent.id.desc())).all()
    entries = [LogEntry(id=id_, kind=kind_, at=at, cause=cause, subscriber_id=subscriber_id, phone=phone,
                        name=_name(own, first, last_name))
               for id_, kind_, at, cause, subscriber_id, phone, own, first, last_name in rows]
    return LogSlice(entries=entries, number=page, size=size, total=total)


# ---------------------------------------------------------------------------------------------- members

@dataclass(frozen=True)
class SampleMember:
    """A member shown on the segment page."""

    id: int
    phone: str
    name: str | None
    entered_at: dt.datetime


def member_sample(session: OrmSession, segment: Segment, *, size: int = SAMPLE_SIZE) -> list[SampleMember]:
    """The segment's newest members (the materialised ones), newest first."""
    rows = session.execute(
        select(Subscriber.id, Subscriber.phone, Subscriber.first_name, Customer.first_name, Customer.last_name,
               SegmentMember.entered_at)
        .join(Subscriber, and_(Subscriber.id == SegmentMember.subscriber_id,
                               Subscriber.shop_id == SegmentMember.shop_id))
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .where(SegmentMember.shop_id == segment.shop_id, SegmentMember.segment_id == segment.id)
        .order_by(SegmentMember.entered_at.desc(), SegmentMember.id.desc()).limit(size)).all()
    return [SampleMember(id=i, phone=phone, name=_name(own, first, last), entered_at=entered)
            for i, phone, own, first, last, entered in rows]
