"""Calendar periods of segment rules, turned into UTC instants in the shop's time zone."""
from __future__ import annotations

import datetime as dt
from typing import NamedTuple
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc

NAMED_PERIODS = ("all_time", "today", "yesterday", "last_7_days", "last_30_days", "last_90_days")
"""Period words of the contract, besides the `{"from", "to"}` object."""

# Days before today at which each "last N days" period starts (today counts as one of the N).
_DAYS_BACK = {"today": 0, "last_7_days": 6, "last_30_days": 29, "last_90_days": 89}


class Bounds(NamedTuple):
    """A half-open interval [start, end) of aware UTC instants; None is -infinity / +infinity."""

    start: dt.datetime | None
    end: dt.datetime | None


def shop_zone(name: str | None) -> dt.tzinfo:
    """The shop's IANA time zone; UTC where the shop has none (an unknown name raises)."""
    return ZoneInfo(name) if name else UTC


def day_start(day: dt.date, zone: dt.tzinfo) -> dt.datetime | None:
    """The first instant of a local day, in UTC; None when it is before the first representable instant.

    zoneinfo reads midnight with fold=0: where midnight falls in a DST gap this is the offset before
    the change, which lands on the transition itself (the real start of that day); where midnight
    happens twice it is the first occurrence.
    """
    try:
        return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None


def next_day_start(day: dt.date, zone: dt.tzinfo) -> dt.datetime | None:
    """The first instant of the local day after `day`, in UTC; None after the last representable day."""
    try:
        return day_start(day + dt.timedelta(days=1), zone)
    except OverflowError:
        return None


def local_today(now: dt.datetime, zone: dt.tzinfo) -> dt.date:
    """The shop's calendar date at `now`."""
    return now.astimezone(zone).date()


def days_ago(now: dt.datetime, days: int) -> dt.datetime | None:
    """now − days×24h, or None (-infinity) when that is before the first representable instant."""
    try:
        return now - dt.timedelta(days=days)
    except OverflowError:
        return None


def period_bounds(period: str | dict, *, now: dt.datetime, zone: dt.tzinfo) -> Bounds:
    """The [start, end) of a normalised period (a word or `{"from", "to"}`) at `now` in `zone`."""
    if isinstance(period, dict):
        first = dt.date.fromisoformat(period["from"])
        last = dt.date.fromisoformat(period["to"])
        start = day_start(first, zone)
        return Bounds(start, next_day_start(last, zone))
    if period == "all_time":
        return Bounds(None, None)
    today = local_today(now, zone)
    if period == "yesterday":
        return Bounds(day_start(today - dt.timedelta(days=1), zone), day_start(today, zone))
    return Bounds(day_start(today - dt.timedelta(days=_DAYS_BACK[period]), zone), None)


def period_days(period: str | dict, *, now: dt.datetime, zone: dt.tzinfo) -> tuple[dt.date | None, dt.date | None]:
    """A period as calendar days [first, end) in `zone` (None: open), for values that are dates, not instants."""
    if isinstance(period, dict):
        last = dt.date.fromisoformat(period["to"])
        return dt.date.fromisoformat(period["from"]), (None if last == dt.date.max else last + dt.timedelta(days=1))
    if period == "all_time":
        return None, None
    today = local_today(now, zone)
    if period == "yesterday":
        return today - dt.timedelta(days=1), today
    return today - dt.timedelta(days=_DAYS_BACK[period]), None


def window_bounds(within: str | dict, *, now: dt.datetime, zone: dt.tzinfo) -> tuple[dt.datetime | None,
                                                                                       dt.datetime | None, bool]:
    """An event window as (start, end, end_inclusive): a period, or `{"last_days": N}` = [now − N×24h, now]."""
    if isinstance(within, dict) and "last_days" in within:
        return days_ago(now, within["last_days"]), now, True
    start, end = period_bounds(within, now=now, zone=zone)
    return start, end, False
