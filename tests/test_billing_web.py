"""The plan card of Settings: pick a plan, approve it on Shopify's page, raise the cap, see usage; bad input
answers with the reason and saves nothing."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.billing import plans
from kinnekt.models.billing import BillingPlan, PlanStatus
from tests.fake_shopify import connect


@pytest.fixture
def billed(app, monkeypatch, fake_shopify, shop):
    """Billing on, the shop connected to the fake Shopify."""
    monkeypatch.setitem(app.config, "BILLING_REQUIRED", True)
    connect(fake_shopify, shop)
    return fake_shopify


def test_picking_a_plan_sends_the_merchant_to_shopify_at_the_top_level(client, auth, db, shop, billed):
    page = client.get("/settings/", headers={"Authorization": auth["Authorization"]})
    assert b'hx-get="/settings/billing/"' in page.data  # the card loads after the page: no wait on Shopify
    card = client.get("/settings/billing/", headers=auth)
    assert b"Pick this plan" in card.data and b"Sending needs a plan" in card.data
    answer = client.post("/settings/billing/plan", data={"capped_amount": "50"}, headers=auth)
    assert answer.status_code == 200
    url = json.loads(answer.headers["HX-Trigger-After-Settle"])["kinnekt:open-top"]["url"]
    assert url.startswith(billed.url) and "/admin/charges/" in url
    (call,) = billed.calls("graphql:KinnektSubscribe")
    item = call["variables"]["lineItems"][0]["plan"]["appUsagePricingDetails"]
    assert item["cappedAmount"] == {"amount": "50.00", "currencyCode": "USD"} and item["terms"]
    assert call["variables"]["test"] is True
    assert call["variables"]["returnUrl"] == "https://kinnekt.test/settings/billing/return"
    assert b'target="_top"' in answer.data and b"waits for your approval" in answer.data
    assert "HX-Trigger" not in answer.headers  # no toast on a page left at once: the card says it
    billed.approve(shop.domain)
    back = client.get("/settings/billing/return?charge_id=1", headers={"Authorization": auth["Authorization"]})
    assert back.status_code == 303
    card = client.get("/settings/billing/", headers=auth)
    assert b'data-status="active"' in card.data and b"$50.00" in card.data and b"Raise the cap" in card.data


def test_raising_the_cap_is_approved_on_shopify_too(client, auth, db, shop, billed):
    plans.subscribe(db, shop, Decimal("20"), "https://kinnekt.test/settings/billing/return")
    billed.approve(shop.domain)
    plans.refresh(db, shop)
    answer = client.post("/settings/billing/cap", data={"capped_amount": "80"}, headers=auth)
    assert "kinnekt:open-top" in answer.headers["HX-Trigger-After-Settle"]
    assert b"Approve the new cap of $80.00" in answer.data and "HX-Trigger" not in answer.headers
    assert plans.plan_for(db, shop.id).capped_amount == Decimal("20")  # not before the approval
    billed.approve(shop.domain)
    client.get("/settings/billing/return", headers=auth)
    assert plans.plan_for(db, shop.id).capped_amount == Decimal("80")


@pytest.mark.parametrize("typed", ["", "lots", "5", "99999999", "12.345"])
def test_a_bad_capped_amount_is_refused_and_nothing_is_asked_of_shopify(client, auth, db, shop, billed, typed):
    answer = client.post("/settings/billing/plan", data={"capped_amount": typed}, headers=auth)
    assert answer.status_code == 422 and b"field--error" in answer.data
    assert billed.calls("graphql:KinnektSubscribe") == []
    assert db.scalar(select(func.count()).select_from(BillingPlan)) == 0


def test_shopify_unreachable_is_a_clear_error_not_a_500(client, auth, db, shop, billed):
    billed.fail_next("503", times=10)
    answer = client.post("/settings/billing/plan", data={"capped_amount": "40"}, headers=auth)
    assert answer.status_code == 502 and b"could not be reached" in answer.data
    assert db.scalar(select(func.count()).select_from(BillingPlan)) == 0


def test_a_plan_card_shows_only_its_own_shop(client, auth, db, shop, other_shop, billed):
    db.add(BillingPlan(shop_id=other_shop.id, name="x", status=PlanStatus.ACTIVE, capped_amount=Decimal("777"),
                       balance_used=Decimal("0"), terms=""))
    db.commit()
    card = client.get("/settings/billing/", headers=auth)
    assert b"$777" not in card.data and b"Pick this plan" in card.data


def test_the_plan_card_needs_a_session_token(client, shop):
    assert client.get("/settings/billing/", headers={"HX-Request": "true"}).status_code == 401
    assert client.post("/settings/billing/plan", data={"capped_amount": "50"},
                       headers={"HX-Request": "true"}).status_code == 401
