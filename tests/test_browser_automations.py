"""Automations in Chromium: add the built-in Welcome from the offers (opening the page adds nothing), switch it on,
join by texting a keyword (and Y to confirm) through the inbound SMS webhook, find the welcome text in the Outbox and
the automation's Sent count at 1."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Automation, Segment
from kinnekt.segments import auto
from kinnekt.subscribers import keywords
from kinnekt.tenancy import bind_shop
from tests.conftest import make_shop
from tests.helpers import MSISDN, SENDER, outbox

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]

@pytest.fixture
def shop(db, app, monkeypatch):
    """A demo shop (texts go to the Outbox, shown on the Outbox page) with its auto segments and a keyword JOIN;
    no quiet hours, so the welcome goes out whatever the time of the run."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    shop = make_shop("acme.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True,
                     quiet_hours_enabled=False)
    auto.ensure_default_segments(Session, shop)
    keywords.create_keyword(Session, shop, word="JOIN", reply_text="Thanks for joining Acme!")
    assert app.extensions["kinnekt_queue"].drain(20)
    return shop


def test_switch_on_welcome_join_by_keyword_and_see_it_sent(open_page, text_in, app, shop):
    page = open_page("/automations/")
    offers = page.locator("#automation-offers")
    expect(offers).to_contain_text("Keyword welcome: JOIN")
    expect(offers).to_contain_text("Sends to “All subscribers”")
    bind_shop(None)
    assert Session.scalar(select(func.count()).select_from(Automation)) == 0  # opening the page added nothing
    segments = Session.scalar(select(func.count()).select_from(Segment))

    page.get_by_role("button", name="Add Welcome", exact=True).click()
    expect(page.locator("#toasts")).to_contain_text("Added “Welcome”")
    listing = page.locator("#automations-page table")
    expect(listing).to_contain_text("Enters All subscribers")
    expect(page.get_by_role("button", name="Add Welcome", exact=True)).to_have_count(0)
    expect(offers).to_contain_text("Keyword welcome: JOIN")  # still only offered
    bind_shop(None)
    Session.expire_all()
    assert Session.scalars(select(Automation.builtin)).all() == ["welcome"]
    assert Session.scalar(select(func.count()).select_from(Segment)) == segments

    switch = page.get_by_role("switch", name="Welcome on or off", exact=True)
    expect(switch).not_to_be_checked()
    switch.check()
    expect(page.locator("#toasts")).to_contain_text("“Welcome” is on")
    expect(page.get_by_role("switch", name="Welcome on or off", exact=True)).to_be_checked()
    bind_shop(None)
    Session.expire_all()
    welcome = Session.scalar(select(Automation).where(Automation.builtin == "welcome"))
    assert welcome.enabled and welcome.campaign.status == "in_progress"

    text_in("JOIN")
    assert "Reply Y to confirm" in outbox()[-1]
    text_in("Y")
    assert any("welcome to Acme" in text for text in outbox())

    page = open_page("/outbox/")
    expect(page.locator("main")).to_contain_text("welcome to Acme")

    page = open_page("/automations/")
    expect(page.locator(f'[data-automation-sent="{welcome.id}"]')).to_have_text("1")
    page.get_by_role("link", name="Welcome", exact=True).click()
    detail = page.locator("#automation-detail-page")
    expect(detail.locator("#stat-sent")).to_contain_text("1")
    expect(detail.locator("#automation-runs")).to_contain_text("Sent")
    expect(detail.locator("#automation-runs")).to_contain_text(MSISDN[-4:])
