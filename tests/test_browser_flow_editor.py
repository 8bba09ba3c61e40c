"""The flow editor in Chromium: build an abandoned-checkout flow step by step (HTMX add, move, remove, edit in
place, the live preview's encoding and cost, a refused save), save it, switch it on; a signed checkouts/create
webhook arrives over HTTP, the wait passes, and the text lands in the demo Outbox with a tracked link that leads to
the checkout's recovery URL."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from kinnekt.db import Session, utcnow
from kinnekt.flows import engine
from kinnekt.models import Flow, FlowRun
from kinnekt.tenancy import bind_shop
from tests import factories
from tests import shopify_payloads as sp
from tests.conftest import make_shop
from tests.helpers import PHONE, SENDER, outbox

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]

DOMAIN = "acme.myshopify.com"


@pytest.fixture
def shop(db, app, monkeypatch):
    """A demo shop (texts go to the Outbox), no quiet hours, with one subscriber at PHONE."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    shop = make_shop(DOMAIN, sender=SENDER, is_demo=True, quiet_hours_enabled=False)
    factories.subscriber(Session, shop, phone=PHONE)
    assert app.extensions["kinnekt_queue"].drain(20)
    return shop


def test_build_an_abandoned_checkout_flow_switch_it_on_and_a_checkout_gets_its_recovery_text(
        open_page, app, shop, live_server):
    page = open_page("/flows/")
    page.get_by_role("link", name="New flow").click()
    editor = page.locator("#flow-editor")
    expect(editor.locator("[data-step]")).to_have_count(2)  # a 30-minute wait, then a message
    expect(page.locator("#flow-trigger")).to_have_value("checkout_started")

    # Add an end and a condition, move the end up, then remove both again: the draft redraws, nothing is saved.
    page.get_by_role("button", name="Add an end at the end", exact=True).click()
    expect(editor.locator('[data-step="2"]')).to_have_attribute("data-kind", "end")
    expect(page.locator("#unsaved-save-bar")).to_be_visible()  # an edited draft is not lost silently
    page.get_by_role("button", name="Move step 2 up", exact=True).click()
    expect(editor.locator('[data-step="1"]')).to_have_attribute("data-kind", "end")
    page.get_by_role("button", name="Remove step 1", exact=True).click()
    expect(editor.locator("[data-step]")).to_have_count(2)
    page.get_by_role("button", name="Add a condition at the end", exact=True).click()
    expect(editor.locator('[data-branch="2-yes"]')).to_be_visible()  # its branches, indented under it
    page.get_by_role("button", name="Add a message under “Yes” of step 2", exact=True).click()
    expect(editor.locator('[data-step="2-yes-0"]')).to_have_attribute("data-kind", "send")
    page.get_by_role("button", name="Remove step 2", exact=True).click()
    expect(editor.locator("[data-step]")).to_have_count(2)
    bind_shop(None)
    assert Session.scalar(select(Flow.id)) is None

    # Saving without a name or a text is refused beside the fields.
    page.locator("#flow-save").click()
    expect(page.locator("#toasts")).to_contain_text("not saved")
    expect(editor.locator('[data-step="1"] .field__error')).to_contain_text("Write the text")
    expect(editor.locator("#flow-settings .field__error").first).to_contain_text("Give the flow a name")

    page.locator("#flow-name").fill("Cart rescue")
    body = page.locator("#s1-body")
    body.fill("{shop_name}: you left something behind 🛒 {checkout_url}")
    expect(page.locator("#preview-1 [data-encoding]")).to_have_text("Unicode (UCS-2)")
    body.fill("{shop_name}: you left something behind. Finish here: {checkout_url}")
    expect(page.locator("#preview-1 [data-encoding]")).to_have_text("GSM-7")
    expect(page.locator("#preview-1 [data-parts]")).to_have_text("1 part")
    expect(page.locator("#preview-1 [data-preview-text]")).to_contain_text("checkouts/c1/recover")
    page.locator("#flow-save").click()
    expect(page.locator("#toasts")).to_contain_text("Saved “Cart rescue”")
    expect(page.locator("#unsaved-save-bar")).to_be_hidden()

    page.get_by_role("link", name="Back to flows").click()
    switch = page.get_by_role("switch", name="Cart rescue on or off", exact=True)
    switch.check()
    expect(page.locator("#toasts")).to_contain_text("“Cart rescue” is on")

    token = "c0ffee42"
    payload = json.dumps(sp.checkout(token, phone=PHONE, created_at=utcnow())).encode()
    response = page.request.post(f"{live_server}{sp.ENDPOINTS['checkouts/create']}", data=payload,
                                 headers=sp.headers("checkouts/create", payload, domain=DOMAIN,
                                                    secret=app.config["SHOPIFY_API_SECRET"]))
    assert response.status == 200
    queue = app.extensions["kinnekt_queue"]
    assert queue.drain(20)
    bind_shop(None)
    Session.expire_all()
    flow = Session.scalar(select(Flow).where(Flow.name == "Cart rescue"))
    [run] = Session.scalars(select(FlowRun).where(FlowRun.flow_id == flow.id)).all()
    assert run.checkout_token == token and outbox() == []  # waiting its 30 minutes

    Session.execute(update(FlowRun).where(FlowRun.id == run.id).values(due_at=utcnow() - dt.timedelta(seconds=1)))
    Session.commit()
    engine.advance(Session, shop.id)
    assert queue.drain(20)
    [text] = outbox()
    assert text.startswith("Acme: you left something behind. Finish here: ") and "/r/" in text, text
    code = re.search(r"/r/(\S+)", text).group(1)
    answer = page.request.get(f"{live_server}/r/{code}", max_redirects=0)
    assert answer.status in (301, 302)
    assert answer.headers["location"].startswith(f"https://alpha.myshopify.com/checkouts/{token}/recover")


def test_a_condition_built_with_the_segment_rule_builder(open_page, app, shop):
    from kinnekt.flows import service
    flow = service.create(Session, shop, name="Spenders", trigger="subscribed", steps=[
        {"kind": "send", "body": "Welcome"},
        {"kind": "condition", "definition": {"match": "all", "rules": [
            {"field": "number_of_orders", "op": "eq", "value": 0}]},
         "yes": [{"kind": "send", "body": "First order?"}], "no": []}])
    page = open_page(f"/flows/{flow.id}/edit")
    editor = page.locator("#flow-editor")
    page.locator("#s1-test").select_option("rules")  # the builder starts from the quick test it replaces
    rules = editor.locator("#rules-1")
    expect(rules.locator(".rule-row")).to_have_count(1)
    expect(rules.locator(".rule-row select").first).to_have_value("number_of_orders")
    rules.get_by_role("button", name="Add rule", exact=True).click()  # the segment builder's own row request
    expect(rules.locator(".rule-row")).to_have_count(2)
    second = rules.locator(".rule-row").nth(1)
    second.locator("select").first.select_option("money_spent")  # the row redraws for its field
    expect(second.locator("select").first).to_have_value("money_spent")
    second_row = rules.locator(".rule-row").nth(1)
    second_row.locator('select[name$="-op"]').select_option("gt")
    second_row.locator('input[name$="-value"]').fill("40")
    rules.locator('select[name="group-c1-match"]').select_option("any")
    page.locator("#flow-save").click()
    expect(page.locator("#toasts")).to_contain_text("Saved “Spenders” (version 2)")
    bind_shop(None)
    Session.expire_all()
    saved = service.describe(Session, Session.get(Flow, flow.id))[1]["definition"]
    assert saved["match"] == "any"
    assert [(r["field"], r["op"]) for r in saved["rules"]] == [("number_of_orders", "eq"), ("money_spent", "gt")]
    assert float(saved["rules"][1]["value"]) == 40
    # Removing a row is the builder's own button (static/js/segment-builder.js), then saved again.
    rules = page.locator("#flow-editor #rules-1")
    expect(rules.locator(".rule-row")).to_have_count(2)
    rules.locator(".rule-row").nth(0).get_by_role("button", name=re.compile("Remove")).click()
    expect(rules.locator(".rule-row")).to_have_count(1)
    page.locator("#flow-save").click()
    expect(page.locator("#toasts")).to_contain_text("(version 3)")
    bind_shop(None)
    Session.expire_all()
    saved = service.describe(Session, Session.get(Flow, flow.id))[1]["definition"]
    assert [r["field"] for r in saved["rules"]] == ["money_spent"]
