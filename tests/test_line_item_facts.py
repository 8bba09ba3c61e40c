"""Line items repeat their order's customer and whether it counts; every path that writes orders keeps them equal."""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from sqlalchemy import select

from bench import segment_data
from kinnekt import demo
from kinnekt.db import Base, make_engine
from kinnekt.models import Customer, LineItem, Order
from kinnekt.segments.compiler import PROBE, SET, members
from kinnekt.shopify.ingest.customers import delete_customer
from kinnekt.shopify.ingest.orders import delete_order, upsert_orders
from kinnekt.shopify.ingest.rows import LineItemRow, OrderRow
from tests.factories import rule, where
from tests.test_segment_compiler import NOW, buyer

pytestmark = pytest.mark.usefixtures("finished_jobs")

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
_serial = itertools.count(70_000)


def linked(db, shop, shopify_id: int):
    """(a subscribed subscriber, its customer) with the customer's Shopify id."""
    person, row = buyer(db, shop)
    row.shopify_id = shopify_id
    db.commit()
    return person, row


def out_of_step(session, *where) -> list:
    """Line items whose customer_id / counted differ from their order's (the order's counted = not test, not
    cancelled)."""
    rows = session.execute(
        select(LineItem.id, LineItem.customer_id, LineItem.counted, Order.customer_id, Order.test, Order.cancelled_at)
        .join(Order, Order.id == LineItem.order_id).where(*where).execution_options(all_shops=True)).all()
    return [r for r in rows if (r[1], r[2]) != (r[3], not r[4] and r[5] is None)]


def facts(session, order_id: int) -> set[tuple]:
    """The (customer_id, counted) pairs of an order's line items."""
    return set(session.execute(select(LineItem.customer_id, LineItem.counted).where(LineItem.order_id == order_id)))


def version(row: OrderRow, hours: int, **changes) -> OrderRow:
    """The same order as Shopify sends it `hours` later, with `changes`."""
    return OrderRow(**{**row.__dict__, "updated_at": T0 + hours * HOUR, **changes})


def bought(session, shop, product: int) -> dict[str, list[int]]:
    """Members of "ordered product X" in both of the compiler's shapes."""
    definition = where(rule("ordered_product", "eq", [str(product)]))
    return {shape: members(session, definition, shop=shop, now=NOW, shape=shape) for shape in (SET, PROBE)}


def test_ingest_keeps_line_items_in_step_through_cancel_uncancel_test_and_moves(db, shop):
    ann, ann_customer = linked(db, shop, 9001)
    bob, bob_customer = linked(db, shop, 9002)
    db.commit()
    row = OrderRow(shopify_id=next(_serial), customer_shopify_id=9001, created_at=T0, updated_at=T0,
                   total_price=Decimal("30"),
                   line_items=[LineItemRow(shopify_id=1, product_id=77, price=Decimal("10")),
                               LineItemRow(shopify_id=2, product_id=78, price=Decimal("20"))])
    [order_id] = upsert_orders(db, shop, [row])
    assert facts(db, order_id) == {(ann_customer.id, True)}
    assert bought(db, shop, 77) == {SET: [ann.id], PROBE: [ann.id]}

    upsert_orders(db, shop, [version(row, 1, cancelled_at=T0 + HOUR)])  # cancelled
    assert facts(db, order_id) == {(ann_customer.id, False)}
    assert bought(db, shop, 77) == {SET: [], PROBE: []}

    upsert_orders(db, shop, [version(row, 2)])  # re-opened: cancelled_at back to null
    assert facts(db, order_id) == {(ann_customer.id, True)}
    assert bought(db, shop, 77) == {SET: [ann.id], PROBE: [ann.id]}

    upsert_orders(db, shop, [version(row, 3, test=True)])
    assert facts(db, order_id) == {(ann_customer.id, False)}
    upsert_orders(db, shop, [version(row, 4, customer_shopify_id=9002)])  # moved to another customer
    assert facts(db, order_id) == {(bob_customer.id, True)}
    assert bought(db, shop, 77) == {SET: [bob.id], PROBE: [bob.id]}

    upsert_orders(db, shop, [version(row, 5, customer_shopify_id=None)])  # the customer removed from the order
    assert facts(db, order_id) == {(None, True)}
    assert bought(db, shop, 77) == {SET: [], PROBE: []}

    upsert_orders(db, shop, [version(row, 3, customer_shopify_id=9001)])  # older than stored: changes nothing
    assert facts(db, order_id) == {(None, True)}
    assert out_of_step(db) == []


def test_new_customer_placeholder_and_deleted_order(db, shop):
    row = OrderRow(shopify_id=next(_serial), customer_shopify_id=9100, created_at=T0, updated_at=T0,
                   line_items=[LineItemRow(shopify_id=1, product_id=5)])
    [order_id] = upsert_orders(db, shop, [row])  # the customer is not known yet: a placeholder is made
    placeholder = db.scalar(select(Customer.id).where(Customer.shopify_id == 9100))
    assert facts(db, order_id) == {(placeholder, True)}
    delete_order(db, shop, row.shopify_id)
    assert facts(db, order_id) == set()
    assert db.scalar(select(LineItem.id).where(LineItem.order_id == order_id)) is None


def test_deleted_customer_leaves_its_line_items_without_a_customer(db, shop):
    ann, ann_customer = linked(db, shop, 9201)
    db.commit()
    row = OrderRow(shopify_id=next(_serial), customer_shopify_id=9201, created_at=T0, updated_at=T0,
                   line_items=[LineItemRow(shopify_id=1, product_id=66)])
    [order_id] = upsert_orders(db, shop, [row])
    assert bought(db, shop, 66) == {SET: [ann.id], PROBE: [ann.id]}
    delete_customer(db, shop, 9201)
    assert db.get(Order, order_id).customer_id is None
    assert facts(db, order_id) == {(None, True)}
    assert bought(db, shop, 66) == {SET: [], PROBE: []}
    assert out_of_step(db) == []


def test_orm_writes_fill_and_follow_the_order(db, shop):
    """Orders and line items made or changed through the ORM (tests, scripts) stay in step as well."""
    _ann, ann_customer = buyer(db, shop)
    _bob, bob_customer = buyer(db, shop)
    order = Order(shop_id=shop.id, shopify_id=next(_serial), customer_id=ann_customer.id, created_at=T0, test=True)
    db.add(order)
    db.flush()
    db.add_all([LineItem(shop_id=shop.id, order_id=order.id, shopify_id=1, product_id=3),
                LineItem(shop_id=shop.id, order_id=order.id, shopify_id=2, product_id=4, customer_id=bob_customer.id,
                         counted=True)])  # given values that disagree with the order are corrected
    db.flush()
    assert facts(db, order.id) == {(ann_customer.id, False)}
    order.test = False
    db.flush()
    assert facts(db, order.id) == {(ann_customer.id, True)}
    order.cancelled_at = T0 + HOUR
    db.flush()
    assert facts(db, order.id) == {(ann_customer.id, False)}
    order.cancelled_at = None
    order.customer_id = bob_customer.id
    db.commit()
    assert facts(db, order.id) == {(bob_customer.id, True)}
    order.name = "#1001"  # a change of another column leaves them alone
    db.commit()
    assert facts(db, order.id) == {(bob_customer.id, True)}
    db.delete(db.get(Customer, bob_customer.id))
    db.commit()
    assert facts(db, order.id) == {(None, True)}
    assert out_of_step(db) == []


def test_demo_seeder_writes_them(db):
    shop = demo.seed(db, now=NOW, customers=60)
    checked = db.scalars(select(LineItem.counted).where(LineItem.shop_id == shop.id)).all()
    assert checked and False in checked and True in checked  # the demo has test or cancelled orders
    assert out_of_step(db, LineItem.shop_id == shop.id) == []


def test_bench_data_writes_them(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bench.sqlite3'}")
    Base.metadata.create_all(engine)
    segment_data.generate(engine, 400, seed=3)
    from sqlalchemy.orm import Session as PlainSession
    with PlainSession(engine) as session:
        assert session.scalar(select(LineItem.id).where(LineItem.counted.is_(False)).limit(1)) is not None
        assert out_of_step(session) == []
    engine.dispose()
