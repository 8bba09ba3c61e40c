"""Recurring campaigns: next-run maths (weekly across DST in New York and Berlin, monthly across month ends and a
leap year, end date in the shop's zone), and runs made by the start job on a controllable clock (own snapshot,
own statistics, once per due time, none when off or ended, delete with the runs)."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from kinnekt.campaigns import lifecycle, recurrence, stats
from kinnekt.campaigns.lifecycle import CampaignError
from kinnekt.models import Campaign, CampaignSegment, Message
from kinnekt.segments import membership
from tests.test_campaign_audience import subscriber

UTC = dt.timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone, *parts) -> dt.datetime:
    """A wall-clock time in `zone`, as a UTC instant."""
    return dt.datetime(*parts, tzinfo=zone).astimezone(UTC)


def runs_of(anchor: dt.datetime, repeat: str, zone, count: int, until=None) -> list[dt.datetime]:
    """The first `count` runs of a rule (the anchor first), each found as the one after the previous."""
    found = [anchor]
    while len(found) < count:
        following = recurrence.next_occurrence(anchor, repeat, zone, found[-1], until)
        if following is None:
            break
        found.append(following)
    return found


# ---------------------------------------------------------------------------------------------- the maths

def test_weekly_keeps_nine_in_new_york_across_both_dst_changes():
    spring = runs_of(at(NEW_YORK, 2026, 3, 2, 9, 0), "weekly", NEW_YORK, 3)
    assert spring == [dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC),  # EST, UTC-5
                      dt.datetime(2026, 3, 9, 13, 0, tzinfo=UTC),  # EDT from 8 March, UTC-4
                      dt.datetime(2026, 3, 16, 13, 0, tzinfo=UTC)]
    autumn = runs_of(at(NEW_YORK, 2026, 10, 26, 9, 0), "weekly", NEW_YORK, 2)
    assert autumn == [dt.datetime(2026, 10, 26, 13, 0, tzinfo=UTC), dt.datetime(2026, 11, 2, 14, 0, tzinfo=UTC)]
    assert {r.astimezone(NEW_YORK).strftime("%a %H:%M") for r in spring + autumn} == {"Mon 09:00"}


def test_weekly_keeps_nine_in_berlin_across_both_dst_changes():
    spring = runs_of(at(BERLIN, 2026, 3, 23, 9, 0), "weekly", BERLIN, 2)
    assert spring == [dt.datetime(2026, 3, 23, 8, 0, tzinfo=UTC), dt.datetime(2026, 3, 30, 7, 0, tzinfo=UTC)]
    autumn = runs_of(at(BERLIN, 2026, 10, 19, 9, 0), "weekly", BERLIN, 2)
    assert autumn == [dt.datetime(2026, 10, 19, 7, 0, tzinfo=UTC), dt.datetime(2026, 10, 26, 8, 0, tzinfo=UTC)]


def test_weekly_time_in_the_spring_gap_runs_after_it_and_returns_the_week_after():
    runs = runs_of(at(NEW_YORK, 2026, 3, 1, 2, 30), "weekly", NEW_YORK, 3)
    # 02:30 does not exist on 8 March (02:00 -> 03:00): that run is at 03:30 EDT; the rule stays 02:30.
    assert [r.astimezone(NEW_YORK).strftime("%d %H:%M") for r in runs] == ["01 02:30", "08 03:30", "15 02:30"]
    # 01:30 happens twice on 1 November: the first (EDT) one.
    autumn = runs_of(at(NEW_YORK, 2026, 10, 25, 1, 30), "weekly", NEW_YORK, 2)
    assert autumn[1] == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_monthly_on_the_31st_takes_the_last_day_of_shorter_months():
    common = runs_of(at(NEW_YORK, 2027, 1, 31, 9, 0), "monthly", NEW_YORK, 4)
    assert [r.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M") for r in common] == [
        "2027-01-31 09:00", "2027-02-28 09:00", "2027-03-31 09:00", "2027-04-30 09:00"]
    assert common[2] == dt.datetime(2027, 3, 31, 13, 0, tzinfo=UTC)  # after the March change: EDT
    leap = runs_of(at(NEW_YORK, 2028, 1, 31, 9, 0), "monthly", NEW_YORK, 3)
    assert [r.astimezone(NEW_YORK).strftime("%m-%d") for r in leap] == ["01-31", "02-29", "03-31"]
    december = runs_of(at(NEW_YORK, 2026, 12, 15, 18, 0), "monthly", NEW_YORK, 2)
    assert december[1].astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M") == "2027-01-15 18:00"


def test_next_occurrence_after_a_long_gap_is_the_first_in_the_future():
    anchor = at(NEW_YORK, 2026, 1, 5, 9, 0)
    assert recurrence.next_occurrence(anchor, "weekly", NEW_YORK, at(NEW_YORK, 2026, 6, 3, 12, 0)) == at(
        NEW_YORK, 2026, 6, 8, 9, 0)
    assert recurrence.next_occurrence(anchor, "monthly", NEW_YORK, at(NEW_YORK, 2026, 6, 5, 9, 0)) == at(
        NEW_YORK, 2026, 7, 5, 9, 0)


def test_end_date_is_inclusive_on_the_shops_calendar():
    # Monday 21:00 in New York is already Tuesday in UTC: the end date is read in New York.
    anchor = at(NEW_YORK, 2026, 6, 1, 21, 0)
    assert len(runs_of(anchor, "weekly", NEW_YORK, 5, until=dt.date(2026, 6, 8))) == 2
    assert len(runs_of(anchor, "weekly", NEW_YORK, 5, until=dt.date(2026, 6, 7))) == 1
    assert recurrence.last_day_ok(anchor, dt.date(2026, 6, 1), NEW_YORK)
    assert not recurrence.last_day_ok(anchor, dt.date(2026, 5, 31), NEW_YORK)


def test_describe_the_rule():
    weekly = Campaign(kind="campaign", repeat="weekly", repeat_anchor=at(NEW_YORK, 2026, 12, 7, 9, 0))
    assert recurrence.describe(weekly, NEW_YORK) == "Every Monday at 09:00 (America/New_York)"
    monthly = Campaign(kind="campaign", repeat="monthly", repeat_anchor=at(NEW_YORK, 2027, 1, 31, 9, 0),
                       repeat_until=dt.date(2027, 6, 30))
    assert recurrence.describe(monthly, NEW_YORK) == (
        "Monthly on day 31 (last day in shorter months) at 09:00 (America/New_York), until 30 Jun 2027")
    assert recurrence.describe(Campaign(kind="campaign", repeat="none"), NEW_YORK) == ""


# ---------------------------------------------------------------------------------------------- runs

NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)  # Sunday 12:00 in New York (EDT)
FIRST = NOW + dt.timedelta(hours=2)  # Sunday 14:00 in New York


def recurring(db, shop, seg, *, repeat="weekly", send_at=FIRST, until=None, **changes) -> Campaign:
    """A scheduled recurring campaign to `seg`."""
    values = {"name": "Weekly deals", "body": "Hi {first_name}! https://example.com/deals",
              "include_segment_ids": [seg.id], "exclude_segment_ids": [], "send_now": False, "send_at": send_at,
              "recipient_local_time": False, "discount_mode": "none", "discount_code": None,
              "discount_kind": None, "discount_value": None, "repeat": repeat, "repeat_until": until, **changes}
    row = lifecycle.save(db, shop, values)
    return lifecycle.schedule(db, row, now=send_at - dt.timedelta(hours=2))


def runs(db, parent) -> list[Campaign]:
    db.expire_all()
    return list(db.scalars(select(Campaign).where(Campaign.parent_id == parent.id).order_by(Campaign.send_at)))


def recipients(db, run) -> set[int]:
    return set(db.scalars(select(Message.subscriber_id).where(Message.campaign_id == run.id)))


def test_each_run_snapshots_the_segment_at_its_own_time(db, shop, audience_of_three, jobs):
    people, us = audience_of_three
    parent = recurring(db, shop, us)
    assert (parent.status, parent.send_at, parent.repeat_anchor) == ("scheduled", FIRST, FIRST)
    assert lifecycle.start(db, parent.id, now=FIRST - dt.timedelta(minutes=1)) == "not due"
    assert runs(db, parent) == []

    outcome = lifecycle.start(db, parent.id, now=FIRST)
    first = runs(db, parent)[0]
    assert outcome == f"run {first.id} started"
    assert (first.kind, first.send_at, first.status, first.snapshot_at) == ("run", FIRST, "in_progress", FIRST)
    assert first.name == "Weekly deals — 15 Mar 2026" and first.body == parent.body
    assert {(cs.segment_id, cs.mode) for cs in first.audience} == {(us.id, "include")}
    assert recipients(db, first) == {p.id for p in people}
    db.refresh(parent)
    assert (parent.status, parent.send_at) == ("scheduled", FIRST + dt.timedelta(weeks=1))
    # The campaign's next start is queued for its next run; the run's senders are queued too.
    assert ("start_campaign", (parent.id,)) in [(n, a) for n, a, _, when in jobs.jobs if when == parent.send_at]
    assert "send_campaign" in jobs.names()

    # Between the runs a subscriber joins the segment: only the second run includes them.
    newcomer = subscriber(db, shop)
    membership.build(db, us.id, now=FIRST + dt.timedelta(days=3))
    second_time = FIRST + dt.timedelta(weeks=1)
    lifecycle.start(db, parent.id, now=second_time)
    first, second = runs(db, parent)
    assert second.send_at == second_time and second.name == "Weekly deals — 22 Mar 2026"
    assert recipients(db, first) == {p.id for p in people}
    assert recipients(db, second) == {p.id for p in people} | {newcomer.id}
    # Each run has its own statistics, listed under the campaign (newest first).
    assert stats.for_campaign(db, first).recipients == 3 and stats.for_campaign(db, second).recipients == 4
    rows, _ = stats.campaign_rows(db, shop, kind="run", parent_id=parent.id)
    assert [r.campaign.id for r in rows] == [second.id, first.id]
    listed, _ = stats.campaign_rows(db, shop)
    assert [r.campaign.id for r in listed] == [parent.id]  # runs stay off the campaigns list


def test_a_second_start_for_the_same_due_time_makes_no_second_run(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    parent = recurring(db, shop, us)
    lifecycle.start(db, parent.id, now=FIRST)
    assert lifecycle.start(db, parent.id, now=FIRST) == "not due"  # the due scan fires after the enqueue_at job
    assert len(runs(db, parent)) == 1
    # A start that read the campaign before the other moved it on: the insert is a no-op, nothing moves twice.
    stale = Campaign(id=parent.id, shop_id=shop.id, kind="campaign", name=parent.name, body=parent.body,
                     status="scheduled", send_at=FIRST, repeat="weekly", repeat_anchor=FIRST,
                     recipient_local_time=False, discount_mode="none")  # not in the session: as read earlier
    assert recurrence.run_due(db, stale, now=FIRST) == (None, None)
    run_id, created = recurrence.create_run(db, stale, FIRST, now=FIRST)
    db.rollback()
    assert (run_id, created) == (runs(db, parent)[0].id, False)
    assert len(runs(db, parent)) == 1
    assert db.get(Campaign, parent.id).send_at == FIRST + dt.timedelta(weeks=1)
    assert db.scalar(select(func.count()).select_from(CampaignSegment)
                     .where(CampaignSegment.campaign_id == run_id)) == 1


def test_a_run_whose_start_was_cut_short_is_picked_up_by_the_recovery_scan(db, shop, audience_of_three, jobs,
                                                                           monkeypatch):
    _, us = audience_of_three
    parent = recurring(db, shop, us)
    with monkeypatch.context() as patched:
        patched.setattr(lifecycle, "start", lambda *a, **k: "crashed")  # the worker dies after the run's commit
        lifecycle._start_run(db, db.get(Campaign, parent.id), FIRST)
    (run,) = runs(db, parent)
    assert (run.status, run.snapshot_at) == ("in_progress", None)
    from kinnekt.campaigns.tasks import requeue_campaigns
    monkeypatch.setattr("kinnekt.campaigns.tasks.utcnow", lambda: FIRST + dt.timedelta(hours=1))
    requeue_campaigns()
    assert ("start_campaign", (run.id,)) in [(n, a) for n, a, *_ in jobs.jobs]
    assert lifecycle.start(db, run.id, now=FIRST + dt.timedelta(hours=1)) == "started"
    assert len(recipients(db, run)) == 3 and len(runs(db, parent)) == 1


def test_switched_off_makes_no_runs_and_on_again_skips_the_missed_ones(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    parent = recurring(db, shop, us)
    lifecycle.set_enabled(db, parent, False)
    later = FIRST + dt.timedelta(days=8)
    assert lifecycle.due_campaigns(db, now=later) == []
    assert lifecycle.start(db, parent.id, now=later) == "switched off"
    assert runs(db, parent) == []
    lifecycle.set_enabled(db, parent, True)  # real time: long after 2026-03; the next run is in the future
    db.refresh(parent)
    assert parent.status == "scheduled" and parent.send_at > dt.datetime.now(UTC)
    assert parent.send_at.astimezone(NEW_YORK).strftime("%a %H:%M") == "Sun 14:00"


def test_end_stops_further_runs_and_a_running_one_goes_on(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    parent = recurring(db, shop, us)
    lifecycle.start(db, parent.id, now=FIRST)
    lifecycle.end(db, db.get(Campaign, parent.id), now=FIRST + dt.timedelta(minutes=5))
    db.refresh(parent)
    assert parent.status == "ended"
    next_time = FIRST + dt.timedelta(weeks=1)
    assert lifecycle.due_campaigns(db, now=next_time) == []
    assert lifecycle.start(db, parent.id, now=next_time) == "not started: ended"
    (run,) = runs(db, parent)
    assert run.status == "in_progress"
    # Neither the run nor the ended campaign can be switched or edited.
    with pytest.raises(CampaignError):
        lifecycle.set_enabled(db, parent, True)


def test_delete_is_refused_while_a_run_is_in_progress_then_takes_the_runs_along(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    parent = recurring(db, shop, us)
    lifecycle.start(db, parent.id, now=FIRST)
    (run,) = runs(db, parent)
    with pytest.raises(CampaignError, match="run of this campaign is in progress"):
        lifecycle.delete(db, db.get(Campaign, parent.id))
    assert db.get(Campaign, parent.id) is not None
    lifecycle.end(db, run, now=FIRST + dt.timedelta(minutes=1))
    lifecycle.delete(db, db.get(Campaign, parent.id))
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Campaign)) == 0
    assert db.scalar(select(func.count()).select_from(Message)) == 0


def test_monthly_runs_across_month_ends_and_dst_until_the_end_date(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    first = at(NEW_YORK, 2027, 1, 31, 9, 0)
    parent = recurring(db, shop, us, repeat="monthly", send_at=first, until=dt.date(2027, 3, 31))
    expected = [first, at(NEW_YORK, 2027, 2, 28, 9, 0), at(NEW_YORK, 2027, 3, 31, 9, 0)]
    for due in expected:
        db.refresh(parent)
        assert parent.send_at == due
        lifecycle.start(db, parent.id, now=due + dt.timedelta(seconds=30))
    made = runs(db, parent)
    assert [r.send_at for r in made] == expected
    assert [r.name for r in made] == ["Weekly deals — 31 Jan 2027", "Weekly deals — 28 Feb 2027",
                                      "Weekly deals — 31 Mar 2027"]
    assert expected[2] == dt.datetime(2027, 3, 31, 13, 0, tzinfo=UTC)  # 09:00 EDT
    db.refresh(parent)
    assert parent.status == "completed"  # April 30 is after the end date
    assert lifecycle.due_campaigns(db, now=at(NEW_YORK, 2027, 5, 1, 0, 0)) == []


def test_schedule_refuses_an_end_date_before_the_first_run(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    with pytest.raises(CampaignError, match="end date is before the first run"):
        recurring(db, shop, us, until=dt.date(2026, 3, 14))
    assert db.scalar(select(Campaign.status)) == "draft"


def test_an_edit_that_keeps_the_next_run_keeps_the_rule(db, shop, audience_of_three, jobs):
    _, us = audience_of_three
    first = at(NEW_YORK, 2027, 1, 31, 9, 0)
    parent = recurring(db, shop, us, repeat="monthly", send_at=first)
    lifecycle.start(db, parent.id, now=first)
    db.refresh(parent)
    assert parent.send_at == at(NEW_YORK, 2027, 2, 28, 9, 0)
    lifecycle.save(db, shop, {"name": "Monthly deals", "send_at": parent.send_at, "repeat": "monthly"}, parent)
    assert parent.repeat_anchor == first  # still day 31: March runs on the 31st
    lifecycle.save(db, shop, {"send_at": at(NEW_YORK, 2027, 3, 2, 9, 0), "repeat": "monthly"}, parent)
    assert parent.repeat_anchor == at(NEW_YORK, 2027, 3, 2, 9, 0)
    lifecycle.save(db, shop, {"send_now": False, "repeat": "none"}, parent)
    assert (parent.repeat, parent.repeat_anchor, parent.repeat_until) == ("none", None, None)


def test_a_shared_code_is_created_once_and_reused_by_later_runs(db, shop, audience_of_three, jobs, monkeypatch):
    from kinnekt.shopify import discounts
    _, us = audience_of_three
    created = []

    def fake_shared(shop_row, *, code, **terms):
        created.append(code)
        return discounts.CreatedDiscount(f"gid://shopify/DiscountCodeNode/{len(created)}", [code])
    monkeypatch.setattr(discounts, "create_shared_code", fake_shared)
    parent = recurring(db, shop, us, discount_mode="shared", discount_code="WEEKLY10", discount_kind="percent",
                       discount_value=10, body="Hi {first_name}, use {discount_code}")
    lifecycle.start(db, parent.id, now=FIRST)
    lifecycle.start(db, parent.id, now=FIRST + dt.timedelta(weeks=1))
    first, second = runs(db, parent)
    assert created == ["WEEKLY10"]
    assert first.discount_shopify_id and second.discount_shopify_id == first.discount_shopify_id
    assert second.status == "in_progress" and len(recipients(db, second)) == 3
