"""Unsaved changes in Chromium: the settings cards, the segment builder and the campaign composer show a save bar
(App Bridge's when embedded, the page's own in the demo) and ask before an edit is lost."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Campaign, Shop
from tests.test_campaigns_web import campaign, segment as built_segment, subscriber
from tests.test_segments_web import segment as rule_segment

EVERYONE = {"match": "all", "rules": [{"field": "subscription_source", "op": "eq", "value": "all"}]}

pytestmark = pytest.mark.browser


def _saved_shop(shop_id: int) -> Shop:
    Session.remove()
    return Session.get(Shop, shop_id)


def _dialogs(page, answer: str):
    """Answer every dialog (accept or dismiss) and record (type, message)."""
    seen = []

    def handle(dialog):
        seen.append((dialog.type, dialog.message))
        dialog.accept() if answer == "accept" else dialog.dismiss()
    page.on("dialog", handle)
    return seen


def test_saving_one_settings_card_keeps_the_other_cards_edits(open_page, shop):
    page = open_page("/settings/")
    bar = page.locator("#unsaved-save-bar")
    expect(bar).to_be_hidden()
    sender = page.locator("#settings-sender input[name=sender]")
    sender.fill("KINNEKT")
    expect(bar).to_be_visible()

    page.locator("#settings-quiet-hours input[name=quiet_hours_start]").fill("22:00")
    page.locator("#settings-quiet-hours").get_by_role("button", name="Save quiet hours").click()
    expect(page.locator("#toasts")).to_contain_text("Quiet hours saved")
    assert _saved_shop(shop.id).quiet_hours_start == 22 * 60
    # The sender card still holds its edit, and the page still says it is unsaved.
    expect(sender).to_have_value("KINNEKT")
    expect(bar).to_be_visible()
    assert _saved_shop(shop.id).sender != "KINNEKT"

    # Leaving inside the app asks first; staying keeps the edit.
    dialogs = _dialogs(page, "dismiss")
    with page.expect_event("dialog"):  # the request waits for a session token first, then asks
        page.locator("#app-nav").get_by_role("link", name="Campaigns", exact=True).click()
    assert dialogs and dialogs[0][0] == "confirm" and "unsaved changes" in dialogs[0][1]
    expect(page.locator("main h1").first).to_have_text("Settings")
    expect(sender).to_have_value("KINNEKT")

    # The save bar saves every changed card.
    bar.get_by_role("button", name="Save").click()
    expect(page.locator("#toasts")).to_contain_text("Sender saved")
    expect(bar).to_be_hidden()
    assert _saved_shop(shop.id).sender == "KINNEKT"
    page.locator("#app-nav").get_by_role("link", name="Campaigns", exact=True).click()
    expect(page.locator("main h1").first).to_have_text(re.compile("^Campaigns"))
    assert len(dialogs) == 1


def test_segment_builder_warns_before_leaving_and_discard_restores(open_page, shop):
    page = open_page("/segments/new")
    bar = page.locator("#unsaved-save-bar")
    page.locator("#segment-name").fill("Big spenders")
    expect(bar).to_be_visible()
    dialogs = _dialogs(page, "dismiss")
    with page.expect_event("dialog"):
        page.locator("#segment-builder").get_by_role("link", name="Cancel").click()
    expect(page.locator("#segment-name")).to_have_value("Big spenders")
    assert [kind for kind, _ in dialogs] == ["confirm"]

    bar.get_by_role("button", name="Discard").click()
    expect(page.locator("#segment-name")).to_have_value("")
    expect(bar).to_be_hidden()

    # Leaving the page itself (closing the tab): the browser's own question.
    page.locator("#segment-name").fill("Big spenders")
    expect(bar).to_be_visible()
    with page.expect_event("dialog"):
        page.close(run_before_unload=True)
    expect(page.locator("#segment-name")).to_have_value("Big spenders")  # dismissed: the page stays open
    assert [kind for kind, _ in dialogs] == ["confirm", "beforeunload"]


def test_embedded_composer_uses_the_admins_save_bar(embedded, open_page, shop):
    page = open_page("/campaigns/new")
    expect(page.locator("#campaign-name")).to_be_visible()
    expect(page.locator("div#unsaved-save-bar")).to_have_count(0)  # the admin draws it
    page.locator("#campaign-name").fill("Weekend promo")
    page.locator("#campaign-body").fill("This weekend only: https://alpha.example/deals")
    page.wait_for_function("() => window.__appBridge.saveBar.length > 0")
    assert page.evaluate("window.__appBridge.saveBar") == [["show", "unsaved-save-bar"]]

    # The title bar's "Back to campaigns" asks first; staying keeps the draft on screen.
    dialogs = _dialogs(page, "dismiss")
    with page.expect_event("dialog"):  # the request waits for a session token first, then asks
        page.locator("ui-title-bar button", has_text="Back to campaigns").dispatch_event("click")
    expect(page.locator("ui-title-bar")).to_have_attribute("title", "New campaign")
    assert [kind for kind, _ in dialogs] == ["confirm"]
    expect(page.locator("#campaign-name")).to_have_value("Weekend promo")

    # App Bridge clicks the bar's Save button in the iframe: the draft is saved and the bar goes away.
    page.locator("ui-save-bar button[variant=primary]").dispatch_event("click")
    page.wait_for_function("() => window.__appBridge.saveBar.length > 1")
    assert page.evaluate("window.__appBridge.saveBar")[-1] == ["hide", "unsaved-save-bar"]
    Session.remove()
    saved = Session.scalars(select(Campaign).where(Campaign.shop_id == shop.id)).all()
    assert [(c.name, c.status) for c in saved] == [("Weekend promo", "draft")]


def test_saved_segment_and_campaign_open_without_unsaved_changes(open_page, shop):
    vip = built_segment(shop, "VIP customers", [subscriber(shop, "+12125550101")])
    draft = campaign(shop, "Spring sale", segments=[vip])
    everyone = rule_segment(shop, EVERYONE, name="Everyone")
    bar = open_page(f"/segments/{everyone.id}/edit").locator("#unsaved-save-bar")
    expect(bar.page.locator("#segment-preview-count")).to_have_text("1")  # the preview has arrived
    expect(bar).to_be_hidden()
    page = open_page(f"/campaigns/{draft.id}/edit")
    expect(page.locator("#campaign-name")).to_have_value("Spring sale")
    expect(page.locator("#campaign-breakdown")).to_be_visible()
    expect(bar).to_be_hidden()
    page.locator("#campaign-name").fill("Spring sale!")
    expect(bar).to_be_visible()
    page.locator("#campaign-name").fill("Spring sale")  # back as saved: nothing to save
    expect(bar).to_be_hidden()



def test_an_edit_that_comes_before_the_form_was_seen_still_counts(open_page, shop):
    """htmx sets swapped-in content up a moment after the swap; a quick edit in that moment is the first the
    guard hears of the form: it still counts as unsaved, against what the form arrived with."""
    page = open_page("/segments/new")
    expect(page.locator("#segment-name")).to_be_visible()
    page.evaluate("""() => {
        const form = document.createElement('form');
        form.setAttribute('data-unsaved', '');
        form.innerHTML = '<input name="note" value="as delivered"><select name="pick"><option>a</option>' +
                         '<option>b</option></select>';
        document.querySelector('main').appendChild(form);
    }""")  # no htmx:load, no settle: the guard has not seen it
    bar = page.locator("#unsaved-save-bar")
    page.locator("input[name=note]").fill("edited")  # the first the guard hears of the form
    expect(bar).to_be_visible()
    page.locator("input[name=note]").fill("as delivered")
    expect(bar).to_be_hidden()
    page.locator("select[name=pick]").select_option("a")  # a select with nothing marked selected showed "a"
    expect(bar).to_be_hidden()
    page.locator("select[name=pick]").select_option("b")
    expect(bar).to_be_visible()
