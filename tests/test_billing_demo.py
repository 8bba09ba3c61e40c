"""The demo store runs on a test plan with this period's usage charged, and charges the texts it sends."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from kinnekt import demo
from kinnekt.billing import allowance, plans
from kinnekt.models import Message
from kinnekt.models.billing import PlanStatus, UsageRecord, UsageRecordMessage, UsageStatus
from kinnekt.models.message import MessageStatus

NOW = dt.datetime(2026, 11, 22, 17, 30, 12, tzinfo=dt.timezone.utc)


def test_the_demo_store_has_a_test_plan_with_this_periods_usage(app, db, monkeypatch):
    monkeypatch.setitem(app.config, "BILLING_REQUIRED", True)
    shop = demo.seed(db, now=NOW, customers=300)
    plan = plans.plan_for(db, shop.id)
    assert plan.status == PlanStatus.ACTIVE and plan.test
    records = db.scalars(select(UsageRecord).where(UsageRecord.shop_id == shop.id)).all()
    assert records and all(r.status == UsageStatus.RECORDED for r in records)
    assert plan.balance_used == sum(r.amount for r in records) > 0
    assert plan.capped_amount >= 3 * plan.balance_used  # room to send more
    charged = db.scalar(select(func.count()).select_from(UsageRecordMessage))
    period = db.scalar(select(func.count()).select_from(Message).where(
        Message.shop_id == shop.id, Message.status.in_(MessageStatus.ACCEPTED),
        Message.sent_at >= NOW - dt.timedelta(days=12)))
    assert charged == period == sum(r.messages for r in records) > 0
    assert allowance.stop_reason(db, shop) is None
    assert plan.period_ends_at == NOW + dt.timedelta(days=18)
    assert demo.clear(db, shop.domain)
    assert db.scalar(select(func.count()).select_from(UsageRecordMessage)) == 0
