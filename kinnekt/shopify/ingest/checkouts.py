"""Storing Shopify checkouts: a checkout not completed is a `started_checkout` event for segments."""
from __future__ import annotations

from sqlalchemy import select

from kinnekt.db import utcnow
from kinnekt.models import Checkout, Shop
from kinnekt.shopify.ingest.customers import customer_ids_for, is_newer, latest_per_id
from kinnekt.shopify.ingest.linking import chunks, commit_with_retry, e164, notify_segments, subscribers_of
from kinnekt.shopify.ingest.rows import CheckoutRow


def upsert_checkouts(session, shop: Shop, rows: list[CheckoutRow]) -> list[int]:
    """Insert or update checkouts by token (newest updated_at wins); commits, tells segments, returns ids written."""
    rows = latest_per_id(rows, key=lambda row: row.token)
    if not rows:
        return []
    written, customers = commit_with_retry(session, lambda: _upsert(session, shop, rows))
    notify_segments(shop.id, subscribers_of(session, shop.id, customers))
    return written


def _upsert(session, shop: Shop, rows: list[CheckoutRow]) -> tuple[list[int], set[int]]:
    existing: dict[str, Checkout] = {}
    for batch in chunks([row.token for row in rows]):
        existing.update((c.token, c) for c in session.scalars(
            select(Checkout).where(Checkout.shop_id == shop.id, Checkout.token.in_(batch))))
    wanted = [(existing.get(row.token), row) for row in rows
              if row.token not in existing or is_newer(row.updated_at, existing[row.token].shopify_updated_at)]
    customer_ids = customer_ids_for(session, shop, [row.customer_shopify_id for _, row in wanted])
    affected: set[int] = set()
    written = []
    for checkout, row in wanted:
        if checkout is None:
            checkout = Checkout(shop_id=shop.id, token=row.token)
            session.add(checkout)
        elif checkout.customer_id is not None:
            affected.add(checkout.customer_id)
        checkout.customer_id = customer_ids.get(row.customer_shopify_id)
        checkout.phone = e164(row.phone)
        checkout.started_at = row.created_at or checkout.started_at or row.updated_at or utcnow()
        checkout.completed_at = row.completed_at
        checkout.shopify_updated_at = row.updated_at
        if checkout.customer_id is not None:
            affected.add(checkout.customer_id)
        written.append(checkout)
    session.flush()
    return [c.id for c in written], affected
