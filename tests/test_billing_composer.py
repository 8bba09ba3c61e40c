"""Before a campaign starts: its estimated cost against what is left under the cap; a campaign that would pass
the cap is not scheduled unless the merchant raises the cap or chooses to send only as far as the cap allows,
and then only what fits is sent; without a billable plan the composer says why and what to do."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from kinnekt.campaigns import lifecycle
from kinnekt.db import Session
from kinnekt.models import Campaign, Message
from kinnekt.models.billing import BillingPlan, PlanStatus
from tests.test_campaigns_web import form, post, segment, subscriber


@pytest.fixture
def segs(shop):
    """"VIP": Ada and Bob, two subscribed US numbers (the composer's form chooses it)."""
    return {"vip": segment(shop, "VIP", [subscriber(shop, "+12125550101", first_name="Ada"),
                                         subscriber(shop, "+12125550102")])}


@pytest.fixture
def billed(app, monkeypatch, settled_jobs):
    """Billing on; the campaign's start is run by the test, its senders never."""
    from kinnekt.campaigns import tasks
    from kinnekt import defaults
    monkeypatch.setitem(app.config, "BILLING_REQUIRED", True)
    monkeypatch.setattr(defaults, "BILLING_BLOCKED_RECHECK_SECONDS", 10 ** 6)
    monkeypatch.setattr(tasks, "enqueue_senders", lambda *a, **k: None)
    monkeypatch.setattr(tasks, "enqueue_start_campaign", lambda *a, **k: None)


def _plan(shop, cap: str, used: str) -> BillingPlan:
    plan = BillingPlan(shop_id=shop.id, name="Kinnekt SMS", status=PlanStatus.ACTIVE, capped_amount=Decimal(cap),
                       balance_used=Decimal(used), terms="t", subscription_id="gid://shopify/AppSubscription/1",
                       line_item_id="gid://shopify/AppSubscriptionLineItem/1")
    Session.add(plan)
    Session.commit()
    return plan


def test_without_a_plan_the_composer_says_why_and_nothing_is_scheduled(client, auth, shop, segs, billed):
    page = client.get("/campaigns/new", headers=auth)
    assert b"Nothing can be sent now. Sending needs a plan" in page.data
    answer = post(client, auth, "/campaigns/", form(segs, action="schedule"))
    assert "Saved as a draft, not scheduled: Sending needs a plan" in answer.get_data(as_text=True)
    assert Session.scalars(select(Campaign)).one().status == "draft"


def test_the_cost_is_shown_against_what_is_left(client, auth, shop, segs, billed):
    _plan(shop, "10", "2.5")
    answer = client.post("/campaigns/compose/audience", data=form(segs), headers=auth)
    assert b'id="campaign-cost-left">$7.50' in answer.data and b"campaign-over-cap" not in answer.data


def test_a_campaign_over_the_cap_asks_the_merchant_to_choose(client, auth, shop, segs, billed):
    _plan(shop, "10", "9.99")  # one cent left: one US text of one part ($0.0081) fits, not two
    answer = client.post("/campaigns/compose/audience", data=form(segs), headers=auth)
    assert b"more than the $0.01 left under your plan" in answer.data and b'name="cap_choice"' in answer.data
    refused = post(client, auth, "/campaigns/", form(segs, action="schedule"))
    assert ("Raise the cap in Settings, or choose to send only as far as the cap allows"
            in refused.get_data(as_text=True))
    assert Session.scalars(select(Campaign)).one().status == "draft"
    chosen = post(client, auth, "/campaigns/", form(segs, action="schedule", send="now", cap_choice="up_to_cap"))
    assert chosen.status_code == 200 and "HX-Location" in chosen.headers
    campaign = Session.scalars(select(Campaign).order_by(Campaign.id.desc())).first()
    assert campaign.cap_choice == "up_to_cap" and campaign.status == "in_progress"
    assert lifecycle.start(Session, campaign.id) == "started"
    outcome = sorted((m.status, m.skip_reason) for m in Session.scalars(
        select(Message).where(Message.campaign_id == campaign.id).execution_options(populate_existing=True)))
    assert outcome == [("pending", None), ("skipped", "over_cap")]  # Ada and Bob: only one fits


def test_a_running_campaign_stopped_by_billing_says_why(client, auth, shop, segs, billed):
    plan = _plan(shop, "10", "0")
    post(client, auth, "/campaigns/", form(segs, action="schedule", send="now"))
    campaign = Session.scalars(select(Campaign)).one()
    assert lifecycle.start(Session, campaign.id) == "started"
    page = client.get(f"/campaigns/{campaign.id}", headers=auth)
    assert b"campaign-billing-stop" not in page.data
    plan.status = PlanStatus.CANCELLED
    Session.commit()
    page = client.get(f"/campaigns/{campaign.id}/progress", headers=auth)
    assert b"Sending is stopped" in page.data and b"Your plan was cancelled" in page.data


def test_a_shop_that_is_not_billed_sees_no_cap(client, auth, shop, segs, settled_jobs):
    answer = client.post("/campaigns/compose/audience", data=form(segs), headers=auth)
    assert b"campaign-cost-left" not in answer.data and b"Nothing can be sent now" not in answer.data
