"""kinnekt.shopify.ingest.locking: the rows an upsert compares with are read afresh and locked until it commits."""
from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import exc, insert, select, update
from sqlalchemy.orm import sessionmaker

from kinnekt import db as kdb
from kinnekt.models import Product
from kinnekt.shopify.ingest.linking import CHUNK
from kinnekt.shopify.ingest.locking import stored_for_update
from tests import shopify_payloads as sp


def add_products(db, shop, count: int) -> list[int]:
    ids = [sp.next_id() for _ in range(count)]
    db.execute(insert(Product), [{"shop_id": shop.id, "shopify_id": sid, "title": f"P{sid}"} for sid in ids])
    db.commit()
    return ids


def test_stored_rows_are_read_afresh_not_from_the_sessions_copies(db, shop):
    [sid] = add_products(db, shop, 1)
    mine = db.scalar(select(Product).where(Product.shopify_id == sid))
    db.commit()
    other = sessionmaker(bind=kdb.engine())()
    try:
        other.execute(update(Product).where(Product.shopify_id == sid).values(title="Changed elsewhere"))
        other.commit()
    finally:
        other.close()
    assert mine.title == f"P{sid}"  # the session's copy is stale
    found = stored_for_update(db, Product, shop.id, Product.shopify_id, [sid, sp.next_id()])
    assert found == {sid: mine} and mine.title == "Changed elsewhere"
    db.rollback()


def test_stored_rows_stay_locked_until_the_transaction_ends(db, shop):
    [sid] = add_products(db, shop, 1)
    stored_for_update(db, Product, shop.id, Product.shopify_id, [sid])
    if kdb.on_postgresql(db):
        other = sessionmaker(bind=kdb.engine())()
        lock = select(Product).where(Product.shopify_id == sid).with_for_update(key_share=True, nowait=True)
        try:
            with pytest.raises(exc.OperationalError, match="could not obtain lock"):
                other.execute(lock)
            other.rollback()
            db.commit()
            assert other.scalar(lock).shopify_id == sid
        finally:
            other.rollback()
            other.close()
    else:
        other = sqlite3.connect(kdb.engine().url.database, timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")  # the write lock
            db.commit()
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        finally:
            other.close()


def test_more_rows_than_one_batch_are_all_found(db, shop):
    ids = add_products(db, shop, CHUNK + 7)
    found = stored_for_update(db, Product, shop.id, Product.shopify_id, ids + [sp.next_id()])
    assert sorted(found) == sorted(ids)
    assert all(product.shopify_id == sid for sid, product in found.items())
    db.rollback()
