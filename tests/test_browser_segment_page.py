"""The segment page in Chromium, on a laptop (1280x800) and a phone (390x844): reached from the segments list, the
member chart draws, the enter/leave log pages and filters in place, and the browser reports no error."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from kinnekt.db import Session, utcnow
from kinnekt.models import SegmentCount, SegmentEvent
from kinnekt.segments import membership
from tests.factories import add
from tests.test_segments_web import EXAMPLE, person, segment

pytestmark = pytest.mark.browser


@pytest.fixture
def big_segment(shop, other_shop):
    """A built segment (Ada and Bob), 38 more log entries over the past days, and a count for each of 5 days."""
    ada = person(shop, "+12125550101", name="Ada", spent="120.00", orders=3, last_order_days=3)
    bob = person(shop, "+12125550102", name="Bob", spent="40.00", orders=1, last_order_days=10)
    person(other_shop, "+12125550199", name="Mallory", spent="900", orders=9, last_order_days=1)
    seg = segment(shop, EXAMPLE, "Recent spenders")
    now = utcnow()
    add(*[SegmentEvent(shop_id=shop.id, segment_id=seg.id, subscriber_id=(ada if i % 2 else bob).id,
                       kind="enter" if i % 2 else "leave", at=now - dt.timedelta(days=5, hours=-i), cause="recheck")
          for i in range(38)])
    membership.build(Session(), seg.id, now=now)  # 2 more entries (cause "build") and today's count
    today = Session.query(SegmentCount).one().day
    add(*[SegmentCount(shop_id=shop.id, segment_id=seg.id, day=today - dt.timedelta(days=d), member_count=n,
                       at=now - dt.timedelta(days=d)) for d, n in ((4, 1), (3, 3), (1, 1))])
    return seg


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_segment_page_chart_paging_and_filter(open_page, page, big_segment, width, height):
    problems = []
    page.on("console", lambda message: problems.append(f"{message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.set_viewport_size({"width": width, "height": height})

    open_page("/segments/")
    page.get_by_role("link", name="Recent spenders", exact=True).click()
    expect(page.locator("#segment-page")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/segments/{big_segment.id}$"))
    expect(page.locator(".page-header__title")).to_have_text("Recent spenders")
    expect(page.locator("#segment-rules")).to_contain_text("Money spent is greater than $25.00")
    edit = page.get_by_role("link", name="Edit", exact=True)
    expect(edit).to_have_attribute("href", f"/segments/{big_segment.id}/edit")

    # The chart: uPlot drew a canvas that fits the card, with the days in its data.
    chart = page.locator("[data-segment-chart]")
    expect(chart).to_have_attribute("data-chart-drawn", "true")
    expect(chart.locator("canvas")).to_have_count(1)
    box, card = chart.bounding_box(), page.locator("#segment-chart-card").bounding_box()
    assert box["height"] >= 200 and box["width"] <= card["width"]

    log = page.locator("#segment-log")
    expect(log).to_contain_text("1–25 of 40 changes")
    expect(log.locator("tbody tr")).to_have_count(25)
    log.get_by_role("link", name="Next page").click()
    expect(log).to_contain_text("26–40 of 40 changes")
    expect(log.locator("tbody tr")).to_have_count(15)
    expect(page).to_have_url(re.compile(r"/log\?page=2$"))
    expect(page.locator(".page-header__title")).to_have_text("Recent spenders")  # only the log was swapped

    page.locator("#segment-log-kind").select_option("leave")
    expect(log).to_contain_text("1–19 of 19 changes")
    expect(log.locator("tbody tr", has_text="Entered")).to_have_count(0)
    page.locator("#segment-log-search").fill("ada")
    expect(log).to_contain_text("No changes match")
    page.locator("#segment-log-kind").select_option("enter")
    expect(log).to_contain_text("1–20 of 20 changes")  # 19 re-checks and the build's entry
    expect(log.locator("tbody tr", has_text="+12125550102")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"kind=enter"))
    expect(page).to_have_url(re.compile(r"q=ada"))

    # Nothing runs off the side of the screen, the log's table included.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    table = page.locator("#segment-log .index-table")
    assert table.evaluate("el => el.scrollWidth <= el.clientWidth")
    assert problems == []
