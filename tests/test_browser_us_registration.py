"""US registration in Chromium: the composer says a campaign to US numbers cannot start and links to Settings; the
merchant opens the toll-free verification (prefilled from the fake Shopify), completes and submits it, the fake
Vonage approves it, Settings shows it approved, and the composer's US warning is gone."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Keyword
from kinnekt.models.sender import SenderNumber, SenderRegistration
from tests.conftest import settle
from tests.fake_shopify import connect
from tests.factories import add
from tests.test_campaigns_web import segment, subscriber

pytestmark = pytest.mark.browser


def submit_the_verification(card, form) -> None:
    """Fill what Shopify could not prefill in the toll-free verification form, submit it, and wait for the card to
    show it pending."""
    form.locator("#registration-ein").fill("12-3456789")
    form.locator("#registration-contact_first_name").fill("Ada")
    form.locator("#registration-contact_last_name").fill("Lovelace")
    form.locator("#registration-privacy_policy_url").fill("https://shop.example.com/policies/privacy-policy")
    form.locator("#registration-terms_url").fill("https://shop.example.com/policies/terms-of-service")
    form.get_by_role("button", name="Submit registration").click()
    expect(card.locator('tr[data-status="pending"]')).to_contain_text("Waiting for the carriers")


def test_submit_a_verification_get_it_approved_and_the_composer_lets_us_texts_go(open_page, shop, fake_shopify,
                                                                                 registration_config):
    connect(fake_shopify, shop)
    shop.quiet_hours_enabled = False
    Session.commit()
    add(Keyword(shop_id=shop.id, word="JOIN", reply_text="Alpha: welcome to our texts! Here is 10% off: HELLO10."))
    add(SenderNumber(shop_id=shop.id, msisdn="18885550199", country="US", kind="toll_free"))
    people = [subscriber(shop, f"+1212555{1000 + i:04d}", country="US") for i in range(2)]
    segment(shop, "US customers", people)

    def compose():
        page = open_page("/campaigns/new")
        page.locator("#campaign-name").fill("Winter sale")
        page.locator("#campaign-body").fill("Winter sale: 20% off today")
        # the counter's answer (sent 300 ms after typing) is in before the segment is chosen, so no request of the
        # composer is still on its way when the test leaves the page (leaving would abort it)
        expect(page.locator("#campaign-preview-text")).to_contain_text("Winter sale: 20% off today")
        page.get_by_label("US customers (2)").check()
        return page

    page = compose()
    warning = page.locator("#campaign-us-registration")
    expect(warning).to_contain_text("it would text 2 US numbers")
    expect(warning.get_by_role("link", name="Open Settings")).to_have_attribute(
        "href", "/settings/#settings-registration")

    page = open_page("/settings/")
    card = page.locator("#settings-registration")
    expect(card.locator("#registration-block")).to_contain_text("submit it in Settings")
    card.get_by_role("button", name="Register").click()
    form = page.locator("#registration-form")
    expect(form.locator("#registration-legal_name")).to_have_value("Fake Store LLC")  # from Shopify
    expect(form.locator("#registration-sample_message_1")).to_have_value(
        "Alpha: welcome to our texts! Here is 10% off: HELLO10.")  # the keyword's reply
    expect(form.locator("#registration-opt_in_description")).to_contain_text("Consent is not a condition")
    submit_the_verification(card, form)

    row = Session.scalars(select(SenderRegistration).execution_options(populate_existing=True)).one()
    (sent,) = registration_config.registration_calls("POST")
    assert sent["message"]["business"]["tax_id"] == "12-3456789"
    registration_config.decide(row.external_id, "approved")  # the carriers approve
    card.get_by_role("button", name="Check status").click()
    expect(card.locator('tr[data-status="approved"]')).to_contain_text("Approved")
    expect(card.locator("#registration-block")).to_have_count(0)

    page = compose()
    expect(page.locator("#campaign-cost-total")).not_to_have_text("—")  # the audience's answer arrived
    expect(page.locator("#campaign-us-registration")).to_have_count(0)
    settle(page)
