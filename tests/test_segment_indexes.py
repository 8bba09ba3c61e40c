"""The partial covering indexes for segment rules on orders, line items and subscribers (issue 22, PostgreSQL only).

A partial index is used only when the query's own conditions imply the index's: `test IS false` is not implied
by `NOT test`, nor `counted IS true` by `counted`, nor `status = 'subscribed'` by `status = $1` in a generic
plan. These tests hold the compiler's SQL and the indexes together (each rule kind's set of customers, and the
candidate subscribers, can be read from its index alone), and check on random orders that the members are the
same whichever way PostgreSQL reads the rows.
"""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from bench.explain_segments import plan_text
from kinnekt.segments import compile_definition, count, members, membership
from kinnekt.segments.compiler import PROBE, SET_WORK_MEM
from tests import factories
from tests.factories import rule, where
from tests.test_segment_compiler import NOW, buyer, order

pytestmark = pytest.mark.usefixtures("db")

PRODUCTS = [8_000_000_001 + i for i in range(6)]

INDEXED = {
    "ix_line_items_counted_product": where(rule("ordered_product", "eq", [str(PRODUCTS[0]), str(PRODUCTS[3])])),
    "ix_line_items_counted_price": where(rule("line_items", "gt", 100, attribute="price")),
    "ix_orders_counted_created": where(rule("event", "performed", event="placed_order", within="last_90_days",
                                            at_least=2)),
    "ix_orders_financial_status": where(rule("payment_status", "eq", "unpaid")),
    "ix_orders_cancelled": where(rule("order_cancelled", "eq", "yes")),
    "ix_subscribers_segment_candidates": where(rule("ordered_product", "eq", [str(PRODUCTS[2])])),
}
"""Index -> a definition whose set of customers it serves."""

OTHERS = [
    where(where(rule("payment_status", "eq", "unpaid"), rule("order_cancelled", "eq", "yes"), match="any"),
          rule("line_items", "gt", 100, attribute="price")),  # order_trouble of bench/segments.py
    where(rule("ordered_product", "neq", [str(PRODUCTS[1])]), rule("payment_status", "neq", "paid")),
    where(rule("order_cancelled", "eq", "no"), rule("line_items", "lte", "29.99", attribute="price"), match="any"),
    where(rule("event", "not_performed", event="placed_order", within="last_30_days")),
    where(rule("event", "performed", event="placed_order", within={"last_days": 200}, at_least=3),
          rule("payment_status", "eq", "refunded"), match="any"),
]


def _postgresql(db):
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("the indexes exist on PostgreSQL only")


def _random_shop(db, shop, rng: random.Random, people: int = 40) -> None:
    """Subscribed buyers with random orders: some test, some cancelled, random statuses, prices and products."""
    for _ in range(people):
        _, person = buyer(db, shop)
        for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
            cancelled = NOW - dt.timedelta(days=rng.randint(0, 50)) if rng.random() < 0.2 else None
            order(db, shop, person, created_at=NOW - dt.timedelta(days=rng.uniform(0, 300)),
                  test=rng.random() < 0.15, cancelled_at=cancelled,
                  financial_status=rng.choice(("paid", "pending", "authorized", "refunded", "expired", None)),
                  lines=[{"product_id": rng.choice(PRODUCTS), "title": "Tee", "quantity": rng.randint(1, 3),
                          "price": Decimal(rng.choice(("12.50", "29.99", "100", "100.01", "160")))}
                         for _ in range(rng.randint(1, 3))])
    # Orders of no customer, and a customer with no subscriber: in no set, or in one no subscriber joins.
    order(db, shop, None, created_at=NOW - dt.timedelta(days=2), financial_status="pending",
          lines=[{"product_id": PRODUCTS[0], "title": "Tee", "price": Decimal("150")}])
    lone = factories.customer(db, shop, commit=False)
    order(db, shop, lone, created_at=NOW - dt.timedelta(days=2), financial_status="pending",
          lines=[{"product_id": PRODUCTS[0], "title": "Tee", "price": Decimal("150")}])


def _members_with(db, definition, shop, *, indexes: bool) -> list[int]:
    """The members with PostgreSQL made to read the rows through indexes (`indexes`) or with sequential scans."""
    settings = ("enable_seqscan = off",) if indexes else \
        ("enable_indexscan = off", "enable_indexonlyscan = off", "enable_bitmapscan = off")
    db.execute(text("SAVEPOINT scans"))
    for setting in settings:
        db.execute(text(f"SET LOCAL {setting}"))
    found = members(db, definition, shop=shop, now=NOW)
    db.execute(text("ROLLBACK TO SAVEPOINT scans"))  # the settings end with it
    return found


_OTHER_INDEXES = """SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = :table AND t.relnamespace = current_schema()::regnamespace
AND i.relname <> :index AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"""

_UNIQUE_CONSTRAINTS = """SELECT c.conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
WHERE t.relname = :table AND t.relnamespace = current_schema()::regnamespace AND c.contype = 'u'"""


@pytest.mark.parametrize("index", list(INDEXED))
def test_each_rule_kind_reads_its_index(db, shop, index):
    """With a few rows, any plan costs about the same; so the table's other indexes are dropped (inside the
    test's transaction, unique constraints' included) and scans, per-subscriber probes and bitmaps ruled out: what
    is left is whether the compiled conditions let PostgreSQL read the set of customers from this index alone (or
    nothing but a full scan of a key's index)."""
    _postgresql(db)
    _random_shop(db, shop, random.Random(3))
    table = next(name for name in ("orders", "line_items", "subscribers") if index.startswith(f"ix_{name}_"))
    for other in db.scalars(text(_OTHER_INDEXES), {"table": table, "index": index}).all():
        db.execute(text(f'DROP INDEX "{other}"'))
    # The unique constraints' indexes too (uq_subscribers_shop_id_phone): when the table holds dead rows of earlier
    # tests, an index-only scan must visit the heap, and PostgreSQL may then prefer one of them with a filter.
    for constraint in db.scalars(text(_UNIQUE_CONSTRAINTS), {"table": table}).all():
        db.execute(text(f'ALTER TABLE "{table}" DROP CONSTRAINT "{constraint}"'))
    db.execute(text(f"ANALYZE {table}"))
    for setting in ("enable_seqscan", "enable_nestloop", "enable_bitmapscan"):
        db.execute(text(f"SET LOCAL {setting} = off"))
    statement = select(func.count()).select_from(compile_definition(INDEXED[index], shop=shop, now=NOW,
                                                                    session=db).subquery())
    plan = plan_text(db, statement)
    db.rollback()  # the indexes back
    assert f"Index Only Scan using {index}" in plan, plan


def test_members_are_the_same_read_through_the_indexes_or_not(db, shop):
    _postgresql(db)
    rng = random.Random(22)
    _random_shop(db, shop, rng, people=60)
    db.execute(text("ANALYZE orders")), db.execute(text("ANALYZE line_items"))
    seen = set()
    for definition in [*INDEXED.values(), *OTHERS]:
        by_index = _members_with(db, definition, shop, indexes=True)
        assert by_index == _members_with(db, definition, shop, indexes=False)
        seen.add(len(by_index))
    assert len(seen) > 3  # the definitions pick different, non-trivial sets of the random buyers


def test_whole_shop_statements_get_the_memory_to_hash_in_and_only_for_their_transaction(db, shop):
    """A preview count and a build run with `SET_WORK_MEM` (so that grouping a big shop's orders does not spill to
    disk); the setting ends with the transaction, and a one-subscriber re-check (PROBE) leaves it as it was. On
    SQLite nothing is sent, and the counts are the same."""
    _, person = buyer(db, shop)
    order(db, shop, person, financial_status="pending")
    definition = where(rule("payment_status", "eq", "unpaid"))
    segment = factories.segment(db, shop, definition)
    postgresql = db.get_bind().dialect.name == "postgresql"
    default = db.scalar(text("SHOW work_mem")) if postgresql else None
    db.commit()

    assert count(db, definition, shop=shop, now=NOW, shape=PROBE) == 1
    if postgresql:
        assert db.scalar(text("SHOW work_mem")) == default  # a probe reads a few rows: no extra memory
    assert count(db, definition, shop=shop, now=NOW) == 1
    if postgresql:
        assert db.scalar(text("SHOW work_mem")) == SET_WORK_MEM
        db.commit()
        assert db.scalar(text("SHOW work_mem")) == default  # SET LOCAL: gone with the transaction

    assert membership.build(db, segment.id, now=NOW).member_count == 1
    db.commit()
    if postgresql:
        assert db.scalar(text("SHOW work_mem")) == default
