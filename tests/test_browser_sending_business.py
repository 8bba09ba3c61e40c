"""A sending business end to end in Chromium, as a new merchant, against the fake Shopify and the fake Vonage: pick
a plan and approve it on Shopify's page, buy a toll-free number, submit its toll-free verification, the carriers
approve it (the fake says so), send the first campaign from the shop's own number, and see its usage charged in
Settings. Each step asserts what the merchant sees; the end, what the fakes recorded.

The pieces have their own browser tests (test_browser_billing.py, test_browser_numbers.py,
test_browser_us_registration.py); this one walks them in a row, moving through the app by its own links and
buttons, as a merchant would: a card that only a reload would bring up to date fails it."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models.billing import BillingPlan, UsageRecord
from kinnekt.models.sender import SenderRegistration
from tests.helpers import TOLL_FREE
from tests.test_browser_us_registration import submit_the_verification
from tests.test_campaigns_web import segment, subscriber

pytestmark = pytest.mark.browser


def test_a_new_shop_becomes_a_sending_business(open_page, shop, billed, numbers_fake, registration_config):
    shop.quiet_hours_enabled = False
    Session.commit()
    people = [subscriber(shop, f"+1212555{1000 + i:04d}", country="US", first_name=f"Pat{i}") for i in range(3)]
    segment(shop, "US customers", people)

    # 1. A plan: nothing goes out without one.
    page = open_page("/settings/")
    plan_card = page.locator("#settings-billing")
    expect(plan_card.locator("#billing-stop")).to_contain_text("Sending needs a plan")
    expect(page.locator("#registration-shared")).to_contain_text("Kinnekt's shared sender")
    plan_card.locator("#billing-cap-input").fill("25")
    plan_card.get_by_role("button", name="Pick this plan").click()
    expect(page).to_have_url(re.compile(r"/admin/charges/\d+/confirm"))  # Shopify's approval page
    expect(page.locator("body")).to_contain_text("Usage charges up to $25")
    page.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(re.compile(r"/settings/billing/return|session-token-bounce"))

    # Back in the admin, the app opens again: the plan is active.
    page = open_page("/settings/")
    plan_card = page.locator("#settings-billing")
    expect(plan_card.locator("#billing-left")).to_have_text("$25.00")
    expect(plan_card.locator("#billing-stop")).to_have_count(0)

    # 2. A toll-free number of its own.
    numbers = page.locator("#settings-numbers")
    expect(numbers.locator("#numbers-none")).to_contain_text("No numbers of your own yet")
    numbers.locator("#numbers-country").select_option("US")
    numbers.locator("#numbers-kind").select_option("toll_free")
    numbers.get_by_role("button", name="Search").click()
    numbers.locator("#numbers-offers").get_by_role("button", name=f"Buy +{TOLL_FREE}").click()
    row = page.locator(f'#numbers-senders tr[data-sender="{TOLL_FREE}"]')
    expect(row).to_contain_text("Default")
    expect(row).to_contain_text("Toll-free number")

    # 3. Its toll-free verification, from the registration card, which now knows the number (no reload).
    card = page.locator("#settings-registration")
    expect(card.locator("#registration-block")).to_contain_text("submit it in Settings")
    expect(card.locator('tr[data-status="none"]')).to_contain_text(f"+{TOLL_FREE}")
    card.get_by_role("button", name="Register").click()
    form = page.locator("#registration-form")
    expect(form.locator("#registration-legal_name")).to_have_value("Fake Store LLC")  # from Shopify
    submit_the_verification(card, form)
    expect(card.locator("#registration-block")).to_contain_text("waiting for approval")
    (submitted,) = registration_config.registration_calls("POST")
    assert submitted["message"]["numbers"] == [TOLL_FREE]

    # 4. The carriers approve it; the merchant checks.
    registration = Session.scalars(select(SenderRegistration).execution_options(populate_existing=True)).one()
    registration_config.decide(registration.external_id, "approved")
    card.get_by_role("button", name="Check status").click()
    expect(card.locator('tr[data-status="approved"]')).to_contain_text("Approved")
    expect(card.locator("#registration-block")).to_have_count(0)

    # 5. The first campaign, composed from the app's navigation: nothing holds it any more.
    page.locator("#app-nav").get_by_role("link", name="Campaigns", exact=True).click()
    page.get_by_role("link", name="Create campaign").first.click()
    page.locator("#campaign-name").fill("Welcome offer")
    page.locator("#campaign-body").fill("Hi {first_name}, 10% off this week")
    page.get_by_label("US customers (3)").check()
    expect(page.locator("#campaign-cost-left")).to_have_text("$25.00")
    expect(page.locator("#campaign-cost-total")).not_to_have_text("—")  # the audience's answer arrived
    expect(page.locator("#campaign-us-registration")).to_have_count(0)
    expect(page.locator("#campaign-billing-stop")).to_have_count(0)
    page.get_by_label("Send now").check()
    page.get_by_role("button", name="Send now").click()
    expect(page.locator("#campaign-status")).to_have_text("Completed", timeout=30_000)
    sent = numbers_fake.sent()
    assert sorted(m["to"] for m in sent) == sorted(p.phone.lstrip("+") for p in people)
    assert {m["from"] for m in sent} == {TOLL_FREE}  # its own number, not the shared sender

    # 6. The usage, charged on the Shopify bill and shown in Settings.
    page.locator("#app-nav").get_by_role("link", name="Settings", exact=True).click()
    plan_card = page.locator("#settings-billing")
    expect(plan_card.locator("#billing-used")).to_have_text("$0.02", timeout=15_000)  # 3 texts x $0.0081
    expect(plan_card.locator("#billing-left")).to_have_text("$24.98")
    expect(plan_card.locator("#billing-records")).to_contain_text("3 SMS (3 parts): United States 3")
    record = Session.scalars(select(UsageRecord).execution_options(populate_existing=True)).one()
    (charge,) = billed.charged(shop.domain)
    assert charge["idempotencyKey"] == record.idempotency_key
    assert charge["price"]["amount"] == "0.02" and charge["description"] == record.description
    plan = Session.scalars(select(BillingPlan).execution_options(populate_existing=True)).one()
    assert plan.status == "active"
