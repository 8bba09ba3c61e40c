"""Billing in Chromium: a merchant picks a plan, approves it on Shopify's page (the fake's), sends a campaign, and
sees the usage charged in Settings."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models.billing import BillingPlan, UsageRecord
from tests.test_browser_campaigns import vip_segment

pytestmark = pytest.mark.browser


def test_pick_a_plan_approve_it_send_and_see_the_usage(open_page, shop, billed, vonage_config):
    vip_segment(shop, 3)
    page = open_page("/settings/")
    card = page.locator("#settings-billing")
    expect(card.locator("#billing-stop")).to_contain_text("Sending needs a plan")
    card.locator("#billing-cap-input").fill("25")
    card.get_by_role("button", name="Pick this plan").click()

    # Shopify's approval page, at the top of the window.
    expect(page).to_have_url(re.compile(r"/admin/charges/\d+/confirm"))
    expect(page.locator("body")).to_contain_text("Usage charges up to $25")
    page.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(re.compile(r"/settings/billing/return|session-token-bounce"))
    plan = Session.scalars(select(BillingPlan).execution_options(populate_existing=True)).one()
    assert plan.status == "active"  # app_subscriptions/update arrived, signed, and was applied

    page = open_page("/campaigns/new")
    page.locator("#campaign-name").fill("Welcome offer")
    page.locator("#campaign-body").fill("Hi {first_name}, 10% off this week")
    page.get_by_label("VIP customers (3)").check()
    expect(page.locator("#campaign-cost-left")).to_have_text("$25.00")
    expect(page.locator("#campaign-billing-stop")).to_have_count(0)
    page.get_by_label("Send now").check()
    page.get_by_role("button", name="Send now").click()
    expect(page.locator("#campaign-status")).to_have_text("Completed", timeout=30_000)
    assert len(vonage_config.sent()) == 3

    # Within the app (the campaign page's own loads go on undisturbed).
    page.locator("#app-nav").get_by_role("link", name="Settings", exact=True).click()
    card = page.locator("#settings-billing")
    expect(card.locator("#billing-used")).to_have_text("$0.02", timeout=15_000)  # 3 texts x $0.0081, in cents
    expect(card.locator("#billing-left")).to_have_text("$24.98")
    expect(card.locator("#billing-records")).to_contain_text("3 SMS (3 parts): United States 3")
    record = Session.scalars(select(UsageRecord)).one()
    (charge,) = billed.charged(shop.domain)
    assert charge["idempotencyKey"] == record.idempotency_key and charge["price"]["amount"] == "0.02"
