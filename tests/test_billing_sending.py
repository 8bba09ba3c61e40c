"""Billing and sending: nothing goes out unbilled (no plan, pending, frozen, cancelled, cap used up); the plan's
webhooks stop and resume sending; accepted messages are charged beside the senders."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.billing import plans
from kinnekt.models import WebhookEvent
from kinnekt.campaigns import sending
from kinnekt.models.billing import PlanStatus, UsageRecord, UsageStatus
from tests import shopify_payloads as sp
from tests.fake_shopify import connect
from tests.test_campaign_audience import segment
from tests.test_campaign_sending import ScriptedGateway, people, rows, send_now, wait_for


@pytest.fixture
def billed(app, monkeypatch):
    """Billing switched on, as in production (a stopped campaign's own re-check never fires into a later test)."""
    from kinnekt import defaults
    monkeypatch.setitem(app.config, "BILLING_REQUIRED", True)
    monkeypatch.setattr(defaults, "BILLING_BLOCKED_RECHECK_SECONDS", 10 ** 6)


@pytest.fixture
def scripted(monkeypatch, settled_jobs):
    """A gateway that accepts every campaign message (tests/test_campaign_sending.py)."""
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    return gateway


def _plan(db, shop, fake, cap="20"):
    connect(fake, shop)
    plans.subscribe(db, shop, Decimal(cap), "https://kinnekt.test/settings/billing/return")
    return plans.plan_for(db, shop.id)


def test_without_an_approved_plan_nothing_is_sent_until_it_is_approved(db, shop_us, scripted, fake_shopify,
                                                                        billed, deliver):
    team = people(db, shop_us, 3)
    us = segment(db, shop_us, "US", ["US"])
    row = wait_for(db, send_now(db, shop_us, [us]), statuses=("completed",), timeout=2)
    assert row.status == "in_progress" and scripted.sent == []
    assert {m.status for m in rows(db, row)} == {"pending"}  # waiting, not failed: nothing lost
    _plan(db, shop_us, fake_shopify)
    row = wait_for(db, row, timeout=2)
    assert scripted.sent == []  # pending approval: still nothing
    fake_shopify.approve(shop_us.domain)
    deliver("app_subscriptions/update", fake_shopify.subscription_webhook(shop_us.domain))
    row = wait_for(db, row)
    assert row.status == "completed" and sorted(to for to, _ in scripted.sent) == sorted(p.phone for p in team)
    # The senders handed the accepted messages over; a bulk job charged them, once.
    record = db.scalar(select(UsageRecord))
    assert record.status == UsageStatus.RECORDED and record.messages == 3
    assert len(fake_shopify.charged(shop_us.domain)) == 1
    plan = plans.plan_for(db, shop_us.id)
    assert plan.balance_used == record.amount == Decimal("0.02")  # 3 × $0.0081, in cents
    assert fake_shopify.subscription(shop_us.domain)["line"]["used"] == Decimal("0.02")


@pytest.mark.parametrize("status", ["CANCELLED", "FROZEN"])
def test_a_cancelled_or_frozen_plan_stops_sending(db, shop_us, scripted, fake_shopify, billed, deliver, status):
    people(db, shop_us, 2)
    us = segment(db, shop_us, "US", ["US"])
    _plan(db, shop_us, fake_shopify)
    fake_shopify.approve(shop_us.domain)
    deliver("app_subscriptions/update", fake_shopify.subscription_webhook(shop_us.domain))
    assert wait_for(db, send_now(db, shop_us, [us])).status == "completed"
    assert len(scripted.sent) == 2
    fake_shopify.set_subscription_status(shop_us.domain, status)
    event = deliver("app_subscriptions/update", fake_shopify.subscription_webhook(shop_us.domain))
    assert status.lower() in event.note
    row = wait_for(db, send_now(db, shop_us, [us], body="Second"), timeout=2)
    assert row.status == "in_progress" and len(scripted.sent) == 2
    assert {m.status for m in rows(db, row)} == {"pending"}


def test_the_cap_warning_is_stored(db, shop_us, fake_shopify, billed, deliver):
    plan = _plan(db, shop_us, fake_shopify)
    fake_shopify.approve(shop_us.domain)
    fake_shopify.subscription(shop_us.domain)["line"]["used"] = Decimal("18.5")
    event = deliver("app_subscriptions/approaching_capped_amount",
                    fake_shopify.subscription_webhook(shop_us.domain, "app_subscriptions/approaching_capped_amount"))
    assert "approaching" in event.note
    plan = plans.plan_for(db, shop_us.id)
    assert plan.approaching_at is not None and plan.balance_used == Decimal("18.5")
    assert plan.status == PlanStatus.ACTIVE


def test_another_shops_subscription_is_ignored(db, shop_us, fake_shopify, billed, deliver):
    _plan(db, shop_us, fake_shopify)
    body = fake_shopify.subscription_webhook(shop_us.domain)
    body["app_subscription"]["admin_graphql_api_id"] = "gid://shopify/AppSubscription/999999"
    body["app_subscription"]["status"] = "ACTIVE"
    event = deliver("app_subscriptions/update", body)
    assert "not this shop's plan" in event.note
    assert plans.plan_for(db, shop_us.id).status == PlanStatus.PENDING


def test_billing_webhooks_need_the_hmac_and_their_shape(app, client, db, shop_us):
    body = {"app_subscription": {"admin_graphql_api_id": "gid://shopify/AppSubscription/1", "status": "ACTIVE"}}
    raw = json.dumps(body).encode()
    bad = client.post("/webhooks/billing", data=raw, headers=sp.headers("app_subscriptions/update", raw,
                                                                         secret="not-the-secret"))
    assert bad.status_code == 401
    wrong = sp.deliver(client, "app_subscriptions/update", {"id": 1}, secret=app.config["SHOPIFY_API_SECRET"])
    assert wrong.status_code == 400  # not the topic's shape
    swapped = sp.approaching_capped_amount()
    swapped["admin_graphql_api_id"] = "gid://shopify/Order/1"  # another topic's body under this header
    assert sp.deliver(client, "app_subscriptions/approaching_capped_amount", swapped,
                      secret=app.config["SHOPIFY_API_SECRET"]).status_code == 400
    assert db.scalar(select(func.count()).select_from(WebhookEvent)) == 0  # neither was stored


def test_an_automation_sends_nothing_unbilled_either(db, shop_us, scripted, fake_shopify, billed):
    from kinnekt.models import Campaign, Message
    from tests.test_automation_engine import automation
    from tests.test_campaign_audience import subscriber
    us = segment(db, shop_us, "US", ["US"])
    auto = automation(db, shop_us, us)
    ann = subscriber(db, shop_us, country="US")
    db.add(Message(shop_id=shop_us.id, campaign_id=auto.campaign_id, subscriber_id=ann.id, kind="automation",
                   occurrence=1, to_phone=ann.phone, status="pending"))
    db.commit()
    backing = db.get(Campaign, auto.campaign_id)
    assert sending.run(db, backing.id, budget=5) == {sending.BILLING_STOPPED: 1}
    assert scripted.sent == [] and [m.status for m in rows(db, backing)] == ["pending"]
    _plan(db, shop_us, fake_shopify)
    fake_shopify.approve(shop_us.domain)
    plans.refresh(db, shop_us)  # approved: the shop's running campaigns and automations are woken
    assert wait_for(db, backing, statuses=("completed",), timeout=3).status == "in_progress"  # never completes
    assert [to for to, _ in scripted.sent] == [ann.phone]
    assert [m.status for m in rows(db, backing)] == ["sent"]
