"""Storing Shopify orders with their line items, and keeping each customer's purchase facts exact."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import and_, delete, func, insert, select, update

from kinnekt import signals
from kinnekt.db import utcnow
from kinnekt.models import Customer, LineItem, Order, Shop
from kinnekt.segments import lifecycle
from kinnekt.shopify.ingest import deletions
from kinnekt.shopify.ingest.customers import (customer_ids_for, create_missing_customers, is_newer,
                                             latest_per_id)
from kinnekt.shopify.ingest.linking import chunks, commit_with_retry, e164, notify_segments, subscribers_of
from kinnekt.shopify.ingest.locking import stored_for_update
from kinnekt.shopify.ingest.rows import OrderRow

FULFILLMENT = {None: "unfulfilled", "": "unfulfilled", "null": "unfulfilled", "unfulfilled": "unfulfilled",
               "partial": "partially_fulfilled", "partially_fulfilled": "partially_fulfilled",
               "fulfilled": "fulfilled"}


def fulfillment_status(raw: str | None) -> str:
    """Shopify's fulfillment_status in our words: null -> unfulfilled, partial -> partially_fulfilled.

    `restocked` (every item returned to stock) has nothing left to fulfil; it is stored as unfulfilled.
    GraphQL's displayFulfillmentStatus values (UNFULFILLED, PARTIALLY_FULFILLED, ...) map the same way.
    """
    key = raw.strip().lower() if isinstance(raw, str) else raw
    return FULFILLMENT.get(key, "unfulfilled")


def financial_status(raw: str | None) -> str | None:
    """Shopify's financial_status lower-cased (GraphQL's displayFinancialStatus is upper-case)."""
    return raw.strip().lower() if isinstance(raw, str) and raw.strip() else None


def upsert_orders(session, shop: Shop, rows: list[OrderRow]) -> list[int]:
    """Insert or update orders and their line items; never lets an older updated_at win.

    Recomputes the facts of every customer the orders belong (or belonged) to, commits, and asks the segment
    engine to re-check those customers' subscribers. Returns the ids of the orders written.
    """
    rows = latest_per_id(rows)
    if not rows:
        return []
    create_missing_customers(session, shop, [row.customer_shopify_id for row in rows])

    def work():
        written, customers = _upsert(session, shop, rows)
        recompute_customer_facts(session, shop.id, customers)
        return written, customers

    written, customers = commit_with_retry(session, work)
    # Campaigns are credited (or a cancelled order's credit dropped) by kinnekt.campaigns.attribution, which
    # returns the subscribers a discount code credits before and after (not always the order's own).
    credited = signals.gathered(signals.announce(signals.orders_written, session, shop=shop, order_ids=written))
    notify_segments(shop.id, subscribers_of(session, shop.id, customers) + credited)
    return written


def _upsert(session, shop: Shop, rows: list[OrderRow]) -> tuple[list[int], set[int]]:
    ids = [row.shopify_id for row in rows]
    existing: dict[int, Order] = stored_for_update(session, Order, shop.id, Order.shopify_id, ids)
    tombstones = deletions.deleted_at(session, shop.id, "order", set(ids) - existing.keys())
    wanted = []
    for row in rows:
        order = existing.get(row.shopify_id)
        if order is None and deletions.stays_deleted(tombstones, row.shopify_id, row.updated_at):
            continue
        if order is not None and not is_newer(row.updated_at, order.shopify_updated_at):
            continue
        wanted.append((order, row))
    if not wanted:
        return [], set()
    customer_ids = customer_ids_for(session, shop, [row.customer_shopify_id for _, row in wanted])
    affected: set[int] = set()
    replaced: list[int] = []
    written: list[Order] = []
    for order, row in wanted:
        if order is None:
            order = Order(shop_id=shop.id, shopify_id=row.shopify_id)
            session.add(order)
        else:
            replaced.append(order.id)
            if order.customer_id is not None:
                affected.add(order.customer_id)  # the order may have moved to another customer
        order.customer_id = customer_ids.get(row.customer_shopify_id)
        order.name = row.name or order.name or ""
        order.email = row.email
        order.phone = e164(row.phone)
        order.created_at = row.created_at or order.created_at or row.updated_at or utcnow()
        order.shopify_updated_at = row.updated_at
        order.cancelled_at = row.cancelled_at
        order.test = bool(row.test)
        order.financial_status = financial_status(row.financial_status)
        order.fulfillment_status = fulfillment_status(row.fulfillment_status)
        order.currency = (row.currency or shop.currency or "USD")[:3]
        order.total_price = row.total_price if row.total_price is not None else Decimal(0)
        order.current_total_price = row.current_total_price
        order.total_discounts = row.total_discounts if row.total_discounts is not None else Decimal(0)
        order.discount_codes = list(row.discount_codes or [])
        order.landing_site = row.landing_site
        order.source_name = row.source_name
        if order.customer_id is not None:
            affected.add(order.customer_id)
        written.append(order)
    for batch in chunks(replaced):
        session.execute(delete(LineItem).where(LineItem.order_id.in_(batch))
                        .execution_options(synchronize_session=False))
    session.flush()
    items = []
    for order, (_old, row) in zip(written, wanted):
        seen = set()
        for item in row.line_items:
            if item.shopify_id in seen:
                continue
            seen.add(item.shopify_id)
            items.append({"shop_id": shop.id, "order_id": order.id, "shopify_id": item.shopify_id,
                          "product_id": item.product_id, "variant_id": item.variant_id,
                          "title": (item.title or "")[:512], "variant_title": item.variant_title,
                          "quantity": item.quantity, "price": item.price,
                          "customer_id": order.customer_id, "counted": order.counted})  # as the order's
    for batch in chunks(items):
        session.execute(insert(LineItem), batch)
    for order in written:
        session.expire(order, ["line_items"])
    return [order.id for order in written], affected


def recompute_customer_facts(session, shop_id: int, customer_ids) -> None:
    """Set money spent, discounts, order count, first/last order time and the expected next order
    (kinnekt.segments.lifecycle) from the customers' counted orders.

    One UPDATE per 500 customers, computed by the database (segment-rules.md "Which orders count"):
    counted orders are non-test and not cancelled; money is current_total_price, else total_price.
    """
    counted = and_(Order.customer_id == Customer.id, Order.shop_id == Customer.shop_id,
                   Order.test.is_(False), Order.cancelled_at.is_(None))

    def over_counted(expression):
        return select(expression).where(counted).scalar_subquery()

    for batch in chunks(sorted(set(customer_ids))):
        # Lock the rows first (in id order, so two jobs cannot deadlock): on PostgreSQL the UPDATE below then
        # starts after any concurrent job that changed these customers' orders has committed, and its
        # snapshot sees those orders. Without it, a job blocked on the row would sum with a stale snapshot.
        # NO KEY UPDATE: two jobs that each inserted an order of the customer (each holding a key-share lock on
        # it, from the foreign key) would wait for each other's key-share lock under FOR UPDATE: a deadlock.
        session.execute(select(Customer.id).where(Customer.shop_id == shop_id, Customer.id.in_(batch))
                        .order_by(Customer.id).with_for_update(key_share=True))
        session.execute(
            update(Customer)
            .where(Customer.shop_id == shop_id, Customer.id.in_(batch))
            .values(
                money_spent=func.coalesce(
                    over_counted(func.sum(func.coalesce(Order.current_total_price, Order.total_price))), 0),
                total_discounts=func.coalesce(over_counted(func.sum(Order.total_discounts)), 0),
                orders_count=over_counted(func.count(Order.id)),
                first_order_at=over_counted(func.min(Order.created_at)),
                last_order_at=over_counted(func.max(Order.created_at)),
            )
            .execution_options(synchronize_session="fetch")
        )
        lifecycle.refresh_expected_next_order(session, shop_id, batch)  # the median needs the orders themselves


def delete_order(session, shop: Shop, shopify_id: int, *, deleted_at: dt.datetime | None = None) -> int | None:
    """Delete an order and its line items, recompute its customer's facts, commit; returns its old id."""
    order = session.scalar(select(Order).where(Order.shop_id == shop.id, Order.shopify_id == shopify_id))
    deletions.record(session, shop.id, "order", shopify_id, deleted_at)
    if order is None:
        session.commit()
        return None
    order_id, customer_id = order.id, order.customer_id
    session.execute(delete(Order).where(Order.id == order_id).execution_options(synchronize_session=False))
    session.expunge(order)
    if customer_id is not None:
        recompute_customer_facts(session, shop.id, [customer_id])
    session.commit()
    if customer_id is not None:
        notify_segments(shop.id, subscribers_of(session, shop.id, [customer_id]))
    return order_id
