"""Flows in Chromium: add the ready-made welcome series (opening the page adds nothing), switch it on, join by texting
a keyword and Y through the inbound SMS webhook, find the welcome text with its code in the Outbox and the flow's
figures on the page."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Flow
from kinnekt.subscribers import keywords
from kinnekt.tenancy import bind_shop
from tests.conftest import make_shop
from tests.helpers import SENDER, outbox

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]


@pytest.fixture
def shop(db, app, monkeypatch):
    """A demo shop (texts go to the Outbox) with a keyword JOIN, double opt-in and no quiet hours."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    shop = make_shop("acme.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True,
                     quiet_hours_enabled=False)
    keywords.create_keyword(Session, shop, word="JOIN", reply_text="Thanks for joining Acme!")
    assert app.extensions["kinnekt_queue"].drain(20)
    return shop


def test_add_the_welcome_series_switch_it_on_and_a_sign_up_gets_its_first_text(open_page, text_in, app, shop):
    page = open_page("/flows/")
    expect(page.locator("#flow-offers")).to_contain_text("Welcome series")
    bind_shop(None)
    assert Session.scalar(select(func.count()).select_from(Flow)) == 0  # opening the page added nothing

    page.get_by_role("button", name="Add Welcome series", exact=True).click()
    expect(page.locator("#toasts")).to_contain_text("Added “Welcome series”")
    expect(page.locator("#flows-page table")).to_contain_text("Subscribes")
    expect(page.get_by_role("button", name="Add Welcome series", exact=True)).to_have_count(0)

    switch = page.get_by_role("switch", name="Welcome series on or off", exact=True)
    expect(switch).not_to_be_checked()
    switch.check()
    expect(page.locator("#toasts")).to_contain_text("“Welcome series” is on")

    text_in("JOIN")
    text_in("Y")
    app.extensions["kinnekt_queue"].drain(20)
    texts = outbox()
    welcome = [text for text in texts if text.startswith("Welcome to Acme")]
    assert len(welcome) == 1 and "WELCOME-" in welcome[0], texts

    page.reload()
    row = page.locator("#flows-page table tr", has_text="Welcome series")
    expect(row).to_contain_text("Subscribes")
    expect(row.locator("td").nth(4)).to_have_text("1")  # waiting: the 3-day wait before the reminder
    expect(row.locator("td").nth(7)).to_have_text("1")  # sent


def test_a_flows_page_from_the_list_switch_it_off_there(open_page, app, shop, db):
    from kinnekt.flows import service
    flow = service.add_builtin(db, shop, "abandoned_checkout")
    service.set_status(db, flow, True)
    page = open_page("/flows/")
    page.get_by_role("link", name="Abandoned checkout", exact=True).click()
    detail = page.locator("#flow-detail")
    expect(detail.locator("h1")).to_have_text("Abandoned checkout")
    steps = detail.locator("#flow-step-results tbody tr")
    expect(steps).to_have_count(4)
    expect(steps.nth(0)).to_contain_text("Wait 30 minutes")
    expect(steps.nth(1)).to_contain_text("Text: {shop_name}: you left something in your cart.")
    expect(steps.nth(2)).to_contain_text("Wait 1 day")
    expect(detail.locator("#flow-settings")).to_contain_text("They place an order; They unsubscribe")
    expect(detail.locator("#flow-settings")).to_contain_text("1 day")
    expect(detail.locator("#flow-runs-empty")).to_be_visible()
    switch = page.get_by_role("switch", name="Abandoned checkout on or off", exact=True)
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(page.locator("#toasts")).to_contain_text("“Abandoned checkout” is off")
    expect(page.get_by_role("switch", name="Abandoned checkout on or off", exact=True)).not_to_be_checked()
    expect(page.locator("#flow-detail #flow-status")).to_contain_text("Off")
    bind_shop(None)
    Session.expire_all()
    assert Session.get(Flow, flow.id).status == "off"
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.locator("#flow-editor")).to_be_visible()
