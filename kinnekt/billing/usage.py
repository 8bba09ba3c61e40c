"""Usage records: each batch of accepted messages is charged once through `appUsageRecordCreate`.

`record_messages` takes message ids (those a sender saw accepted), keeps the shop's accepted ones not charged
yet, and stores one `UsageRecord` per chunk with its `UsageRecordMessage` rows in one transaction, before
Shopify is asked: the message id is the link's primary key, so two workers recording the same messages at once
cannot both charge one (the second's insert fails, and it looks again). The record's idempotency key is derived
from the messages it covers, so asking again after a lost answer (`charge`, `retry`) never charges twice.
The price of each message is its parts times its destination country's price (kinnekt.sms.prices, the same
table the composer's estimate uses). A record Shopify refuses above the capped amount stops the shop's sending
(`plans.mark_cap_reached`) and is asked for again once the cap is raised.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.billing import plans
from kinnekt.db import begin_writing, utcnow
from kinnekt.models import Message, Shop
from kinnekt.models.billing import BillingPlan, PlanStatus, UsageRecord, UsageRecordMessage, UsageStatus
from kinnekt.models.message import MessageStatus
from kinnekt.shopify.graphql import ShopifyError, client_for
from kinnekt.sms import prices

log = logging.getLogger(__name__)

RECORD_USAGE = """
mutation KinnektUsageRecord($lineItemId: ID!, $price: MoneyInput!, $description: String!, $key: String) {
  appUsageRecordCreate(subscriptionLineItemId: $lineItemId, price: $price, description: $description,
                       idempotencyKey: $key) {
    appUsageRecord { id idempotencyKey price { amount currencyCode } }
    userErrors { field message }
  }
}
"""

OVER_CAP = "exceeds balance remaining"
"""Part of Shopify's refusal of a record above the capped amount ("Total price exceeds balance remaining")."""

CENT = Decimal("0.01")
_ATTEMPTS = 5  # a chunk raced by another worker is looked at again; each round takes at least one message away


def idempotency_key(shop_id: int, message_ids: list[int]) -> str:
    """The key of a record covering these messages: the same messages always give the same key."""
    text = f"kinnekt-usage:{shop_id}:" + ",".join(str(i) for i in sorted(message_ids))
    return hashlib.sha256(text.encode()).hexdigest()


def record_messages(session: OrmSession, shop_id: int, message_ids) -> list[int]:
    """Charge the shop's accepted, not yet charged messages among `message_ids`; returns the records made.

    Only a shop billed through Shopify on an active plan is charged: a reply sent before the merchant approved a
    plan (STOP and HELP are answered whatever the plan), or by a shop billing does not apply to, is never charged,
    then or later."""
    shop = session.get(Shop, shop_id)
    plan = plans.plan_for(session, shop_id)
    if shop is None or plans.exempt(shop) or plan is None or plan.status != PlanStatus.ACTIVE:
        return []
    made = []
    ids = sorted({int(i) for i in message_ids})
    for start in range(0, len(ids), defaults.USAGE_BATCH_SIZE):
        record_id = _store(session, shop_id, ids[start:start + defaults.USAGE_BATCH_SIZE])
        if record_id is not None:
            made.append(record_id)
            charge(session, record_id)
    return made


def _store(session: OrmSession, shop_id: int, chunk: list[int]) -> int | None:
    """Store one pending record for the chunk's uncharged accepted messages (None when there are none)."""
    for _ in range(_ATTEMPTS):
        begin_writing(session)
        rows = session.execute(
            select(Message.id, Message.to_phone, Message.segments)
            .where(Message.id.in_(chunk), Message.shop_id == shop_id, Message.status.in_(MessageStatus.ACCEPTED),
                   ~exists().where(UsageRecordMessage.message_id == Message.id))
            .order_by(Message.id).execution_options(all_shops=True)).all()
        if not rows:
            session.commit()
            return None
        countries: Counter = Counter()
        parts = 0
        amount = Decimal(0)
        for _, phone, segments in rows:
            country = prices.country_of(phone)
            countries[country] += 1
            parts += max(1, segments or 1)
            amount += prices.message_price(phone, max(1, segments or 1))
        # Shopify charges whole cents: the record's amount is what the merchant pays, and what the balance adds.
        amount = max(CENT, amount.quantize(CENT, ROUND_HALF_UP))
        record = UsageRecord(shop_id=shop_id, idempotency_key=idempotency_key(shop_id, [r.id for r in rows]),
                             messages=len(rows), parts=parts, amount=amount,
                             description=describe(len(rows), parts, countries))
        try:
            session.add(record)
            session.flush()
            session.execute(insert(UsageRecordMessage), [{"message_id": r.id, "usage_record_id": record.id}
                                                         for r in rows])
            session.commit()
            return record.id
        except IntegrityError:  # another worker charged some of them first: look again
            session.rollback()
    log.warning("shop %s: gave up storing a usage record after %s races", shop_id, _ATTEMPTS)
    return None


def describe(messages: int, parts: int, countries: Counter) -> str:
    """The record's description, as the merchant reads it on the Shopify bill."""
    names = ", ".join(f"{prices.COUNTRY_NAMES.get(c or '', c or 'other')} {n}" for c, n in countries.most_common(4))
    more = "" if len(countries) <= 4 else ", …"
    return f"{messages} SMS ({parts} part{'s' if parts != 1 else ''}): {names}{more}"[:255]


def charge(session: OrmSession, record_id: int) -> str:
    """Ask Shopify for one stored record (again, after a failure: same key, charged once). Returns its status."""
    record = session.get(UsageRecord, record_id, populate_existing=True)
    if record is None or record.status == UsageStatus.RECORDED:
        return UsageStatus.RECORDED if record is not None else "gone"
    shop = session.get(Shop, record.shop_id)
    plan = plans.plan_for(session, record.shop_id)
    if plan is None or not plan.line_item_id:
        record.error = "no plan to charge"
        session.commit()
        return record.status
    record.attempts += 1
    session.commit()
    if shop.is_demo:
        return _answer_locally(session, record, plan)
    try:
        data = client_for(shop).query(RECORD_USAGE, {
            "lineItemId": plan.line_item_id,
            "price": {"amount": str(record.amount.quantize(CENT)), "currencyCode": "USD"},
            "description": record.description, "key": record.idempotency_key})
    except ShopifyError as exc:  # no answer: the record stays pending and is asked for again (same key)
        record.error = str(exc)[:500]
        session.commit()
        log.warning("shop %s: usage record %s not answered: %s", record.shop_id, record.id, exc)
        return record.status
    result = data.get("appUsageRecordCreate") or {}
    errors = result.get("userErrors") or []
    if errors:
        message = "; ".join(str(e.get("message")) for e in errors)
        return _refused(session, record, message, over_cap=any(OVER_CAP in str(e.get("message")).lower()
                                                               for e in errors))
    created = result.get("appUsageRecord") or {}
    return _recorded(session, record, created.get("id"))


def _answer_locally(session: OrmSession, record: UsageRecord, plan: BillingPlan) -> str:
    """The demo store's test plan: no Shopify to ask, so the cap is applied here as Shopify would."""
    if plan.balance_used + record.amount > plan.capped_amount:
        return _refused(session, record, "Total price exceeds balance remaining", over_cap=True)
    return _recorded(session, record, None)


def _recorded(session: OrmSession, record: UsageRecord, shopify_id: str | None) -> str:
    """Mark the record charged and add it to the plan's balance, once (only the move from not recorded adds)."""
    moved = session.execute(
        update(UsageRecord).where(UsageRecord.id == record.id, UsageRecord.status != UsageStatus.RECORDED)
        .values(status=UsageStatus.RECORDED, shopify_id=shopify_id, error=None, recorded_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount
    if moved:
        session.execute(update(BillingPlan).where(BillingPlan.shop_id == record.shop_id)
                        .values(balance_used=BillingPlan.balance_used + record.amount)
                        .execution_options(synchronize_session=False))
    session.commit()
    return UsageStatus.RECORDED


def _refused(session: OrmSession, record: UsageRecord, message: str, *, over_cap: bool) -> str:
    session.execute(update(UsageRecord).where(UsageRecord.id == record.id, UsageRecord.status != UsageStatus.RECORDED)
                    .values(status=UsageStatus.REFUSED, error=message[:500])
                    .execution_options(synchronize_session=False))
    session.commit()
    if over_cap:
        plans.mark_cap_reached(session, record.shop_id)
    log.warning("shop %s: Shopify refused usage record %s: %s", record.shop_id, record.id, message)
    return UsageStatus.REFUSED


def retry(session: OrmSession, shop_id: int, *, refused: bool = False, now: dt.datetime | None = None) -> int:
    """Ask again for the shop's records left pending (for USAGE_RETRY_AFTER_SECONDS), and the refused ones too
    when `refused` (the cap was raised); returns how many were asked for."""
    now = now or utcnow()
    statuses = [UsageStatus.PENDING] + ([UsageStatus.REFUSED] if refused else [])
    ids = session.scalars(select(UsageRecord.id).where(
        UsageRecord.shop_id == shop_id, UsageRecord.status.in_(statuses),
        (UsageRecord.status == UsageStatus.REFUSED)
        | (UsageRecord.created_at <= now - dt.timedelta(seconds=defaults.USAGE_RETRY_AFTER_SECONDS)))
        .order_by(UsageRecord.id).execution_options(all_shops=True)).all()
    for record_id in ids:
        if charge(session, record_id) == UsageStatus.REFUSED:
            break  # still above the cap: the rest would be refused too
    return len(ids)


def shops_with_unanswered(session: OrmSession, *, now: dt.datetime | None = None) -> list[int]:
    """Shops with a record pending longer than USAGE_RETRY_AFTER_SECONDS (for recovery)."""
    now = now or utcnow()
    return list(session.scalars(select(UsageRecord.shop_id).where(
        UsageRecord.status == UsageStatus.PENDING,
        UsageRecord.created_at <= now - dt.timedelta(seconds=defaults.USAGE_RETRY_AFTER_SECONDS))
        .distinct().execution_options(all_shops=True)).all())


def unanswered_amount(session: OrmSession, shop_id: int) -> Decimal:
    """What the shop's pending records will add to its balance once Shopify answers."""
    from sqlalchemy import func
    total = session.scalar(select(func.coalesce(func.sum(UsageRecord.amount), 0)).where(
        UsageRecord.shop_id == shop_id, UsageRecord.status == UsageStatus.PENDING)
        .execution_options(all_shops=True))
    return Decimal(str(total or 0))


def recent(session: OrmSession, shop_id: int, limit: int = 10) -> list[UsageRecord]:
    """The shop's newest usage records (Settings)."""
    return list(session.scalars(select(UsageRecord).where(UsageRecord.shop_id == shop_id)
                                .order_by(UsageRecord.id.desc()).limit(limit)
                                .execution_options(all_shops=True)).all())
