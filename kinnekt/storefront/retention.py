"""Keeping storefront events no longer than the shop's retention, and erasing a person's events on request.

`prune` deletes, shop by shop, the events older than the shop's `storefront_retention_days` (1 to 730, 90 by
default), at most defaults.STOREFRONT_PRUNE_BATCH rows per statement, committing after each, so a large
backlog never holds a long lock. Browsers are kept while they are identified: they are tied to a subscriber
and go with it. A person's events and browsers are erased by customers/redact (kinnekt/shopify/compliance.py);
shop/redact removes the shop and everything of it by cascade.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Shop
from kinnekt.models.storefront import StorefrontEvent


def prune_shop(session, shop_id: int, days: int, now: dt.datetime | None = None) -> int:
    """Delete this shop's events older than `days`, in bounded batches; returns how many."""
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    total = 0
    while True:
        ids = session.scalars(select(StorefrontEvent.id).where(
            StorefrontEvent.shop_id == shop_id, StorefrontEvent.occurred_at < cutoff)
            .order_by(StorefrontEvent.id).limit(defaults.STOREFRONT_PRUNE_BATCH)).all()
        if not ids:
            return total
        session.execute(delete(StorefrontEvent).where(StorefrontEvent.id.in_(ids))
                        .execution_options(synchronize_session=False))
        session.commit()
        total += len(ids)


def prune(session, now: dt.datetime | None = None) -> int:
    """Apply every shop's retention; returns how many events were deleted."""
    shops = session.execute(select(Shop.id, Shop.storefront_retention_days)).all()
    return sum(prune_shop(session, shop_id, days or defaults.STOREFRONT_RETENTION_DEFAULT_DAYS, now)
               for shop_id, days in shops)


class RetentionError(ValueError):
    """A retention the merchant may not choose; the message says which are allowed."""


def set_retention(session, shop: Shop, raw: str) -> int:
    """Save the shop's retention from a form value (whole days, 1 to 730); RetentionError when it is not one.
    Commits. Events already older than a shorter retention go at the next daily sweep."""
    from kinnekt.numbers import whole_number
    low, high = defaults.STOREFRONT_RETENTION_MIN_DAYS, defaults.STOREFRONT_RETENTION_MAX_DAYS
    days = whole_number((raw or "").strip(), high)
    if days is None or days < low:
        raise RetentionError(f"Enter a whole number of days from {low} to {high}.")
    shop.storefront_retention_days = days
    session.commit()
    return days
