"""Usage records: accepted messages are charged once through appUsageRecordCreate, even when an answer is lost,
when two workers record the same messages at once, or when Shopify refuses a record above the cap."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.billing import allowance, plans, usage
from kinnekt.models.billing import BillingPlan, PlanStatus, UsageRecord, UsageRecordMessage, UsageStatus
from tests import factories
from tests.concurrent_jobs import Race, reads
from tests.fake_shopify import connect


@pytest.fixture
def billed(app, monkeypatch):
    """Billing switched on, as in production (a stopped campaign's own re-check never fires into a later test)."""
    from kinnekt import defaults
    monkeypatch.setitem(app.config, "BILLING_REQUIRED", True)
    monkeypatch.setattr(defaults, "BILLING_BLOCKED_RECHECK_SECONDS", 10 ** 6)


@pytest.fixture
def on_plan(db, shop, fake_shopify, billed):
    """The shop on an approved plan with a $20 cap at the fake."""
    connect(fake_shopify, shop)
    url = plans.subscribe(db, shop, Decimal("20"), "https://kinnekt.test/billing/return")
    assert "/admin/charges/" in url
    fake_shopify.approve(shop.domain)
    plan = plans.refresh(db, shop)
    assert plan.status == PlanStatus.ACTIVE and plan.capped_amount == Decimal("20")
    return plan


def _sent(db, shop, phones, *, segments=1, status="sent"):
    campaign = factories.campaign(db, shop, status="in_progress")
    rows = []
    for phone in phones:
        subscriber = factories.subscriber(db, shop, phone=phone)
        rows.append(factories.message(db, campaign, subscriber, status=status, segments=segments))
    return [row.id for row in rows]


def _charged_messages(db) -> int:
    return db.scalar(select(func.count()).select_from(UsageRecordMessage))


def test_a_batch_is_charged_by_country_and_parts(db, shop, fake_shopify, on_plan):
    ids = _sent(db, shop, ["+12125550101", "+12125550102"], segments=2) + _sent(db, shop, ["+447700900123"])
    made = usage.record_messages(db, shop.id, ids)
    assert len(made) == 1
    record = db.get(UsageRecord, made[0])
    # 2 US texts of 2 parts at $0.0081 a part, 1 UK text of 1 part at $0.0414: $0.0738, charged as $0.07.
    assert record.status == UsageStatus.RECORDED and record.amount == Decimal("0.07")
    assert record.messages == 3 and record.parts == 5
    assert "United States 2" in record.description and "United Kingdom 1" in record.description
    (charge,) = fake_shopify.charged(shop.domain)
    assert charge["price"] == {"amount": "0.07", "currencyCode": "USD"}
    assert charge["idempotencyKey"] == record.idempotency_key == usage.idempotency_key(shop.id, ids)
    assert plans.plan_for(db, shop.id).balance_used == Decimal("0.07")


def test_only_accepted_uncharged_messages_of_the_shop_count(db, shop, other_shop, fake_shopify, on_plan):
    sent = _sent(db, shop, ["+12125550111"])
    unknown = _sent(db, shop, ["+12125550112"], status="unknown")
    foreign = _sent(db, other_shop, ["+12125550113"])
    assert len(usage.record_messages(db, shop.id, sent + unknown + foreign)) == 1
    assert usage.record_messages(db, shop.id, sent) == []  # already charged
    assert _charged_messages(db) == 1 and len(fake_shopify.charged(shop.domain)) == 1


def test_an_answer_lost_after_shopify_charged_is_asked_again_and_charged_once(db, shop, fake_shopify, on_plan,
                                                                              monkeypatch):
    from kinnekt import defaults
    monkeypatch.setattr(defaults, "SHOPIFY_MAX_RETRIES", 1)
    monkeypatch.setattr(defaults, "USAGE_RETRY_AFTER_SECONDS", 0)
    ids = _sent(db, shop, ["+12125550121", "+12125550122"])
    fake_shopify.fail_next("drop", times=5)  # Shopify records the charge each time, the answer never arrives
    (record_id,) = usage.record_messages(db, shop.id, ids)
    record = db.get(UsageRecord, record_id)
    assert record.status == UsageStatus.PENDING and "could not reach Shopify" in record.error
    assert len(fake_shopify.calls("graphql:KinnektUsageRecord")) >= 2  # the client itself tried again
    fake_shopify.faults.clear()
    assert usage.retry(db, shop.id) == 1
    db.refresh(record)
    assert record.status == UsageStatus.RECORDED and record.shopify_id
    assert len(fake_shopify.charged(shop.domain)) == 1  # one charge at Shopify, whatever the number of asks
    assert fake_shopify.subscription(shop.domain)["line"]["used"] == Decimal("0.02")
    assert plans.plan_for(db, shop.id).balance_used == Decimal("0.02")
    assert usage.retry(db, shop.id) == 0


def test_two_workers_recording_the_same_messages_charge_each_once(app, db, shop, fake_shopify, on_plan):
    ids = _sent(db, shop, [f"+1212555{n:04d}" for n in range(130, 140)])
    made = {}

    def worker(name, chosen):
        def work():
            from kinnekt.db import Session
            made[name] = usage.record_messages(Session, shop.id, chosen)
        return work

    # The second reads the same uncharged messages while the first has read them and not written yet.
    Race(app, reads("messages", "id")).run(worker("first", ids), worker("second", ids[3:] + ids[:2]))
    db.expire_all()
    assert _charged_messages(db) == len(ids)
    records = db.scalars(select(UsageRecord)).all()
    assert sum(r.messages for r in records) == len(ids)
    assert all(r.status == UsageStatus.RECORDED for r in records)
    at_shopify = fake_shopify.charged(shop.domain)
    assert len(at_shopify) == len(records)
    assert sum(Decimal(c["price"]["amount"]) for c in at_shopify) == plans.plan_for(db, shop.id).balance_used


def test_a_record_above_the_cap_is_refused_and_stops_sending_until_the_cap_is_raised(db, shop, fake_shopify,
                                                                                     on_plan):
    fake_shopify.subscription(shop.domain)["line"]["used"] = Decimal("19.99")
    on_plan.balance_used = Decimal("19.99")
    db.commit()
    ids = _sent(db, shop, ["+447700900131"])
    (record_id,) = usage.record_messages(db, shop.id, ids)
    record = db.get(UsageRecord, record_id)
    assert record.status == UsageStatus.REFUSED and "exceeds balance remaining" in record.error
    assert "used up" in allowance.stop_reason(db, shop)
    url = plans.raise_cap(db, shop, Decimal("50"))
    assert "/confirm" in url
    assert allowance.stop_reason(db, shop) is not None  # not before the merchant approves
    fake_shopify.approve(shop.domain)
    plans.refresh(db, shop)  # what the merchant's return (or the update webhook) does
    assert allowance.stop_reason(db, shop) is None
    assert usage.retry(db, shop.id, refused=True) == 1
    db.refresh(record)
    assert record.status == UsageStatus.RECORDED
    assert len(fake_shopify.charged(shop.domain)) == 1


def test_the_demo_store_is_charged_on_its_test_plan_without_shopify(db, shop, billed):
    shop.is_demo = True
    db.add(BillingPlan(shop_id=shop.id, name=plans.PLAN_NAME, status=PlanStatus.ACTIVE, test=True,
                       capped_amount=Decimal("10"), balance_used=Decimal("0"), line_item_id="demo"))
    db.commit()
    (record_id,) = usage.record_messages(db, shop.id, _sent(db, shop, ["+12125550141"]))
    assert db.get(UsageRecord, record_id, populate_existing=True).status == UsageStatus.RECORDED


@pytest.mark.parametrize("typed, problem", [("", "dollars"), ("abc", "dollars"), ("5", "between"),
                                            ("100000", "between"), ("10.001", "cents"), ("NaN", "cents"),
                                            ("1e999999", "between"), ("-20", "between")])
def test_a_bad_capped_amount_is_refused_with_a_reason(typed, problem):
    with pytest.raises(plans.PlanError, match=problem):
        plans.parse_cap(typed)


def test_stop_reasons_name_what_to_do(db, shop, fake_shopify, billed):
    assert "pick one in Settings" in allowance.stop_reason(db, shop)
    connect(fake_shopify, shop)
    plans.subscribe(db, shop, Decimal("20"), "https://kinnekt.test/billing/return")
    assert "approve it in Settings" in allowance.stop_reason(db, shop)
    for status, words in (("FROZEN", "unpaid"), ("CANCELLED", "cancelled")):
        fake_shopify.set_subscription_status(shop.domain, status)
        plans.refresh(db, shop)
        assert words in allowance.stop_reason(db, shop)
    shop.token_kind = "static"  # a custom app: Shopify cannot bill it
    db.commit()
    assert allowance.stop_reason(db, shop) is None


def test_the_demo_store_raises_its_test_plans_cap_at_once_and_cannot_pick_another_plan(db, shop):
    shop.is_demo = True
    db.add(BillingPlan(shop_id=shop.id, name=plans.PLAN_NAME, status=PlanStatus.ACTIVE, test=True,
                       capped_amount=Decimal("10"), balance_used=Decimal("0")))
    db.commit()
    with pytest.raises(plans.PlanError, match="more than the current"):
        plans.raise_cap(db, shop, Decimal("10"))
    assert plans.raise_cap(db, shop, Decimal("25")) is None  # nothing for Shopify to approve
    assert plans.plan_for(db, shop.id).capped_amount == Decimal("25")
    with pytest.raises(plans.PlanError, match="test plan already"):
        plans.subscribe(db, shop, Decimal("50"), "https://kinnekt.test/billing/return")
    assert plans.plan_for(db, shop.id).capped_amount == Decimal("25")


def test_a_test_send_and_an_unknown_send_a_receipt_confirms_are_charged(db, shop, on_plan, vonage_config,
                                                                       settled_jobs):
    from kinnekt.campaigns import composer
    from kinnekt.models import Message
    from kinnekt.queue import get_queue
    from kinnekt.sms import receipts
    message = composer.send_test(db, shop, {"body": "Hi at {shop_name}", "discount_mode": "none"}, "+12125550199")
    assert get_queue().drain(10)
    db.expire_all()
    assert db.get(Message, message.id).status == "sent"
    assert db.scalar(select(UsageRecordMessage.usage_record_id).where(UsageRecordMessage.message_id == message.id))
    # A send whose answer was lost ("unknown") is charged once a receipt shows Vonage accepted it.
    (lost,) = _sent(db, shop, ["+12125550102"], status="unknown")
    assert usage.record_messages(db, shop.id, [lost]) == []  # not accepted (yet): nothing to charge
    row = db.get(Message, lost)
    row.provider_id = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
    db.commit()
    assert receipts.apply(db, {"message_uuid": row.provider_id, "status": "delivered", "channel": "sms",
                               "to": "12125550102", "timestamp": "2026-12-07T10:00:00Z"}) == "delivered"
    assert get_queue().drain(10)
    assert db.scalar(select(UsageRecordMessage.usage_record_id).where(UsageRecordMessage.message_id == lost))
    assert _charged_messages(db) == 2


def test_messages_sent_without_an_active_plan_are_never_charged(db, shop, fake_shopify, billed):
    ids = _sent(db, shop, ["+12125550101"])  # e.g. a STOP confirmation, answered whatever the plan
    assert usage.record_messages(db, shop.id, ids) == []  # no plan
    connect(fake_shopify, shop)
    plans.subscribe(db, shop, Decimal("20"), "https://kinnekt.test/billing/return")
    assert usage.record_messages(db, shop.id, ids) == []  # waiting for the merchant's approval
    fake_shopify.approve(shop.domain)
    plans.refresh(db, shop)
    assert usage.retry(db, shop.id) == 0 and _charged_messages(db) == 0  # nothing was kept to charge later
    assert fake_shopify.charged(shop.domain) == []
