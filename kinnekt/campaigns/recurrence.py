"""Recurring campaigns: when the next run is due, and the run itself (a campaign of kind "run" with its own snapshot).

A recurring campaign (kind "campaign", `repeat` weekly or monthly) keeps the rule of its first run as chosen
(`repeat_anchor`), read on the wall clock of the shop's time zone: weekly is the same weekday and time, monthly
the same day of the month and time, on the month's last day when it is shorter (31 -> Feb 28 / 29, Apr 30).
The wall-clock time is kept across DST changes (09:00 stays 09:00); a time that does not exist on a day (the
spring-forward gap) is read after the gap, an ambiguous one as its first occurrence (kinnekt.campaigns.quiet_hours).
Its `send_at` is the next run; `repeat_until` is the last local day a run may happen (inclusive).

When a run is due, `run_due` creates the run and moves the campaign to its next occurrence in one transaction;
the unique (parent_id, send_at) makes a second attempt for the same due time a no-op. The run is then started
through `lifecycle.start` like any campaign (a crash in between is picked up by the recovery scan). Occurrences
missed while the workers were down collapse into one run: the next one is the first after now.
"""
from __future__ import annotations

import calendar
import datetime as dt
import logging

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as OrmSession

from kinnekt.campaigns import quiet_hours
from kinnekt.db import on_postgresql, utcnow
from kinnekt.models import Campaign, CampaignSegment, Shop
from kinnekt.models.campaign import CampaignStatus

log = logging.getLogger(__name__)

REPEATS = {"none": "Does not repeat", "weekly": "Weekly", "monthly": "Monthly"}
"""The composer's Repeat choices, in the merchant's words."""

_COPIED = ("body", "recipient_local_time", "discount_mode", "discount_code", "discount_kind", "discount_value",
           "cap_choice")


def is_recurring(campaign: Campaign) -> bool:
    """True for a recurring campaign (not one of its runs)."""
    return campaign.kind == "campaign" and (campaign.repeat or "none") != "none"


def occurrence(anchor: dt.datetime, repeat: str, n: int) -> dt.datetime:
    """The `n`th occurrence (0 = the anchor) of a rule, as a naive local wall-clock time."""
    if repeat == "weekly":
        return anchor + dt.timedelta(weeks=n)
    if repeat == "monthly":
        month_index = anchor.year * 12 + anchor.month - 1 + n
        year, month = divmod(month_index, 12)
        day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
        return anchor.replace(year=year, month=month + 1, day=day)
    raise ValueError(f"not a repeat: {repeat!r}")


def instant(local: dt.datetime, zone) -> dt.datetime:
    """The UTC instant of a naive wall-clock time in `zone` (gap: after it; overlap: the first)."""
    return quiet_hours.local_instant(local.date(), local.hour * 60 + local.minute, zone)


def next_occurrence(anchor: dt.datetime, repeat: str, zone, after: dt.datetime,
                    until: dt.date | None = None) -> dt.datetime | None:
    """The first run of the rule (`anchor` aware, read in `zone`) strictly after `after`; None past `until`."""
    local_anchor = anchor.astimezone(zone).replace(tzinfo=None)
    after_local = after.astimezone(zone).replace(tzinfo=None)
    if repeat == "weekly":
        n = (after_local - local_anchor).days // 7 - 1
    else:
        n = (after_local.year - local_anchor.year) * 12 + after_local.month - local_anchor.month - 1
    n = max(0, n)
    while True:
        local = occurrence(local_anchor, repeat, n)
        if until is not None and local.date() > until:
            return None
        when = instant(local, zone)
        if when > after:
            return when
        n += 1


def describe(campaign: Campaign, zone) -> str:
    """The rule in words: "Every Monday at 09:00 (America/New_York)", "Monthly on day 31 (...) at 09:00 (...)"."""
    anchor = campaign.repeat_anchor or campaign.send_at
    if not is_recurring(campaign) or anchor is None:
        return ""
    local = anchor.astimezone(zone)
    if campaign.repeat == "weekly":
        text = f"Every {local:%A} at {local:%H:%M} ({zone.key})"
    else:
        shorter = " (last day in shorter months)" if local.day > 28 else ""
        text = f"Monthly on day {local.day}{shorter} at {local:%H:%M} ({zone.key})"
    if campaign.repeat_until is not None:
        until = campaign.repeat_until
        text += f", until {until.day} {until:%b %Y}"
    return text


def run_name(name: str, local: dt.datetime) -> str:
    """A run's name: the campaign's name and the run's local date ("Weekly deals — 7 Dec 2026")."""
    suffix = f" — {local.day} {local:%b %Y}"
    return (name or "")[:255 - len(suffix)] + suffix


def _zone(session: OrmSession, campaign: Campaign):
    shop = session.get(Shop, campaign.shop_id)
    return quiet_hours.zone_for(shop.timezone if shop is not None else None)


def create_run(session: OrmSession, parent: Campaign, due: dt.datetime, *, now: dt.datetime) -> tuple[int, bool]:
    """Insert the run of `parent` for `due` (tolerating one that exists) with its segments; (run id, created).

    Runs in the caller's transaction (it does not commit).
    """
    zone = _zone(session, parent)
    values = {name: getattr(parent, name) for name in _COPIED}
    if parent.discount_mode == "shared":
        # The shared code exists at Shopify after the first run: the later ones reuse it.
        values["discount_shopify_id"] = session.scalar(
            select(Campaign.discount_shopify_id).where(
                Campaign.parent_id == parent.id, Campaign.discount_code == parent.discount_code,
                Campaign.discount_shopify_id.is_not(None)).order_by(Campaign.send_at.desc()).limit(1))
    values.update(shop_id=parent.shop_id, name=run_name(parent.name, due.astimezone(zone)),
                  status=CampaignStatus.IN_PROGRESS,
                  enabled=True, send_now=False, send_at=due, started_at=now, kind="run", parent_id=parent.id,
                  repeat="none", created_at=utcnow(), updated_at=utcnow())
    dialect = postgresql if on_postgresql(session) else sqlite
    inserted = session.execute(dialect.insert(Campaign.__table__).values(**values)
                               .on_conflict_do_nothing(index_elements=["parent_id", "send_at"])
                               .returning(Campaign.__table__.c.id)).scalar()
    created = inserted is not None
    run_id = inserted if created else session.scalar(
        select(Campaign.id).where(Campaign.parent_id == parent.id, Campaign.send_at == due))
    if created:
        rows = session.execute(select(CampaignSegment.segment_id, CampaignSegment.mode)
                               .where(CampaignSegment.campaign_id == parent.id)).all()
        if rows:
            session.execute(insert(CampaignSegment), [
                {"shop_id": parent.shop_id, "campaign_id": run_id, "segment_id": segment_id, "mode": mode}
                for segment_id, mode in rows])
    return run_id, created


def run_due(session: OrmSession, parent: Campaign, *, now: dt.datetime) -> tuple[int | None, dt.datetime | None]:
    """Create the due run of `parent` and move it to its next occurrence (or complete it); commits.

    Returns (the run's id, the parent's next run time). The run id is None when another start got there first
    (the parent had already moved on): nothing is created twice, and nothing is skipped.
    """
    due = parent.send_at
    zone = _zone(session, parent)
    anchor = parent.repeat_anchor or due
    run_id, _ = create_run(session, parent, due, now=now)
    following = next_occurrence(anchor, parent.repeat, zone, max(due, now), parent.repeat_until)
    changes = {"send_at": following} if following is not None else {"status": CampaignStatus.COMPLETED,
                                                                    "finished_at": now}
    moved = session.execute(
        update(Campaign).where(Campaign.id == parent.id, Campaign.status == CampaignStatus.SCHEDULED,
                               Campaign.send_at == due)
        .values(**changes).execution_options(synchronize_session=False)).rowcount
    if not moved:
        session.rollback()
        return None, None
    session.commit()
    log.info("campaign %s: run %s for %s; next %s", parent.id, run_id, due, following)
    return run_id, following


def catch_up(session: OrmSession, parent: Campaign, *, now: dt.datetime) -> None:
    """A recurring campaign switched on again skips the runs it missed while off: next run after now. Commits."""
    if (not is_recurring(parent) or parent.status != CampaignStatus.SCHEDULED or parent.send_at is None
            or parent.send_at > now):
        return
    following = next_occurrence(parent.repeat_anchor or parent.send_at, parent.repeat, _zone(session, parent), now,
                                parent.repeat_until)
    changes = {"send_at": following} if following is not None else {"status": CampaignStatus.COMPLETED,
                                                                    "finished_at": now}
    session.execute(update(Campaign).where(Campaign.id == parent.id, Campaign.status == CampaignStatus.SCHEDULED,
                                           Campaign.send_at == parent.send_at)
                    .values(**changes).execution_options(synchronize_session=False))
    session.commit()
    session.refresh(parent)


def last_day_ok(send_at: dt.datetime | None, until: dt.date | None, zone) -> bool:
    """False when the end date is before the first run's local day."""
    return send_at is None or until is None or send_at.astimezone(zone).date() <= until
