"""Automations became flows, in Chromium: the built-in Welcome automation, switched on before migration 0026, is a
flow after it; the merchant's old Automations bookmark opens the Flows page, the flow's page shows its trigger and
step; a subscriber joining by keyword (and Y) gets the welcome once, from the flow, and the flow's page then shows
the run completed and the text sent."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.automations import service as automations
from kinnekt.db import Session
from kinnekt.models import Automation, Flow
from kinnekt.segments import auto
from kinnekt.subscribers import keywords
from kinnekt.tenancy import bind_shop
from tests.conftest import make_shop
from tests.helpers import MSISDN, SENDER, outbox
from tests.test_flow_from_automations import migrate_automations

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]


@pytest.fixture
def shop(db, app, monkeypatch):
    """A demo shop (texts go to the Outbox) with its auto segments, a keyword JOIN and the built-in Welcome
    automation switched on, then migrated into a flow; no quiet hours, so the welcome goes out at any hour."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    shop = make_shop("acme.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True,
                     quiet_hours_enabled=False)
    auto.ensure_default_segments(Session, shop)
    keywords.create_keyword(Session, shop, word="JOIN", reply_text="Thanks for joining Acme!")
    assert app.extensions["kinnekt_queue"].drain(20)
    welcome = automations.add_builtin(Session, shop, "welcome")
    automations.set_enabled(Session, welcome, True)
    bind_shop(None)
    migrate_automations(Session)
    return shop


def test_the_welcome_automation_is_a_flow_that_greets_a_sign_up_once(open_page, text_in, app, shop):
    bind_shop(None)
    assert Session.scalars(select(Automation)).all() == []
    flow = Session.scalar(select(Flow).where(Flow.builtin == "welcome"))
    assert (flow.name, flow.status, flow.trigger) == ("Welcome", "on", "segment_enter")

    page = open_page("/automations/")  # an old bookmark
    expect(page.locator("#flows-page")).to_be_visible()
    expect(page.get_by_role("switch", name="Welcome on or off", exact=True)).to_be_checked()
    page.get_by_role("link", name="Welcome", exact=True).click()
    detail = page.locator("#flow-detail")
    expect(detail.locator("#flow-settings")).to_contain_text("Enters “All subscribers”")
    expect(detail.locator("#flow-step-results")).to_contain_text("Text: Hi {first_name}, welcome to {shop_name}!")
    expect(detail.locator("#flow-runs-empty")).to_be_visible()

    text_in("JOIN")
    assert "Reply Y to confirm" in outbox()[-1]
    text_in("Y")
    app.extensions["kinnekt_queue"].drain(20)
    assert sum("welcome to Acme" in text for text in outbox()) == 1

    page = open_page(f"/flows/{flow.id}")
    detail = page.locator("#flow-detail")
    runs = detail.locator("#flow-runs")
    expect(runs).to_contain_text(MSISDN[-4:])
    expect(runs).to_contain_text("Completed")
    step = detail.locator("#flow-step-results tbody tr").first
    expect(step.locator("td").nth(1)).to_have_text("1")  # entered
    expect(step.locator("td").nth(3)).to_have_text("1")  # sent
