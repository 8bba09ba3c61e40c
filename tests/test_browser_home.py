"""The home page in Chromium: the chart draws, the period switch swaps the figures, at desktop and phone sizes,
without console errors; a new shop sees how to start."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from kinnekt.db import Session, utcnow
from kinnekt.models import Subscriber, SubscriptionEvent
from tests.factories import message
from tests.test_campaign_links import campaign, recipient
from tests.test_dashboard import credit

pytestmark = pytest.mark.browser

SIZES = [(1280, 800), (390, 844)]


@pytest.fixture
def activity(db, shop):
    """Subscribers who joined 2 and 20 days ago, an opt-out 3 days ago, a campaign yesterday that earned $48.00
    (12.50 of it 20 days ago, outside the last 7 days), and a scheduled one."""
    now = utcnow()
    camp = campaign(db, shop, name="Weekend sale", body="Sale https://alpha.example/s", status="completed",
                    started_at=now - dt.timedelta(days=1))
    for _ in range(4):
        message(db, camp, recipient(db, shop), status="delivered")
    credit(db, shop, camp, now - dt.timedelta(hours=20), "35.50")
    credit(db, shop, camp, now - dt.timedelta(days=20), "12.50")
    campaign(db, shop, name="Next drop", status="scheduled", send_at=now + dt.timedelta(days=3), started_at=None)
    Session.add_all([
        Subscriber(shop_id=shop.id, phone="+19175550101", status="subscribed", source="keyword",
                   subscribed_at=now - dt.timedelta(days=2)),
        Subscriber(shop_id=shop.id, phone="+19175550102", status="subscribed", source="checkout",
                   subscribed_at=now - dt.timedelta(days=20)),
    ])
    gone = Subscriber(shop_id=shop.id, phone="+19175550103", status="unsubscribed", source="mobile_popup",
                      subscribed_at=now - dt.timedelta(days=200))
    Session.add(gone)
    Session.commit()
    Session.add(SubscriptionEvent(shop_id=shop.id, subscriber_id=gone.id, kind="unsubscribed",
                                  at=now - dt.timedelta(days=3)))
    Session.commit()
    return camp


def _watch(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("response", lambda resp: problems.append(f"HTTP {resp.status}: {resp.url}") if resp.status >= 400 else None)
    return problems


@pytest.mark.parametrize("width,height", SIZES)
def test_chart_draws_and_the_period_switch_works(open_page, page, activity, width, height):
    page.set_viewport_size({"width": width, "height": height})
    problems = _watch(page)
    open_page("/")
    home = page.locator("#home-page")
    expect(home).to_have_attribute("data-period", "30")
    expect(page.locator("main h1")).to_have_text("Home")
    expect(page.locator("nav .nav-list__item--selected")).to_have_text("Home")
    chart = page.locator("#home-growth .home-chart")
    expect(chart.locator("canvas")).to_be_visible()
    expect(chart.locator(".u-legend")).to_contain_text("Keyword")
    expect(chart.locator(".u-legend")).to_contain_text("Checkout")
    expect(chart.locator(".u-legend")).to_contain_text("Opt-outs")
    expect(page.locator("#home-revenue .metric__value")).to_have_text("$48.00")
    expect(page.locator("#home-new-subscribers .metric__value")).to_have_text("2")
    expect(page.locator("#home-recent")).to_contain_text("Weekend sale")
    expect(page.locator("#home-scheduled")).to_contain_text("Next drop")

    page.get_by_role("link", name="7 days").click()
    expect(home).to_have_attribute("data-period", "7")
    expect(page.get_by_role("link", name="7 days")).to_have_attribute("aria-current", "true")
    expect(page.get_by_role("link", name="30 days")).not_to_have_attribute("aria-current", "true")
    expect(page.locator("#home-revenue .metric__value")).to_have_text("$35.50")
    expect(page.locator("#home-new-subscribers .metric__value")).to_have_text("1")
    expect(chart.locator("canvas")).to_be_visible()  # drawn again after the swap
    expect(chart.locator(".u-legend")).not_to_contain_text("Checkout")
    expect(page).to_have_url(re.compile(r"[?&]days=7"))
    assert "id_token" not in page.url

    page.get_by_role("link", name="90 days").click()
    expect(home).to_have_attribute("data-period", "90")
    expect(page.locator("#home-growth .home-chart canvas")).to_be_visible()
    expect(page.locator("#home-growth .home-chart .u-legend")).to_contain_text("Checkout")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {width}px"
    page.screenshot(path=f"/tmp/h6-home-{width}.png", full_page=True)
    assert problems == []


def test_the_figures_table_matches_the_chart(open_page, page, activity):
    problems = _watch(page)
    open_page("/?days=7")
    toggle = page.locator("#home-growth summary")
    expect(toggle).to_have_text("Show the figures", use_inner_text=True)
    toggle.click()
    expect(toggle).to_have_text("Hide the figures", use_inner_text=True)
    table = page.locator("#home-growth-table table")
    expect(table).to_be_visible()
    expect(table.locator("thead")).to_contain_text("Keyword")
    expect(table.locator("tbody tr")).to_have_count(7)
    # Away and back through the navigation (boosted: htmx swaps the page in): the chart is drawn again.
    page.locator("nav").get_by_role("link", name="Segments", exact=True).click()
    expect(page.locator("main h1").first).to_have_text(re.compile("^Segments"))
    page.locator("nav").get_by_role("link", name="Home", exact=True).click()
    expect(page.locator("#home-page")).to_have_attribute("data-period", "30")
    expect(page.locator("#home-growth .home-chart canvas")).to_be_visible()
    assert problems == []


def test_a_new_shop_sees_how_to_start(open_page, page, shop):
    page.set_viewport_size({"width": 390, "height": 844})
    problems = _watch(page)
    open_page("/")
    expect(page.locator("#home-empty")).to_contain_text("Start collecting subscribers")
    expect(page.locator("#home-page canvas")).to_have_count(0)
    page.locator("#home-empty").get_by_role("link", name="Set up a keyword").click()
    expect(page.locator("main h1").first).to_have_text(re.compile("^Keywords"))
    assert problems == []
