"""The flow dry run in Chromium: on a saved flow's editor, search a subscriber, pick her, read what she would get
now (the wait's local end, the text rendered for her); typing in the search leaves the editor without unsaved
changes, and nothing is saved."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.flows import service
from kinnekt.models import Flow, FlowRun, Message
from kinnekt.tenancy import bind_shop
from tests import factories
from tests.conftest import make_shop
from tests.helpers import SENDER

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]


@pytest.fixture
def shop(db, app, monkeypatch):
    """A demo shop with Ana and a saved two-step flow."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    shop = make_shop("acme.myshopify.com", sender=SENDER, is_demo=True, quiet_hours_enabled=False)
    factories.subscriber(Session, shop, first_name="Ana", timezone="Europe/Paris")
    service.create(Session, shop, name="Hello flow", trigger="subscribed",
                   steps=[{"kind": "wait", "seconds": 3600}, {"kind": "send", "body": "Hi {first_name}, welcome!"}])
    assert app.extensions["kinnekt_queue"].drain(20)
    return shop


def test_search_pick_and_read_the_dry_run(open_page, app, shop, live_server):
    flow_id = Session.scalar(select(Flow.id))
    page = open_page(f"/flows/{flow_id}/edit")
    page.locator("#dry-run-q").fill("an")
    page.get_by_role("button", name="Ana").click()
    steps = page.locator("[data-dry-run-steps] > li")
    expect(steps).to_have_count(2)
    expect(steps.nth(0)).to_contain_text("Waits 1 hour")
    expect(steps.nth(1).locator("[data-dry-run-text]")).to_contain_text("Hi Ana, welcome!")
    expect(steps.nth(1).locator("[data-encoding]")).to_have_text("GSM-7")
    expect(page.locator("#unsaved-save-bar")).to_be_hidden()  # the search is not part of the flow
    bind_shop(None)
    Session.expire_all()
    assert Session.scalar(select(func.count()).select_from(FlowRun)) == 0
    assert Session.scalar(select(func.count()).select_from(Message)) == 0
