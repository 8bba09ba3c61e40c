"""Remembering deletions: a stored object removed by a delete webhook stays removed against older updates."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from kinnekt.db import insert_ignoring_duplicates, utcnow
from kinnekt.models import ShopifyDeletion


def record(session, shop_id: int, resource: str, shopify_id: int, deleted_at: dt.datetime | None = None) -> None:
    """Remember that Shopify deleted this object (a repeated delete keeps the first record)."""
    values = {"shop_id": shop_id, "resource": resource, "shopify_id": shopify_id, "deleted_at": deleted_at or utcnow()}
    session.execute(insert_ignoring_duplicates(session, ShopifyDeletion, values))


def deleted_at(session, shop_id: int, resource: str, shopify_ids) -> dict[int, dt.datetime]:
    """When each of these objects was deleted, for those that were."""
    ids = list(set(shopify_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(ShopifyDeletion.shopify_id, ShopifyDeletion.deleted_at)
        .where(ShopifyDeletion.shop_id == shop_id, ShopifyDeletion.resource == resource,
               ShopifyDeletion.shopify_id.in_(ids))
    ).all()
    return {sid: when for sid, when in rows}


def stays_deleted(tombstones: dict[int, dt.datetime], shopify_id: int, updated_at: dt.datetime | None) -> bool:
    """True when an upsert of this object must be ignored: it was deleted at or after the data's updated_at."""
    when = tombstones.get(shopify_id)
    if when is None:
        return False
    return updated_at is None or updated_at <= when
