"""Reading the stored rows an upsert compares with under a lock, so "newest updated_at wins" holds between jobs.

Two jobs storing the same object at once (two webhooks, or a webhook and the bulk sync or reconciliation) must
not both compare with the row as it was before either wrote: the later commit would win even when it is older.
Each upsert reads the rows it compares with through `stored_for_update`, inside the transaction that writes:

- PostgreSQL: the rows are locked FOR NO KEY UPDATE and read afresh, so a second job waits for the first to
  commit and then compares with the first one's data. A row that does not exist yet cannot be locked: two jobs
  inserting it meet at the unique constraint, and the one that loses tries again (`commit_with_retry`) and
  then finds the row. NO KEY UPDATE (not FOR UPDATE) leaves foreign key checks free: inserting an order or a
  line item takes a key-share lock on its customer, which FOR UPDATE would wait for.
- SQLite has no row locks: the transaction takes the database's write lock before it reads (BEGIN IMMEDIATE).

Lock order, the same in every job, so that no two jobs can wait for each other in a circle: first the rows of
the objects being stored (orders, checkouts, products, collections, or customers), in id order; then the
customers whose facts follow (`recompute_customer_facts`), in id order. A customer job locks customers only.
The customers an order or checkout names but we lack are inserted before, in a transaction of their own
(`create_missing_customers`), in Shopify id order, as a customer job inserts new customers.
"""
from __future__ import annotations

from sqlalchemy import select

from kinnekt.db import begin_writing
from kinnekt.shopify.ingest.linking import CHUNK, chunks


def stored_for_update(session, model, shop_id: int, column, values) -> dict:
    """The shop's stored `model` rows whose `column` is one of `values`, by that value: read afresh from the
    database (not the session's copies) and locked until the transaction ends (see the module notes)."""
    begin_writing(session)
    values = sorted(set(values))
    if not values:
        return {}
    if len(values) <= CHUNK:
        batches = [column.in_(values)]
    else:
        # Batches of values would lock in id order within each batch only: find the ids, lock batches of them.
        ids = sorted(row_id for batch in chunks(values) for row_id in session.scalars(
            select(model.id).where(model.shop_id == shop_id, column.in_(batch))))
        batches = [model.id.in_(batch) for batch in chunks(ids)]
    found = {}
    for where in batches:
        for obj in session.scalars(select(model).where(model.shop_id == shop_id, where).order_by(model.id)
                                   .with_for_update(key_share=True)
                                   .execution_options(populate_existing=True)):
            found[getattr(obj, column.key)] = obj
    return found
