"""The campaign page in Chromium while a campaign is live: its progress, figures and chart come from one poll and
agree mid-send; polling stops once it finished; remaining recipients say why they wait and until when (detail
page and list). Rows are written straight to the database, as a sender would, so each step is deterministic."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from kinnekt.campaigns import quiet_hours
from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign, Message
from tests.factories import add
from tests.test_campaigns_web import campaign, subscriber

pytestmark = pytest.mark.browser

NEW_YORK = ZoneInfo("America/New_York")


def recipients(shop, count: int, start: int = 0, **fields):
    return [subscriber(shop, f"+1212555{2000 + start + i:04d}", **fields) for i in range(count)]


def queued(shop, row, people, **fields):
    return [add(Message(shop_id=shop.id, campaign_id=row.id, subscriber_id=p.id, to_phone=p.phone, **fields))
            for p in people]


def mark_sent(messages) -> None:
    """What the sender writes for each accepted message: status, the provider's id and price."""
    for message in messages:
        Session.execute(update(Message).where(Message.id == message.id).values(
            status="sent", provider_id=f"0B00000000{message.id:06d}", price=Decimal("0.0079"), sent_at=utcnow(),
            attempts=1))
    Session.commit()


def test_progress_and_figures_agree_mid_send_and_polling_stops_when_done(open_page, page, shop):
    shop.quiet_hours_enabled = False
    Session.commit()
    row = campaign(shop, "Flash sale", status="in_progress", send_now=True, started_at=utcnow(),
                   body="Flash sale: https://alpha.example/sale")
    people = recipients(shop, 5)
    messages = queued(shop, row, people, status="pending")
    from tests.test_campaign_attribution import click
    click(Session, shop, row, people[0], utcnow())  # a tap on a link sent in a test run: the chart shows
    polls = []
    page.on("request", lambda request: polls.append(request.url)
            if f"/campaigns/{row.id}/progress" in request.url else None)
    page.clock.install()
    open_page(f"/campaigns/{row.id}")
    expect(page.locator("#campaign-progress-sent")).to_have_text("0")
    expect(page.locator("#stat-sent .metric__value")).to_have_text("0")
    expect(page.locator("#stat-click-rate .metric__value")).to_have_text("—")
    toggle = page.locator(".campaign-chart__table > summary")
    expect(toggle).to_have_text("Show the figures", use_inner_text=True)  # only the words that fit the state are shown
    toggle.click()
    expect(toggle).to_have_text("Hide the figures", use_inner_text=True)

    mark_sent(messages[:3])  # mid-send: the next poll brings every figure at once
    expect(page.locator("#campaign-progress-sent")).to_have_text("3")
    expect(page.locator("#stat-sent .metric__value")).to_have_text("3")
    expect(page.locator("#stat-cost .metric__value")).to_contain_text("0.02")
    expect(page.locator("#stat-click-rate .metric__value")).to_have_text("33.3%")  # 1 of 3
    expect(page.locator(".campaign-chart__table")).to_have_attribute("open", "")  # opened, still open
    expect(toggle).to_have_text("Hide the figures", use_inner_text=True)
    expect(page.locator(".campaign-chart[data-x-ticks]")).to_be_visible()  # drawn again from the poll
    expect(page.locator("#campaign-progress-remaining")).to_have_text("2")
    assert page.locator("#campaign-live[hx-trigger]").count() == 1
    assert page.locator("#campaign-live [hx-trigger^='every']").count() == 0  # one poller, not one per part

    mark_sent(messages[3:])
    Session.execute(update(Campaign).where(Campaign.id == row.id).values(status="completed", finished_at=utcnow()))
    Session.commit()
    expect(page.locator("#campaign-status")).to_have_text("Completed")
    expect(page.locator("#stat-sent .metric__value")).to_have_text("5")
    expect(page.locator("#campaign-progress-sent")).to_have_text("5")
    expect(page.locator("#campaign-end")).to_have_count(0)  # the page reloaded its buttons
    expect(page.locator("#campaign-live")).not_to_have_attribute("hx-trigger", re.compile("every"))
    seen = len(polls)
    page.clock.run_for(60_000)  # a minute of the page's timers: a poller left running would ask 30 times
    page.evaluate("() => new Promise(requestAnimationFrame)")
    assert len(polls) == seen


def local_time(moment: dt.datetime) -> str:
    """`moment` as the pages show it, in the shop's zone (New York): Dec 7, 2026, 9:05 PM."""
    local = moment.astimezone(NEW_YORK)
    return f"{local:%b} {local.day}, {local.year}, {(local.hour % 12) or 12}:{local.minute:02d} " \
           f"{'AM' if local.hour < 12 else 'PM'}"


def quiet_now(shop) -> dt.datetime:
    """Quiet hours that started an hour ago in New York (the shop's zone) and end in two hours; their end (UTC)."""
    local = utcnow().astimezone(NEW_YORK)
    minute = local.hour * 60 + local.minute
    shop.quiet_hours_enabled = True
    shop.quiet_hours_start, shop.quiet_hours_end = (minute - 60) % 1440, (minute + 120) % 1440
    Session.commit()
    return quiet_hours.defer(shop, utcnow(), NEW_YORK)


def test_remaining_recipients_say_why_they_wait_and_until_when(open_page, page, shop):
    ends = quiet_now(shop)
    row = campaign(shop, "Night owls", status="in_progress", send_now=True, started_at=utcnow())
    queued(shop, row, recipients(shop, 3, timezone="America/New_York"), status="pending", due_at=ends)
    retry_at = (utcnow() + dt.timedelta(minutes=5)).replace(microsecond=0)
    queued(shop, row, recipients(shop, 2, start=10, timezone="America/New_York"), status="pending", attempts=1,
           error_code="1", error_reason="Throttled", due_at=retry_at)
    # Sent at 9 PM in each recipient's zone: Los Angeles is not in its quiet hours, and not there yet.
    local = campaign(shop, "West coast", status="in_progress", started_at=utcnow(), recipient_local_time=True,
                     send_at=utcnow() - dt.timedelta(minutes=1))
    their_time = (utcnow() + dt.timedelta(hours=3)).replace(microsecond=0)
    queued(shop, local, recipients(shop, 4, start=20, timezone="America/Los_Angeles"), status="pending",
           due_at=their_time)

    page = open_page(f"/campaigns/{row.id}")
    waits = page.locator("#campaign-waits")
    expect(page.locator("#campaign-progress-remaining")).to_have_text("5")
    expect(waits.locator("[data-wait='quiet_hours']")).to_have_text(
        f"Waiting for quiet hours to end: 3 until {local_time(ends)}")
    expect(waits.locator("[data-wait='retry']")).to_have_text(
        f"Retrying after a provider error: 2 until {local_time(retry_at)}")
    expect(waits).to_contain_text("Times in America/New_York")

    page.get_by_role("link", name="Back to campaigns").click()
    listed = page.locator("#campaigns-page tbody tr", has_text="Night owls")
    expect(listed.locator("[data-wait='quiet_hours']")).to_have_text(
        f"Waiting for quiet hours to end: 3 until {local_time(ends)}")
    expect(listed.locator("[data-wait='retry']")).to_contain_text("Retrying after a provider error: 2")
    west = page.locator("#campaigns-page tbody tr", has_text="West coast")
    expect(west.locator("[data-wait='local_time']")).to_have_text(
        f"Waiting for the send time in their time zone: 4 until {local_time(their_time)}")


# ---------------------------------------------------------------------------------------------- the chart's x axis

T = dt.datetime(2026, 11, 10, 15, 20, tzinfo=dt.timezone.utc)  # Tuesday Nov 10, 10:20 AM in New York
HOURS = dt.timedelta(hours=1)
RANGES = {
    # name: (click times, the x tick labels expected at 1280 px: data-x-ticks, "|"-separated)
    "one bucket": ([T], ["Nov 10, 10 AM"]),
    "hours": ([T, T + 5 * HOURS], ["10 AM Nov 10", "11 AM", "12 PM", "1 PM", "2 PM", "3 PM"]),
    "a day and more": ([T, T + 40 * HOURS], ["12 PM Nov 10", "6 PM", "12 AM Nov 11", "6 AM", "12 PM", "6 PM",
                                              "12 AM Nov 12"]),
    "days": ([T, T + 4 * 24 * HOURS], ["Nov 10", "Nov 11", "Nov 12", "Nov 13", "Nov 14"]),
    "weeks": ([T, T + 60 * 24 * HOURS],  # Mondays from Nov 16 to Jan 4
              ["Nov 16", "Nov 23", "Nov 30", "Dec 7", "Dec 14", "Dec 21", "Dec 28", "Jan 4"]),
}


@pytest.mark.parametrize("span", list(RANGES))
def test_the_chart_ticks_fit_its_range(open_page, page, shop, span):
    from tests.test_campaign_attribution import click
    from tests.test_campaign_links import campaign as started, recipient
    times, expected = RANGES[span]
    row = started(Session, shop, name=f"Chart {span}", status="completed", started_at=times[0],
                  finished_at=times[0])
    person = recipient(Session, shop)
    for at in times:
        click(Session, shop, row, person, at)
    page.set_viewport_size({"width": 1280, "height": 800})
    open_page(f"/campaigns/{row.id}")
    chart = page.locator(".campaign-chart[data-x-ticks]")
    expect(chart).to_have_attribute("data-x-ticks", "|".join(expected))
    page.set_viewport_size({"width": 390, "height": 844})  # narrower: fewer ticks, on the same whole steps
    expect(chart).not_to_have_attribute("data-x-ticks", "|".join(expected) if len(expected) > 3 else "-")
    narrow = chart.get_attribute("data-x-ticks").split("|")
    assert 1 <= len(narrow) <= 3, narrow
    if span in ("days", "weeks"):
        assert set(narrow) <= set(expected)  # whole days / Mondays still


# ---------------------------------------------------------------------------------------------- narrow screens

def inside_viewport(locator, width=390, height=844) -> None:
    box = locator.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, box


def test_row_actions_are_one_menu_within_a_narrow_screen(open_page, page, shop):
    from tests.test_campaigns_web import segment
    page.set_viewport_size({"width": 390, "height": 844})
    people = recipients(shop, 2)
    segment(shop, "Big spenders with a long name", people)
    segment(shop, "Recent buyers", people[:1])
    campaign(shop, "Weekend promo with a long name", status="scheduled", send_at=utcnow() + dt.timedelta(days=2))
    campaign(shop, "Old draft")

    open_page("/segments/")
    for name in ("Big spenders with a long name", "Recent buyers"):
        toggle = page.get_by_role("button", name=f"Actions for {name}")
        expect(toggle).to_be_visible()
        inside_viewport(toggle)
        expect(toggle).to_have_attribute("aria-expanded", "false")
        toggle.click()
        menu = page.get_by_role("menu", name=f"Actions for {name}")
        expect(menu).to_be_visible()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        inside_viewport(menu)
        expect(menu.get_by_role("menuitem")).to_have_count(7)  # edit, copy, CSV, 3 ad platforms, delete
        expect(menu.get_by_role("menuitem").first).to_be_focused()
        page.keyboard.press("ArrowUp")
        expect(menu.get_by_role("menuitem", name=f"Delete {name}")).to_be_focused()
        page.keyboard.press("Escape")
        expect(menu).to_be_hidden()
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(toggle).to_be_focused()
    page.get_by_role("button", name="Actions for Recent buyers").click()
    page.get_by_role("menuitem", name="Copy Recent buyers").click()
    expect(page.locator("#segments-page tbody tr", has_text="Recent buyers")).to_have_count(2)

    open_page("/campaigns/")
    toggle = page.get_by_role("button", name="Actions for Weekend promo with a long name")
    inside_viewport(toggle)
    toggle.click()
    menu = page.get_by_role("menu", name="Actions for Weekend promo with a long name")
    inside_viewport(menu)
    expect(menu.get_by_role("menuitem")).to_have_text(["Quick view", "Edit", "Delete"])
    menu.get_by_role("menuitem", name="Quick view of Weekend promo with a long name").click()
    expect(page.locator("#campaign-quick-view")).to_be_visible()
    expect(menu).to_be_hidden()


def test_the_campaign_page_fits_a_phone(open_page, page, shop):
    from tests.test_campaign_attribution import click
    from tests.test_campaign_links import campaign as started, recipient
    page.set_viewport_size({"width": 390, "height": 844})
    row = started(Session, shop, name="Spring sale", status="completed", started_at=T, finished_at=T,
                  discount_mode="shared", discount_code="SPRING")
    person = recipient(Session, shop)
    for at in (T, T + HOURS, T + 3 * HOURS):
        click(Session, shop, row, person, at)
    open_page(f"/campaigns/{row.id}")
    expect(page.locator(".campaign-chart[data-x-ticks]")).to_be_visible()
    figures = page.locator("#campaign-stats-figures .metric")
    expect(figures).to_have_count(12)
    first, second = figures.nth(0).bounding_box(), figures.nth(1).bounding_box()
    assert first["y"] == second["y"] and second["x"] > first["x"]  # side by side: a grid, not a column of cards
    height = page.evaluate("() => document.documentElement.scrollHeight")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390 and height <= 2100, (width, height)  # was ~2,900 px with one tall column of cards


def test_the_page_header_follows_a_scheduled_campaign_that_starts(open_page, page, shop):
    shop.quiet_hours_enabled = False
    Session.commit()
    row = campaign(shop, "Morning deals", status="scheduled", send_at=utcnow() + dt.timedelta(hours=1))
    open_page(f"/campaigns/{row.id}")
    expect(page.get_by_role("link", name="Edit", exact=True)).to_be_visible()
    expect(page.locator("#campaign-end")).to_have_count(0)
    queued(shop, row, recipients(shop, 2), status="pending")
    Session.execute(update(Campaign).where(Campaign.id == row.id).values(status="in_progress", started_at=utcnow()))
    Session.commit()
    expect(page.locator("#campaign-status")).to_have_text("In Progress")
    expect(page.locator("#campaign-end")).to_be_visible()  # the header agrees with the status
    expect(page.get_by_role("link", name="Edit", exact=True)).to_have_count(0)
    expect(page.locator("#campaign-live")).to_have_attribute("hx-trigger", "every 2s")
