"""Keywords in Chromium: add a keyword, text it in through the inbound SMS webhook, confirm with Y, find the
subscriber in the list and in the keyword's segment; text STOP and see them unsubscribed. Settings save in place."""
from __future__ import annotations


import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Keyword, Shop, Subscriber
from kinnekt.tenancy import bind_shop
from tests.conftest import make_shop
from tests.helpers import PHONE, SENDER, outbox

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]



@pytest.fixture
def shop(db):
    """A demo shop (texts go to the Outbox) texting from SENDER, double opt-in on."""
    return make_shop("acme.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True)




def subscriber() -> Subscriber:
    bind_shop(None)
    Session.expire_all()
    return Session.scalars(select(Subscriber).where(Subscriber.phone == PHONE)).one()


def test_add_a_keyword_text_it_in_confirm_and_stop(open_page, text_in, app, shop):
    page = open_page("/keywords/")
    expect(page.locator("#keywords-page")).to_contain_text("No keywords yet")
    page.get_by_role("link", name="Add keyword").click()
    expect(page.locator("#keyword-form")).to_be_visible()

    # A reserved word is refused beside the field, and nothing is saved.
    page.locator("#keyword-word").fill("stop")
    page.get_by_role("button", name="Add keyword").click()
    expect(page.locator("#keyword-word-error")).to_contain_text("STOP is reserved")
    bind_shop(None)
    assert Session.scalars(select(Keyword)).all() == []

    page.locator("#keyword-word").fill("join")
    page.locator("#keyword-reply").fill("Welcome to Acme! Here is 10% off: JOIN10")
    page.get_by_role("button", name="Add keyword").click()
    expect(page.locator("#keywords-page")).to_be_visible()
    expect(page.locator("#toasts")).to_contain_text("Added the keyword JOIN")
    row = page.locator("#keywords-page tbody tr", has_text="JOIN")
    expect(row).to_contain_text("Welcome to Acme!")
    expect(row).to_contain_text("Active")
    expect(row.get_by_role("link", name="Keyword: JOIN")).to_be_visible()

    # Texted in (in any case): pending, asked to confirm.
    text_in("Join")
    assert subscriber().status == "pending"
    assert "Reply Y to confirm" in outbox()[-1]
    text_in("Y")
    joined = subscriber()
    assert (joined.status, joined.source, joined.keyword) == ("subscribed", "keyword", "JOIN")
    assert outbox()[-1] == "Welcome to Acme! Here is 10% off: JOIN10"

    open_page("/subscribers/")
    listed = page.locator("#subscribers-table tbody tr", has_text=PHONE)
    expect(listed).to_contain_text("Subscribed")
    expect(listed).to_contain_text("JOIN")

    open_page("/keywords/")
    row = page.locator("#keywords-page tbody tr", has_text="JOIN")
    expect(row.locator("td.numeric")).to_have_text("1")
    expect(row).to_contain_text("1 member")
    row.get_by_role("link", name="Keyword: JOIN").click()
    segment = page.locator("#keyword-segment")
    expect(segment).to_contain_text("1 member:")
    expect(segment.locator("tbody tr", has_text=PHONE)).to_contain_text("Subscribed")

    # STOP unsubscribes at once, with one confirmation, and the segment lets them go.
    text_in("STOP")
    assert subscriber().status == "unsubscribed"
    assert "You are unsubscribed" in outbox()[-1]
    open_page("/subscribers/")
    expect(page.locator("#subscribers-table tbody tr", has_text=PHONE)).to_contain_text("Unsubscribed")
    open_page(f"/keywords/{joined.keyword_id}")
    segment = page.locator("#keyword-segment")
    expect(segment).to_contain_text("0 members")
    expect(segment).not_to_contain_text(PHONE)


def test_turn_a_keyword_off_then_delete_it(open_page, shop):
    from kinnekt.subscribers.keywords import create_keyword
    create_keyword(Session(), shop, word="VIP", reply_text="Hi VIP")
    page = open_page("/keywords/")
    row = page.locator("#keywords-page tbody tr", has_text="VIP")
    row.get_by_role("button", name="Turn off VIP").click()
    expect(page.locator("#keywords-page tbody tr", has_text="VIP")).to_contain_text("Inactive")
    page.locator("#keywords-page tbody tr", has_text="VIP").get_by_role("button", name="Delete VIP").click()
    dialog = page.locator("#keyword-dialog")
    expect(dialog).to_contain_text("Delete the keyword VIP?")
    dialog.get_by_role("button", name="Delete keyword").click()
    expect(page.locator("#keywords-page")).to_contain_text("No keywords yet")
    bind_shop(None)
    assert Session.scalars(select(Keyword)).all() == []


def test_settings_cards_save_in_place_and_show_errors(open_page, shop):
    page = open_page("/settings/")
    card = page.locator("#settings-compliance")
    card.locator("#field-compliance_footer").fill("Reply END to quit")
    card.get_by_role("button", name="Save compliance settings").click()
    expect(page.locator("#field-compliance_footer-error")).to_contain_text("with the word STOP")
    card = page.locator("#settings-compliance")
    card.locator("#field-compliance_footer").fill("Txt STOP to end")
    card.locator("#field-double_opt_in").uncheck()
    card.get_by_role("button", name="Save compliance settings").click()
    expect(page.locator("#toasts")).to_contain_text("Compliance settings saved")
    expect(page.locator("#field-compliance_footer-error")).to_have_count(0)

    quiet = page.locator("#settings-quiet-hours")
    quiet.locator("#field-quiet_hours_start").fill("22:00")
    quiet.locator("#field-quiet_hours_end").fill("07:30")
    quiet.get_by_role("button", name="Save quiet hours").click()
    expect(page.locator("#settings-quiet-hours-summary")).to_contain_text("Texts go out between 7:30 AM and 10:00 PM")

    bind_shop(None)
    Session.expire_all()
    saved = Session.get(Shop, shop.id)
    assert (saved.compliance_footer, saved.double_opt_in) == ("Txt STOP to end", False)
    assert (saved.quiet_hours_start, saved.quiet_hours_end) == (22 * 60, 7 * 60 + 30)
