"""Storing Shopify checkouts: a checkout not completed is a `started_checkout` event for segments.

A checkout whose SMS marketing box was ticked also passes that consent to the subscribers side
(kinnekt.subscribers.checkout.apply_checkout_consent), once the checkout is stored.
"""
from __future__ import annotations

from sqlalchemy import select

from kinnekt.db import utcnow
from kinnekt.models import Checkout, Customer, Shop, Subscriber
from kinnekt.shopify.ingest.customers import (customer_ids_for, create_missing_customers, is_newer,
                                             latest_per_id)
from kinnekt.shopify.ingest.linking import chunks, commit_with_retry, e164, notify_segments, subscribers_of
from kinnekt.shopify.ingest.locking import stored_for_update
from kinnekt.shopify.ingest.rows import CheckoutRow


def upsert_checkouts(session, shop: Shop, rows: list[CheckoutRow]) -> list[int]:
    """Insert or update checkouts by token (newest updated_at wins); commits, tells segments, returns ids written."""
    rows = latest_per_id(rows, key=lambda row: row.token)
    if not rows:
        return []
    create_missing_customers(session, shop, [row.customer_shopify_id for row in rows])
    written, customers, phones = commit_with_retry(session, lambda: _upsert(session, shop, rows))
    notify_segments(shop.id, subscribers_of(session, shop.id, customers) + _subscribers_with(session, shop.id, phones))
    _apply_sms_consent(session, shop, rows, written)
    return written


def _apply_sms_consent(session, shop: Shop, rows: list[CheckoutRow], written_ids: list[int]) -> None:
    """Hand each written checkout with the SMS box ticked to the consent rules (Checkout collection decides)."""
    from kinnekt.subscribers.checkout import apply_checkout_consent
    if not shop.checkout_collection or not written_ids:
        return
    ticked = {row.token: row for row in rows if row.accepts_sms_marketing}
    if not ticked:
        return
    stored = session.scalars(select(Checkout).where(Checkout.id.in_(written_ids),
                                                    Checkout.token.in_(list(ticked)))).all()
    for checkout in stored:
        row = ticked[checkout.token]
        customer = session.get(Customer, checkout.customer_id) if checkout.customer_id is not None else None
        apply_checkout_consent(session, shop, customer, accepted=True, phone=row.sms_marketing_phone or row.phone,
                               token=row.token, started_at=checkout.started_at)


def _subscribers_with(session, shop_id: int, phones) -> list[int]:
    """Ids of the shop's subscribers with these phone numbers (a checkout without a customer is theirs)."""
    found: list[int] = []
    for batch in chunks(sorted(set(phones))):
        found.extend(session.scalars(select(Subscriber.id).where(Subscriber.shop_id == shop_id,
                                                                 Subscriber.phone.in_(batch))))
    return found


def _upsert(session, shop: Shop, rows: list[CheckoutRow]) -> tuple[list[int], set[int], set[str]]:
    """Write the rows; returns (checkout ids, customers and phones whose `started_checkout` events may change).

    A checkout with no customer belongs to the subscriber with its phone (the contract), so its phone, before
    and after the write, is affected as well.
    """
    existing: dict[str, Checkout] = stored_for_update(session, Checkout, shop.id, Checkout.token,
                                                      [row.token for row in rows])
    wanted = [(existing.get(row.token), row) for row in rows
              if row.token not in existing or is_newer(row.updated_at, existing[row.token].shopify_updated_at)]
    customer_ids = customer_ids_for(session, shop, [row.customer_shopify_id for _, row in wanted])
    affected: set[int] = set()
    phones: set[str] = set()
    written = []
    for checkout, row in wanted:
        if checkout is None:
            checkout = Checkout(shop_id=shop.id, token=row.token)
            session.add(checkout)
        elif checkout.customer_id is not None:
            affected.add(checkout.customer_id)
        elif checkout.phone is not None:
            phones.add(checkout.phone)
        checkout.customer_id = customer_ids.get(row.customer_shopify_id)
        checkout.phone = e164(row.phone)
        checkout.started_at = row.created_at or checkout.started_at or row.updated_at or utcnow()
        checkout.completed_at = row.completed_at
        checkout.shopify_updated_at = row.updated_at
        checkout.recovery_url = row.recovery_url or checkout.recovery_url
        if checkout.customer_id is not None:
            affected.add(checkout.customer_id)
        elif checkout.phone is not None:
            phones.add(checkout.phone)
        written.append(checkout)
    session.flush()
    return [c.id for c in written], affected, phones
