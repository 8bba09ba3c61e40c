"""Why a campaign's remaining recipients wait (kinnekt/campaigns/waiting.py): quiet hours, a retry, their local
time, a sending slot, or queued now; with the span of their due times; on both databases."""
from __future__ import annotations

import datetime as dt
import re

from kinnekt.campaigns import waiting
from kinnekt.models import Campaign, Message
from tests import factories

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # 7:00 AM in New York, 4:00 AM in Los Angeles


def setup(db, shop, *, local_time=False):
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, 21 * 60, 8 * 60
    campaign = Campaign(shop_id=shop.id, name="Sale", body="Sale", status="in_progress", started_at=NOW,
                        recipient_local_time=local_time, send_at=NOW if local_time else None)
    db.add(campaign)
    db.commit()
    return campaign


def message(db, shop, campaign, phone, zone, **fields):
    person = factories.subscriber(db, shop, phone=phone, timezone=zone, commit=False)
    db.add(Message(shop_id=shop.id, campaign_id=campaign.id, subscriber_id=person.id, to_phone=phone, **fields))
    db.commit()


def test_each_remaining_recipient_is_given_its_reason(db, shop):
    campaign = setup(db, shop)
    ny_end = dt.datetime(2026, 12, 7, 13, 0, tzinfo=UTC)  # 8:00 AM New York
    la_end = dt.datetime(2026, 12, 7, 16, 0, tzinfo=UTC)  # 8:00 AM Los Angeles
    message(db, shop, campaign, "+12125550001", "America/New_York", status="pending", due_at=ny_end)
    message(db, shop, campaign, "+13105550002", "America/Los_Angeles", status="pending", due_at=la_end)
    message(db, shop, campaign, "+12125550003", "America/New_York", status="pending", attempts=1, error_code="1",
            error_reason="Throttled", due_at=NOW + dt.timedelta(minutes=5))
    message(db, shop, campaign, "+12125550004", "America/New_York", status="pending", due_at=None)
    message(db, shop, campaign, "+12125550005", "America/New_York", status="claimed")
    message(db, shop, campaign, "+12125550006", "America/New_York", status="sent")
    shop_ok = "+442075550007"  # London: 12:00, no quiet hours; waiting a few seconds for a slot
    message(db, shop, campaign, shop_ok, "Europe/London", status="pending", due_at=NOW + dt.timedelta(seconds=2))

    found = waiting.waits(db, campaign, now=NOW)
    assert [(w.reason, w.count, w.first, w.last) for w in found] == [
        ("quiet_hours", 2, ny_end, la_end),
        ("retry", 1, NOW + dt.timedelta(minutes=5), NOW + dt.timedelta(minutes=5)),
        ("slot", 1, NOW + dt.timedelta(seconds=2), NOW + dt.timedelta(seconds=2)),
        ("queued", 2, None, None)]
    assert found[0].label == "Waiting for quiet hours to end"


def test_a_recipient_local_time_campaign_waits_for_their_time(db, shop):
    campaign = setup(db, shop, local_time=True)
    theirs = dt.datetime(2026, 12, 7, 20, 0, tzinfo=UTC)  # noon in Los Angeles, past its quiet hours
    message(db, shop, campaign, "+13105550002", "America/Los_Angeles", status="pending", due_at=theirs)
    assert [(w.reason, w.count, w.last) for w in waiting.waits(db, campaign, now=NOW)] == [
        ("local_time", 1, theirs)]


def test_nothing_waits_once_the_campaign_is_done(db, shop):
    campaign = setup(db, shop)
    message(db, shop, campaign, "+12125550001", "America/New_York", status="pending",
            due_at=NOW + dt.timedelta(hours=1))
    campaign.status = "ended"
    db.commit()
    assert waiting.waits(db, campaign, now=NOW) == []
    assert waiting.by_campaign(db, [campaign], now=NOW) == {}


def test_the_waits_read_in_the_shops_time_zone(app, db, shop):
    from flask import g, render_template_string
    ny_end = dt.datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    waits = [waiting.Wait("quiet_hours", 2, ny_end, ny_end + dt.timedelta(hours=3)),
             waiting.Wait("retry", 1, NOW, NOW + dt.timedelta(days=1)),
             waiting.Wait("local_time", 1, ny_end, ny_end), waiting.Wait("queued", 3)]
    with app.test_request_context("/campaigns/"):
        g.shop = shop
        html = render_template_string(
            '{% import "campaigns/_waits.html" as w %}{{ w.list(waits, "America/New_York") }}', waits=waits)
    shown = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", item)).strip()
             for item in re.findall(r"<li[^>]*>(.*?)</li>", html, re.S)]
    assert shown == [
        "Waiting for quiet hours to end: 2 between Dec 7, 2026, 8:00 AM and 11:00 AM",
        "Retrying after a provider error: 1 between Dec 7, 2026, 7:00 AM and Dec 8, 2026, 7:00 AM",
        "Waiting for the send time in their time zone: 1 until Dec 7, 2026, 8:00 AM",
        "Being sent now: 3",
        "Times in America/New_York"]
