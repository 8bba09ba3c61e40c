"""Campaign audiences: the live breakdown and the snapshot into messages, checked against hand-computed figures.

Also quiet hours (a DST change, zones east and west of the shop) and the recipient's local send time. The
helpers at the top are shared by the other campaign test modules.
"""
from __future__ import annotations

import datetime as dt
from functools import partial

import pytest
from sqlalchemy import func, select, update

from kinnekt.campaigns import audience, lifecycle, quiet_hours
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message, Segment, SegmentEvent, Subscriber
from kinnekt.segments import membership
from kinnekt.subscribers import importing
from tests import factories

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)  # 12:00 in New York (EDT since 8 March), 01:00 next day in Tokyo


# ---------------------------------------------------------------------------------------------- helpers

subscriber = partial(factories.subscriber, country="US")
"""A subscriber of `shop` (subscribed, from the US unless told); committed."""


def segment(db, shop, name, countries, *, build=True, now=NOW) -> Segment:
    """A manual segment of the subscribers whose number is from one of `countries`, built at `now` unless told."""
    return factories.country_segment(db, shop, name, countries, built_at=now if build else None)


def campaign(db, shop, include, exclude=(), *, body="Hi {first_name}, 20% off today", **fields) -> Campaign:
    """A campaign of `shop` for these segments; committed."""
    return factories.campaign(db, shop, include=include, exclude=exclude, body=body, **fields)


def sent_message(db, shop, person, at) -> Message:
    """A message of an earlier (completed) campaign that reached `person` at `at`."""
    earlier = campaign(db, shop, [], name=f"Earlier {factories.serial()}", status="completed")
    return factories.message(db, earlier, person, kind="campaign", status="sent", sent_at=at)


def rows_by_subscriber(db, campaign_row) -> dict[int, Message]:
    """The campaign's messages rows, by subscriber id."""
    db.expire_all()
    return {m.subscriber_id: m for m in db.scalars(select(Message).where(Message.campaign_id == campaign_row.id))}


# ---------------------------------------------------------------------------------------------- breakdown, snapshot

@pytest.fixture
def world(db, shop):
    """One shop with a person for every skip reason (shop: New York, quiet 21:00-08:00, smart 24 h, threshold 2)."""
    shop.smart_sending_hours = 24
    shop.suppression_threshold = 2
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, 21 * 60, 8 * 60
    db.commit()
    people = {
        "ny": subscriber(db, shop, timezone="America/New_York", first_name="Nia"),
        "tokyo": subscriber(db, shop, timezone="Asia/Tokyo"),  # 01:00 there: quiet hours now
        "left": subscriber(db, shop),  # unsubscribes after the segment was built: out by the rules now
        "bounced": subscriber(db, shop),  # suppressed after the build: out by the rules now
        "ignores": subscriber(db, shop, sent_count=2),  # 2 messages, never clicked: global suppression
        "recent": subscriber(db, shop, sent_count=1),  # texted 3 hours ago: smart sending
        "canada": subscriber(db, shop, country="CA"),  # in the excluded segment
        "clicker": subscriber(db, shop, sent_count=2, clicks_count=1,
                              last_clicked_at=NOW - dt.timedelta(days=8)),  # 2 messages, but clicked once
        "britain": subscriber(db, shop, country="GB"),  # in no included segment
        "pending": subscriber(db, shop, status="pending"),  # never a member
    }
    sent_message(db, shop, people["ignores"], NOW - dt.timedelta(days=5))
    sent_message(db, shop, people["ignores"], NOW - dt.timedelta(days=4))
    sent_message(db, shop, people["recent"], NOW - dt.timedelta(hours=3))
    sent_message(db, shop, people["clicker"], NOW - dt.timedelta(days=10))
    sent_message(db, shop, people["clicker"], NOW - dt.timedelta(days=9))
    north_america = segment(db, shop, "North America", ["US", "CA"])
    canada = segment(db, shop, "Canada", ["CA"])
    # Changes after the build that the (asynchronous) re-check has not applied yet.
    db.execute(update(Subscriber).where(Subscriber.id == people["left"].id).values(status="unsubscribed"))
    db.execute(update(Subscriber).where(Subscriber.id == people["bounced"].id).values(suppressed_at=NOW))
    db.commit()
    return shop, people, north_america, canada


def test_breakdown_counts_each_reason_once(db, world):
    shop, _, north_america, canada = world
    figures = audience.breakdown(db, shop, [north_america.id], [canada.id], now=NOW)
    # in: ny, tokyo, ignores, recent, canada, clicker = 6 (left and bounced are still materialised members, but
    # the rules leave them out now)
    assert figures.as_dict() == {"in_segments": 6, "excluded": 1, "not_subscribed": 0, "suppressed": 1,
                                 "recently_texted": 1, "quiet_hours_now": 1, "sendable": 3}


def test_breakdown_without_exclusions_and_without_settings(db, world):
    shop, _, north_america, _ = world
    shop.smart_sending_hours = shop.suppression_threshold = 0
    shop.quiet_hours_enabled = False
    db.commit()
    figures = audience.breakdown(db, shop, [north_america.id], [], now=NOW)
    assert figures.as_dict() == {"in_segments": 6, "excluded": 0, "not_subscribed": 0, "suppressed": 0,
                                 "recently_texted": 0, "quiet_hours_now": 0, "sendable": 6}
    assert audience.breakdown(db, shop, [], [], now=NOW).as_dict()["in_segments"] == 0


def test_people_in_several_included_segments_are_counted_and_texted_once(db, world, jobs):
    shop, people, north_america, canada = world
    alone = audience.breakdown(db, shop, [north_america.id], [], now=NOW)
    assert audience.breakdown(db, shop, [north_america.id, canada.id], [], now=NOW) == alone
    row = campaign(db, shop, [north_america, canada], status="in_progress")
    assert audience.snapshot(db, row, now=NOW)["total"] == alone.in_segments == 6


def test_snapshot_writes_one_row_per_person_with_its_reason_and_is_idempotent(db, world, jobs):
    shop, people, north_america, canada = world
    row = campaign(db, shop, [north_america], [canada], status="in_progress")
    counts = audience.snapshot(db, row, now=NOW)
    assert counts == {"pending": 3, "skipped": 3, "total": 6, "skipped:excluded": 1, "skipped:no_clicks": 1,
                      "skipped:recently_texted": 1}
    rows = rows_by_subscriber(db, row)
    expected = {"ny": None, "tokyo": None, "clicker": None, "ignores": "no_clicks", "recent": "recently_texted",
                "canada": "excluded"}
    assert {key: rows[people[key].id].skip_reason for key in expected} == expected
    assert not {people[key].id for key in ("britain", "pending", "left", "bounced")} & set(rows)
    assert rows[people["ny"].id].due_at == NOW
    assert rows[people["clicker"].id].due_at == NOW
    # Tokyo: 01:00 local, quiet until 08:00 local = 23:00 UTC the same day.
    assert rows[people["tokyo"].id].due_at == dt.datetime(2026, 3, 15, 23, 0, tzinfo=UTC)
    assert rows[people["canada"].id].due_at is None
    assert rows[people["ny"].id].to_phone == people["ny"].phone
    assert rows[people["ny"].id].client_ref is None  # the sender sends m<id> (receipts find the row by it)
    # Again (a start that crashed after the snapshot): nothing twice.
    assert audience.snapshot(db, row, now=NOW + dt.timedelta(minutes=5)) == counts
    assert db.scalar(select(func.count()).select_from(Message).where(Message.campaign_id == row.id)) == 6


def test_a_segment_still_building_is_evaluated_from_its_rules(db, shop, jobs):
    us = [subscriber(db, shop) for _ in range(3)]
    subscriber(db, shop, country="CA")
    fresh = segment(db, shop, "Just made", ["US"], build=False)  # pending: no members materialised yet
    assert fresh.build_status == "pending"
    assert db.scalar(select(func.count()).select_from(membership.MEMBERS)) == 0
    assert audience.breakdown(db, shop, [fresh.id], [], now=NOW).sendable == 3
    row = campaign(db, shop, [fresh], status="in_progress")
    audience.snapshot(db, row, now=NOW)
    assert set(rows_by_subscriber(db, row)) == {p.id for p in us}


def test_excluding_a_materialised_segment_from_one_still_building(db, shop, jobs):
    people = [subscriber(db, shop, country=c) for c in ("US", "US", "CA")]
    building = segment(db, shop, "Everyone here", ["US", "CA"], build=False)
    db.execute(update(Segment).where(Segment.id == building.id).values(build_status="building"))
    db.commit()
    canada = segment(db, shop, "Canada", ["CA"])
    figures = audience.breakdown(db, shop, [building.id], [canada.id], now=NOW)
    assert (figures.in_segments, figures.excluded, figures.sendable) == (3, 1, 2)
    assert people[2].id in {m.subscriber_id for m in db.scalars(select(membership.SegmentMember))}


def test_a_campaign_started_right_after_an_import_texts_everyone_imported(db, shop, jobs):
    # The import queues the re-check of its people; here it has not run when the campaign starts (under load it
    # may wait for minutes): the materialised members are those from before the import.
    before = [subscriber(db, shop) for _ in range(3)]
    us = segment(db, shop, "United States", ["US"], now=utcnow())
    canada = segment(db, shop, "Canada", ["CA"], now=utcnow())
    logged = db.scalar(select(func.count()).select_from(SegmentEvent))
    numbers = [f"+1212555{2000 + i:04d}" for i in range(40)] + [f"+1416555{2000 + i:04d}" for i in range(10)]
    report = importing.import_csv(db, shop, attested=True, file_bytes="\n".join(["phone", *numbers]).encode())
    assert report.imported == 50 and jobs.names() == ["recheck_pending"]
    imported = dict(db.execute(select(Subscriber.id, Subscriber.country)
                               .where(Subscriber.id.in_(report.subscriber_ids))).tuples().all())
    americans = {i for i, country in imported.items() if country == "US"}
    canadians = {i for i, country in imported.items() if country == "CA"}
    assert len(americans) == 40 and len(canadians) == 10
    db.refresh(us)
    assert (us.build_status, us.member_count) == ("done", 3)
    assert audience.breakdown(db, shop, [us.id], [canada.id], now=utcnow()).in_segments == 43

    row = campaign(db, shop, [us], [canada], send_now=True)
    lifecycle.schedule(db, row)
    assert lifecycle.start(db, row.id) == "started"
    rows = rows_by_subscriber(db, row)
    assert {i for i, m in rows.items() if m.status == "pending"} == americans | {p.id for p in before}
    assert set(rows) == americans | {p.id for p in before}

    # The snapshot read the rules and wrote nothing to the members or their log; the re-check, when it runs,
    # logs each imported person's entry once, as a re-check (what automations fire on).
    assert db.scalar(select(func.count()).select_from(membership.MEMBERS)) == 3
    assert db.scalar(select(func.count()).select_from(SegmentEvent)) == logged
    for name, args, _, _ in list(jobs.jobs):
        if name == "recheck_pending":
            membership.recheck(db, *args)
    entries = db.execute(select(SegmentEvent.segment_id, SegmentEvent.subscriber_id, SegmentEvent.kind,
                                SegmentEvent.cause).order_by(SegmentEvent.id).offset(logged)).tuples().all()
    assert sorted(entries) == sorted([(us.id, i, "enter", "recheck") for i in americans]
                                     + [(canada.id, i, "enter", "recheck") for i in canadians])
    assert set(rows_by_subscriber(db, row)) == set(rows)


# ---------------------------------------------------------------------------------------------- quiet hours

class Hours:
    """A shop's quiet-hours settings, without a database."""

    def __init__(self, start, end, enabled=True, timezone="America/New_York"):
        self.quiet_hours_enabled, self.quiet_hours_start, self.quiet_hours_end = enabled, start, end
        self.timezone = timezone


def test_quiet_hours_end_is_found_across_the_spring_dst_change():
    shop = Hours(21 * 60, 8 * 60)
    new_york = quiet_hours.zone_for("America/New_York")
    # Saturday 7 March 2026, 22:00 EST = 03:00 UTC on the 8th; clocks go forward at 02:00 that night.
    late = dt.datetime(2026, 3, 8, 3, 0, tzinfo=UTC)
    assert quiet_hours.is_quiet(shop, late, new_york)
    # Quiet until 08:00 EDT (UTC-4) = 12:00 UTC, not 13:00 as the evening's offset would say.
    assert quiet_hours.defer(shop, late, new_york) == dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    # Early the next morning (06:30 EDT = 10:30 UTC): the same end.
    assert quiet_hours.defer(shop, dt.datetime(2026, 3, 8, 10, 30, tzinfo=UTC), new_york) == \
        dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    # 08:00 EDT itself is outside the window.
    assert quiet_hours.defer(shop, dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC), new_york) == \
        dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def test_quiet_hours_in_a_zone_east_of_the_shop_and_the_autumn_change():
    shop = Hours(21 * 60, 8 * 60)
    berlin = quiet_hours.zone_for("Europe/Berlin")
    noon_utc = dt.datetime(2026, 10, 24, 20, 30, tzinfo=UTC)  # 22:30 CEST (UTC+2) on Saturday 24 October
    assert quiet_hours.is_quiet(shop, noon_utc, berlin)
    assert not quiet_hours.is_quiet(shop, noon_utc, quiet_hours.zone_for("America/New_York"))  # 16:30 there
    # Clocks go back at 03:00 on the 25th: 08:00 CET is UTC+1 = 07:00 UTC.
    assert quiet_hours.defer(shop, noon_utc, berlin) == dt.datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_a_window_that_does_not_wrap_and_an_empty_or_disabled_one():
    lunch = Hours(12 * 60, 13 * 60 + 30)
    utc = quiet_hours.zone_for("UTC")
    at = dt.datetime(2026, 5, 1, 12, 45, tzinfo=UTC)
    assert quiet_hours.defer(lunch, at, utc) == dt.datetime(2026, 5, 1, 13, 30, tzinfo=UTC)
    assert quiet_hours.defer(lunch, dt.datetime(2026, 5, 1, 11, 59, tzinfo=UTC), utc).hour == 11
    assert quiet_hours.defer(Hours(600, 600), at, utc) == at
    assert quiet_hours.defer(Hours(0, 1439, enabled=False), at, utc) == at


def test_unknown_zone_names_fall_back_to_the_shop_then_utc():
    assert quiet_hours.zone_for("Mars/Olympus", "Europe/Paris").key == "Europe/Paris"
    assert quiet_hours.zone_for(None, "Nowhere/Else").key == "UTC"


def test_recipient_local_time_sends_at_the_wall_clock_time_in_each_zone(db, shop, jobs):
    shop.quiet_hours_enabled = False
    db.commit()
    people = {zone: subscriber(db, shop, timezone=zone)
              for zone in ("America/New_York", "America/Los_Angeles", "Europe/London")}
    people["none"] = subscriber(db, shop)  # no zone from the number: the shop's
    us = segment(db, shop, "US", ["US"])
    # 10:00 in New York on 20 March 2026 (EDT) = 14:00 UTC.
    send_at = dt.datetime(2026, 3, 20, 14, 0, tzinfo=UTC)
    row = campaign(db, shop, [us], status="scheduled", send_at=send_at, recipient_local_time=True)
    # London (GMT in March until the 29th) reaches 10:00 first: 10:00 UTC.
    assert lifecycle.start_time(db, row) == dt.datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    assert lifecycle.due_campaigns(db, now=dt.datetime(2026, 3, 20, 9, 59, tzinfo=UTC)) == []
    started_at = dt.datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    assert lifecycle.due_campaigns(db, now=started_at) == [row.id]
    assert lifecycle.start(db, row.id, now=started_at) == "started"
    rows = rows_by_subscriber(db, row)
    due = {zone: rows[person.id].due_at for zone, person in people.items()}
    assert due == {"Europe/London": dt.datetime(2026, 3, 20, 10, 0, tzinfo=UTC),
                   "America/New_York": dt.datetime(2026, 3, 20, 14, 0, tzinfo=UTC),
                   "America/Los_Angeles": dt.datetime(2026, 3, 20, 17, 0, tzinfo=UTC),
                   "none": dt.datetime(2026, 3, 20, 14, 0, tzinfo=UTC)}


def test_recipient_local_time_inside_quiet_hours_waits_for_their_end(db, shop, jobs):
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, 21 * 60, 8 * 60
    db.commit()
    early = subscriber(db, shop, timezone="America/New_York")
    us = segment(db, shop, "US", ["US"])
    # 07:00 in New York: inside quiet hours, so 08:00 local (12:00 UTC).
    row = campaign(db, shop, [us], status="scheduled", send_at=dt.datetime(2026, 3, 20, 11, 0, tzinfo=UTC),
                   recipient_local_time=True)
    lifecycle.start(db, row.id, now=dt.datetime(2026, 3, 20, 11, 0, tzinfo=UTC))
    assert rows_by_subscriber(db, row)[early.id].due_at == dt.datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
