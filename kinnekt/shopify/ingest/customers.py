"""Storing Shopify customers: upsert (newest updated_at wins), tags, phone linking, SMS consent, delete."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, insert, select

from kinnekt.casefold import fold
from kinnekt.models import Customer, CustomerTag, Shop
from kinnekt.shopify.ingest import deletions
from kinnekt.shopify.ingest.linking import (chunks, commit_with_retry, e164, link_by_phone, notify_segments,
                                           subscribers_of)
from kinnekt.shopify.ingest.locking import stored_for_update
from kinnekt.shopify.ingest.rows import CustomerRow

log = logging.getLogger(__name__)

TAG_LENGTH = 255
CONSENT_STATES = ("subscribed", "not_subscribed", "pending", "unsubscribed", "redacted", "invalid")


def is_newer(incoming: dt.datetime | None, stored: dt.datetime | None) -> bool:
    """True when data stamped `incoming` may replace data stamped `stored` (never older; equal is a no-op)."""
    if stored is None:
        return True
    if incoming is None:
        return False
    return incoming > stored


def latest_per_id(rows, key=lambda row: row.shopify_id):
    """One row per Shopify id, the one with the newest updated_at (a batch may hold an id twice)."""
    best: dict = {}
    for row in rows:
        current = best.get(key(row))
        if current is None or current.updated_at is None or (
                row.updated_at is not None and row.updated_at >= current.updated_at):
            best[key(row)] = row
    return list(best.values())


def normalised_tags(tags) -> set[str]:
    """Tags as stored: trimmed, case-folded (`kinnekt.casefold.fold`, what segments compare), unique."""
    return {fold(t)[:TAG_LENGTH] for t in tags or () if t and t.strip()}


def upsert_customers(session, shop: Shop, rows: list[CustomerRow], *, with_tags: bool = True) -> list[int]:
    """Insert or update customers; never lets an older updated_at win. Returns the ids of customers changed.

    Commits. `with_tags=False` keeps stored tags (customer webhooks of API 2025-01+ carry none). A row that
    carries SMS consent (bulk sync) applies it when newer than the stored consent. Segments are told.
    """
    rows = latest_per_id(rows)
    if not rows:
        return []
    changed = commit_with_retry(session, lambda: _upsert(session, shop, rows, with_tags))
    with_consent = {row.shopify_id: row for row in rows if row.sms_consent_state is not None}
    stored: list[tuple[int, int]] = []
    for batch in chunks(with_consent):
        stored.extend(session.execute(select(Customer.id, Customer.shopify_id).where(
            Customer.shop_id == shop.id, Customer.shopify_id.in_(batch))).all())
    for customer_id, shopify_id in sorted(stored):
        row = with_consent[shopify_id]
        if apply_consent(session, shop, customer_id, state=row.sms_consent_state, phone=None,
                         consent_updated_at=row.sms_consent_updated_at,
                         opt_in_level=row.sms_consent_opt_in_level, notify=False):
            changed.add(customer_id)
    changed_ids = sorted(changed)
    notify_segments(shop.id, subscribers_of(session, shop.id, changed_ids))
    return changed_ids


def _upsert(session, shop: Shop, rows: list[CustomerRow], with_tags: bool) -> set[int]:
    ids = [row.shopify_id for row in rows]
    existing: dict[int, Customer] = stored_for_update(session, Customer, shop.id, Customer.shopify_id, ids)
    tombstones = deletions.deleted_at(session, shop.id, "customer", set(ids) - existing.keys())
    touched: list[tuple[Customer, CustomerRow, bool]] = []
    # New customers are inserted in Shopify id order, as placeholders are (customer_ids_for): two jobs inserting
    # the same ones then meet at the first of them, and neither holds one the other waits for.
    for row in sorted(rows, key=lambda row: row.shopify_id):
        customer = existing.get(row.shopify_id)
        if customer is None:
            if deletions.stays_deleted(tombstones, row.shopify_id, row.updated_at):
                continue
            customer = Customer(shop_id=shop.id, shopify_id=row.shopify_id)
            session.add(customer)
            is_new = True
        elif not is_newer(row.updated_at, customer.shopify_updated_at):
            continue
        else:
            is_new = False
        dirty = _assign(customer, {
            "email": row.email, "phone": e164(row.phone, row.country_code), "first_name": row.first_name,
            "last_name": row.last_name, "city": (row.city or "").strip() or None, "country_code": row.country_code,
            "shopify_created_at": row.created_at, "shopify_updated_at": row.updated_at,
        })
        touched.append((customer, row, is_new or dirty))
    session.flush()
    changed = {customer.id for customer, _row, dirty in touched if dirty}
    if with_tags and touched:
        changed |= _replace_tags(session, shop.id, [(customer.id, row.tags) for customer, row, _ in touched])
    link_by_phone(session, shop.id, [customer.phone for customer, _row, dirty in touched if dirty])
    return changed


def _assign(obj, values: dict) -> bool:
    """Set the attributes that differ; True when any did."""
    dirty = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            dirty = True
    return dirty


def _replace_tags(session, shop_id: int, wanted: list[tuple[int, list[str]]]) -> set[int]:
    """Make each customer's tag set exactly the given one; returns the customers whose tags changed."""
    wanted_sets = {customer_id: normalised_tags(tags) for customer_id, tags in wanted}
    stored: dict[int, dict[str, int]] = {cid: {} for cid in wanted_sets}
    for batch in chunks(wanted_sets):
        for tag_id, customer_id, tag in session.execute(
                select(CustomerTag.id, CustomerTag.customer_id, CustomerTag.tag)
                .where(CustomerTag.shop_id == shop_id, CustomerTag.customer_id.in_(batch))):
            stored[customer_id][tag] = tag_id
    remove, add, changed = [], [], set()
    for customer_id, tags in wanted_sets.items():
        have = stored[customer_id]
        gone = [tag_id for tag, tag_id in have.items() if tag not in tags]
        new = [tag for tag in sorted(tags) if tag not in have]
        if gone or new:
            changed.add(customer_id)
        remove.extend(gone)
        add.extend({"shop_id": shop_id, "customer_id": customer_id, "tag": tag} for tag in new)
    for batch in chunks(remove):
        session.execute(delete(CustomerTag).where(CustomerTag.id.in_(batch))
                        .execution_options(synchronize_session=False))
    if add:
        session.execute(insert(CustomerTag), add)
    return changed


def customer_ids_for(session, shop: Shop, shopify_ids) -> dict[int, int]:
    """Local customer ids for these Shopify ids; unknown, not-deleted customers are created as placeholders.

    An order or checkout may arrive before its customer; the placeholder carries the link until the customer's
    own data arrives (its shopify_updated_at is empty, so any customer data replaces it).
    """
    wanted = {sid for sid in shopify_ids if sid is not None}
    found: dict[int, int] = {}
    for batch in chunks(wanted):
        found.update(session.execute(select(Customer.shopify_id, Customer.id)
                                     .where(Customer.shop_id == shop.id, Customer.shopify_id.in_(batch))).all())
    missing = wanted - found.keys()
    tombstones = deletions.deleted_at(session, shop.id, "customer", missing)
    placeholders = [Customer(shop_id=shop.id, shopify_id=sid) for sid in sorted(missing) if sid not in tombstones]
    if placeholders:
        session.add_all(placeholders)
        session.flush()
        found.update((c.shopify_id, c.id) for c in placeholders)
    return found


def create_missing_customers(session, shop: Shop, shopify_ids) -> dict[int, int]:
    """customer_ids_for in a transaction of its own: placeholders for the customers we lack are committed at once.

    An order or checkout job calls it before the transaction that stores the order or checkout, which then never
    holds a new customer row while it waits for a customer's lock: a customer job inserting the same customer
    would wait for it in turn (ingest.locking). A concurrent job creating the same placeholder is retried.
    """
    return commit_with_retry(session, lambda: customer_ids_for(session, shop, shopify_ids))


def apply_consent(session, shop: Shop, customer_id: int, *, state: str | None, phone: str | None,
                  consent_updated_at: dt.datetime | None, opt_in_level: str | None, notify: bool = True) -> bool:
    """Store a customer's Shopify SMS consent when newer than what we hold, and pass it to the subscribers side.

    The customer is locked while its stored consent is compared and replaced (ingest.locking). Commits, also when
    nothing changed (that ends the lock). Returns True when it changed anything.
    """
    state = (state or "").lower() or None
    if state not in CONSENT_STATES:
        log.info("customer %s: ignoring unknown SMS consent state %r", customer_id, state)
        return False
    customer = stored_for_update(session, Customer, shop.id, Customer.id, [customer_id]).get(customer_id)
    if customer is None or not _newer_consent(customer, state, consent_updated_at):
        session.commit()
        return False
    normalised_phone = e164(phone, customer.country_code)
    if normalised_phone and normalised_phone != customer.phone:
        customer.phone = normalised_phone
    customer.sms_consent_state = state
    customer.sms_consent_updated_at = consent_updated_at
    session.flush()
    if customer.phone:
        link_by_phone(session, shop.id, [customer.phone])
    from kinnekt.subscribers.checkout import apply_sms_consent
    apply_sms_consent(session, shop, customer, state=state, phone=customer.phone,
                      updated_at=consent_updated_at, opt_in_level=opt_in_level)
    session.commit()
    if notify:
        notify_segments(shop.id, subscribers_of(session, shop.id, [customer.id]))
    return True


def _newer_consent(customer: Customer, state: str, consent_updated_at: dt.datetime | None) -> bool:
    """True when this consent may replace the one stored on the customer."""
    stored = customer.sms_consent_updated_at
    if stored is not None:
        if consent_updated_at is None or consent_updated_at < stored:
            return False  # older than what we hold, or not orderable against it
        if consent_updated_at == stored and state == customer.sms_consent_state:
            return False  # the same consent again
    elif consent_updated_at is None and state == customer.sms_consent_state:
        return False
    return True


def update_sms_consent(session, shop: Shop, customer_shopify_id: int, *, state: str | None, phone: str | None,
                       consent_updated_at: dt.datetime | None, opt_in_level: str | None = None) -> int | None:
    """Apply a customers_marketing_consent/update; returns the customer's id (a placeholder if unknown)."""
    ids = create_missing_customers(session, shop, [customer_shopify_id])
    if customer_shopify_id not in ids:
        return None  # deleted in Shopify
    apply_consent(session, shop, ids[customer_shopify_id], state=state, phone=phone,
                  consent_updated_at=consent_updated_at, opt_in_level=opt_in_level)
    return ids[customer_shopify_id]


def delete_customer(session, shop: Shop, shopify_id: int, *, deleted_at: dt.datetime | None = None) -> int | None:
    """Delete a customer (its subscribers stay, unlinked; its orders stay without it). Commits; returns its old id."""
    customer = session.scalar(select(Customer).where(Customer.shop_id == shop.id, Customer.shopify_id == shopify_id))
    deletions.record(session, shop.id, "customer", shopify_id, deleted_at)
    if customer is None:
        session.commit()
        return None
    affected = subscribers_of(session, shop.id, [customer.id])
    customer_id = customer.id
    session.execute(delete(Customer).where(Customer.id == customer_id).execution_options(synchronize_session=False))
    session.expunge(customer)
    session.commit()
    notify_segments(shop.id, affected)
    return customer_id
