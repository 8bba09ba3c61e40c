"""Quiet hours and recipients' local times: when a message may reach a phone, in the recipient's own time zone.

The window is the shop's `quiet_hours_start` to `quiet_hours_end` (minutes after midnight, local wall-clock
time); start > end wraps midnight (21:00-08:00), start == end is an empty window. A message due inside the
window waits until it ends (the first instant the local clock shows `quiet_hours_end`); it is never dropped.
Zones come from the subscriber (set from the number), else the shop, else UTC; an unknown zone name falls
back the same way. Wall-clock times that do not exist (a spring-forward gap) resolve to after the gap;
ambiguous ones (the autumn repeat) to their first occurrence.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


def zone_for(name: str | None, fallback: str | None = None) -> ZoneInfo:
    """The recipient's zone: `name`, else `fallback` (the shop's), else UTC; unknown names fall through."""
    for candidate in (name, fallback):
        if candidate:
            zone = _zone(candidate.strip())
            if zone is not None:
                return zone
    return ZoneInfo("UTC")


def window(shop) -> tuple[int, int] | None:
    """The shop's quiet hours as (start, end) minutes after midnight, or None when off or empty."""
    if not shop.quiet_hours_enabled:
        return None
    start, end = int(shop.quiet_hours_start) % 1440, int(shop.quiet_hours_end) % 1440
    return None if start == end else (start, end)


def _inside(minute: int, start: int, end: int) -> bool:
    return start <= minute < end if start < end else (minute >= start or minute < end)


def local_instant(day: dt.date, minutes: int, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant at which the wall clock in `zone` shows `minutes` after midnight on `day`."""
    naive = dt.datetime.combine(day, dt.time(minutes // 60, minutes % 60))
    # fold=0: an ambiguous time is its first occurrence; a time inside a spring-forward gap is read with
    # the offset before the change, which lands after the gap (02:00 on the day clocks jump to 03:00 -> 03:00).
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def is_quiet(shop, when: dt.datetime, zone: ZoneInfo) -> bool:
    """Whether `when` (aware) falls inside the shop's quiet hours on the wall clock of `zone`."""
    span = window(shop)
    if span is None:
        return False
    local = when.astimezone(zone)
    return _inside(local.hour * 60 + local.minute, *span)


def defer(shop, when: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """`when` (aware, returned in UTC) if outside quiet hours in `zone`, else the end of that quiet window."""
    when = when.astimezone(UTC)
    span = window(shop)
    if span is None:
        return when
    start, end = span
    local = when.astimezone(zone)
    minute = local.hour * 60 + local.minute
    if not _inside(minute, start, end):
        return when
    day = local.date()
    if start > end and minute >= start:  # evening part of a window that wraps midnight: it ends tomorrow
        day += dt.timedelta(days=1)
    return max(local_instant(day, end, zone), when)


def wall_clock_in(send_at: dt.datetime, shop_zone: ZoneInfo, zone: ZoneInfo) -> dt.datetime:
    """The instant at which `zone` shows the wall-clock time that `send_at` shows in the shop's zone."""
    local = send_at.astimezone(shop_zone)
    return local_instant(local.date(), local.hour * 60 + local.minute, zone) + dt.timedelta(
        seconds=local.second, microseconds=local.microsecond)
