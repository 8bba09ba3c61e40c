"""The demo store's plan: a test plan (as a development store gets), its usage records for the texts sent in the
current 30-day period, priced by the one price table, and the balance they add up to; the cap leaves room to
send more. The demo has no Shopify to ask, so its records are stored as charged (kinnekt.billing.usage charges
the demo's new texts the same way, against this cap)."""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import insert, select

from kinnekt import defaults
from kinnekt.billing import plans, usage
from kinnekt.models import Message, Shop
from kinnekt.models.billing import BillingPlan, PlanStatus, UsageRecord, UsageRecordMessage, UsageStatus
from kinnekt.models.message import MessageStatus
from kinnekt.sms import prices

PERIOD_DAYS_GONE = 12
"""How far into its 30-day billing period the demo store is."""


def seed_billing(session, shop: Shop, now: dt.datetime) -> BillingPlan:
    """Store the demo's active test plan and its usage records for this period's accepted texts; commits."""
    start = now - dt.timedelta(days=PERIOD_DAYS_GONE)
    rows = session.execute(
        select(Message.id, Message.to_phone, Message.segments, Message.sent_at, Message.provider_id)
        .where(Message.shop_id == shop.id, Message.status.in_(MessageStatus.ACCEPTED), Message.sent_at >= start)
        .order_by(Message.sent_at, Message.id).execution_options(all_shops=True)).all()
    records, links, used = [], [], Decimal(0)
    for first in range(0, len(rows), defaults.USAGE_BATCH_SIZE):
        chunk = rows[first:first + defaults.USAGE_BATCH_SIZE]
        countries = Counter(prices.country_of(m.to_phone) for m in chunk)
        parts = sum(max(1, m.segments or 1) for m in chunk)
        amount = sum((prices.message_price(m.to_phone, max(1, m.segments or 1)) for m in chunk), Decimal(0))
        amount = max(usage.CENT, amount.quantize(usage.CENT, ROUND_HALF_UP))
        at = max(m.sent_at for m in chunk) + dt.timedelta(minutes=2)
        # Derived from the messages it covers, as usage.idempotency_key is, but from their seeded provider ids
        # rather than their row ids, so the same seed gives the same rows (never sent to Shopify).
        key = hashlib.sha256(f"kinnekt-demo-usage:{shop.domain}:{','.join(m.provider_id for m in chunk)}"
                             .encode()).hexdigest()
        records.append({"shop_id": shop.id, "status": UsageStatus.RECORDED, "messages": len(chunk), "parts": parts,
                        "amount": amount, "description": usage.describe(len(chunk), parts, countries),
                        "idempotency_key": key,
                        "shopify_id": None, "attempts": 1, "created_at": at, "recorded_at": at,
                        "_ids": [m[0] for m in chunk]})
        used += amount
    for record in records:
        ids = record.pop("_ids")
        record_id = session.execute(insert(UsageRecord).values(**record).returning(UsageRecord.id)).scalar_one()
        links.extend({"message_id": message_id, "usage_record_id": record_id} for message_id in ids)
    if links:
        session.execute(insert(UsageRecordMessage), links)
    cap = Decimal(max(250, math.ceil(float(used) * 3 / 50) * 50))  # room for a few more campaigns
    plan = BillingPlan(shop_id=shop.id, name=plans.PLAN_NAME, status=PlanStatus.ACTIVE, terms=plans.TERMS,
                       capped_amount=cap, balance_used=used, test=True,
                       subscription_id="gid://shopify/AppSubscription/demo", line_item_id="demo",
                       period_ends_at=start + dt.timedelta(days=30), created_at=now - dt.timedelta(days=200),
                       updated_at=now)
    session.add(plan)
    session.commit()
    return plan
