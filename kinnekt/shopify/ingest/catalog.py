"""Storing the catalog: products and their variants, collections, and which products each collection holds."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import delete, insert, select

from kinnekt.models import Collection, CollectionProduct, LineItem, Order, Product, ProductVariant, Shop, Subscriber
from kinnekt.shopify.ingest import deletions
from kinnekt.shopify.ingest.customers import is_newer, latest_per_id
from kinnekt.shopify.ingest.linking import chunks, commit_with_retry, notify_segments
from kinnekt.shopify.ingest.locking import stored_for_update
from kinnekt.shopify.ingest.rows import CollectionRow, ProductRow, VariantRow

MAX_PRICE = Decimal(10) ** 12
"""A variant price at or above this (or below zero) is no price a shop charges: stored as unknown (None), which
also keeps it inside what the Money column holds."""


def _existing(session, model, shop_id: int, ids) -> dict:
    return stored_for_update(session, model, shop_id, model.shopify_id, ids)


def upsert_products(session, shop: Shop, rows: list[ProductRow]) -> list[int]:
    """Insert or update products (newest updated_at wins); commits and returns the ids written.

    A written product's variants become exactly those its row lists (when it lists them)."""
    rows = latest_per_id(rows)

    def work():
        ids = [row.shopify_id for row in rows]
        existing = _existing(session, Product, shop.id, ids)
        tombstones = deletions.deleted_at(session, shop.id, "product", set(ids) - existing.keys())
        written, with_variants = [], []
        for row in rows:
            product = existing.get(row.shopify_id)
            if product is None:
                if deletions.stays_deleted(tombstones, row.shopify_id, row.updated_at):
                    continue
                product = Product(shop_id=shop.id, shopify_id=row.shopify_id)
                session.add(product)
            elif not is_newer(row.updated_at, product.shopify_updated_at):
                continue
            product.title = (row.title or product.title or "")[:512]
            product.handle = row.handle
            product.status = (row.status or "active").lower()[:16]
            product.image_url = row.image_url
            product.shopify_updated_at = row.updated_at
            written.append(product)
            if row.variants is not None:
                with_variants.append((product, row.variants))
        session.flush()
        if with_variants:
            set_variants(session, shop.id, with_variants)
            session.flush()
        return [p.id for p in written]

    return commit_with_retry(session, work) if rows else []


def set_variants(session, shop_id: int, products: list[tuple[Product, list[VariantRow]]]) -> None:
    """Make each (flushed) product hold exactly the variants listed with it: add, update, delete the rest.

    A variant listed under another product than before moves to it (a variant id is unique in the shop)."""
    wanted: dict[int, tuple[Product, int, VariantRow]] = {}
    for product, variants in products:
        for order, row in enumerate(variants, start=1):
            wanted[row.shopify_id] = (product, order, row)
    product_ids = [product.id for product, _ in products]
    stored: dict[int, ProductVariant] = {}
    for product_batch in chunks(product_ids):
        for variant in session.scalars(select(ProductVariant).where(
                ProductVariant.shop_id == shop_id, ProductVariant.product_id.in_(product_batch))):
            stored[variant.shopify_id] = variant
    for id_batch in chunks(sorted(wanted.keys() - stored.keys())):
        for variant in session.scalars(select(ProductVariant).where(
                ProductVariant.shop_id == shop_id, ProductVariant.shopify_id.in_(id_batch))):
            stored[variant.shopify_id] = variant
    for shopify_id, variant in stored.items():
        if shopify_id not in wanted:
            session.delete(variant)
    for shopify_id, (product, order, row) in wanted.items():
        variant = stored.get(shopify_id)
        if variant is None:
            variant = ProductVariant(shop_id=shop_id, shopify_id=shopify_id)
            session.add(variant)
        variant.product_id = product.id
        variant.title = (row.title or "")[:512]
        variant.sku = row.sku[:255] if row.sku else None
        variant.price = row.price if row.price is not None and 0 <= row.price < MAX_PRICE else None
        variant.position = row.position if row.position is not None else order


def upsert_collections(session, shop: Shop, rows: list[CollectionRow]) -> list[int]:
    """Insert or update collections; memberships are replaced only when a row lists its products.

    Commits, and asks the segment engine to re-check subscribers whose orders hold a product that entered or left
    a collection (the `ordered_collection` rule). Returns the ids written.
    """
    rows = latest_per_id(rows)
    moved: set[int] = set()

    def work():
        moved.clear()
        ids = [row.shopify_id for row in rows]
        existing = _existing(session, Collection, shop.id, ids)
        tombstones = deletions.deleted_at(session, shop.id, "collection", set(ids) - existing.keys())
        written = []
        for row in rows:
            collection = existing.get(row.shopify_id)
            if collection is None:
                if deletions.stays_deleted(tombstones, row.shopify_id, row.updated_at):
                    continue
                collection = Collection(shop_id=shop.id, shopify_id=row.shopify_id)
                session.add(collection)
            elif not is_newer(row.updated_at, collection.shopify_updated_at):
                continue
            collection.title = (row.title or collection.title or "")[:512]
            collection.handle = row.handle
            collection.shopify_updated_at = row.updated_at
            written.append(collection)
            if row.product_ids is not None:
                moved.update(set_collection_products(session, shop.id, row.shopify_id, row.product_ids))
        session.flush()
        return [c.id for c in written]

    written = commit_with_retry(session, work) if rows else []
    notify_segments(shop.id, buyers_of(session, shop.id, moved))
    return written


def set_collection_products(session, shop_id: int, collection_shopify_id: int, product_ids) -> set[int]:
    """Make the collection hold exactly these products (Shopify ids); returns the products that entered or left."""
    wanted = set(product_ids)
    have = set(session.scalars(select(CollectionProduct.product_id).where(
        CollectionProduct.shop_id == shop_id, CollectionProduct.collection_id == collection_shopify_id)))
    gone, new = have - wanted, wanted - have
    for batch in chunks(gone):
        session.execute(delete(CollectionProduct).where(
            CollectionProduct.shop_id == shop_id, CollectionProduct.collection_id == collection_shopify_id,
            CollectionProduct.product_id.in_(batch)).execution_options(synchronize_session=False))
    rows = [{"shop_id": shop_id, "collection_id": collection_shopify_id, "product_id": pid} for pid in sorted(new)]
    for batch in chunks(rows):
        session.execute(insert(CollectionProduct), batch)
    return gone | new


def buyers_of(session, shop_id: int, product_ids) -> list[int]:
    """Subscribers linked to customers with an order holding one of these products (Shopify ids)."""
    found: set[int] = set()
    for batch in chunks(sorted(set(product_ids))):
        found.update(session.scalars(
            select(Subscriber.id).distinct()
            .join(Order, (Order.customer_id == Subscriber.customer_id) & (Order.shop_id == Subscriber.shop_id))
            .join(LineItem, LineItem.order_id == Order.id)
            .where(Subscriber.shop_id == shop_id, LineItem.shop_id == shop_id, LineItem.product_id.in_(batch))))
    return sorted(found)


def delete_product(session, shop: Shop, shopify_id: int, *, deleted_at: dt.datetime | None = None) -> int | None:
    """Delete a product and its collection memberships; commits, returns its old id."""
    product = session.scalar(select(Product).where(Product.shop_id == shop.id, Product.shopify_id == shopify_id))
    deletions.record(session, shop.id, "product", shopify_id, deleted_at)
    had_memberships = session.execute(
        delete(CollectionProduct).where(CollectionProduct.shop_id == shop.id,
                                        CollectionProduct.product_id == shopify_id)
        .execution_options(synchronize_session=False)).rowcount
    product_id = product.id if product is not None else None
    if product is not None:
        session.execute(delete(ProductVariant).where(ProductVariant.shop_id == shop.id,
                                                     ProductVariant.product_id == product.id)
                        .execution_options(synchronize_session=False))
        session.delete(product)
    session.commit()
    if had_memberships:
        notify_segments(shop.id, buyers_of(session, shop.id, [shopify_id]))
    return product_id


def delete_collection(session, shop: Shop, shopify_id: int, *, deleted_at: dt.datetime | None = None) -> int | None:
    """Delete a collection and its memberships; commits, returns its old id."""
    collection = session.scalar(select(Collection).where(Collection.shop_id == shop.id,
                                                         Collection.shopify_id == shopify_id))
    deletions.record(session, shop.id, "collection", shopify_id, deleted_at)
    members = set(session.scalars(select(CollectionProduct.product_id).where(
        CollectionProduct.shop_id == shop.id, CollectionProduct.collection_id == shopify_id)))
    session.execute(delete(CollectionProduct).where(CollectionProduct.shop_id == shop.id,
                                                    CollectionProduct.collection_id == shopify_id)
                    .execution_options(synchronize_session=False))
    collection_id = collection.id if collection is not None else None
    if collection is not None:
        session.delete(collection)
    session.commit()
    notify_segments(shop.id, buyers_of(session, shop.id, members))
    return collection_id
