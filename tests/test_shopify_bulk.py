"""Bulk sync against the fake Shopify: start, follow (webhook or polling), stream JSONL, upsert in batches,
progress in Settings; a few thousand records imported with memory kept flat."""
from __future__ import annotations

import datetime as dt
import json
import os
import tracemalloc
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import Collection, CollectionProduct, Customer, CustomerTag, LineItem, Order, Product, Shop
from kinnekt.models import ProductVariant
from kinnekt.models import SyncOperation
from kinnekt.shopify import bulk
from tests.fake_shopify import connect

UTC = dt.timezone.utc


def _seed_small(fake, domain):
    store = fake.shop(domain)
    shirt = store.add_product("Linen Shirt", product_id=11,
                              variants=[(111, "S", "LIN-S", "49.50"), (112, "M", "LIN-M", "52.00")])
    store.add_product("Wool Socks", product_id=12, status="DRAFT")
    store.add_collection("Summer", [11], collection_id=21)
    store.add_collection("Everything", [11, 12], collection_id=22)
    store.add_customer(first_name="Ada", last_name="Lovelace", email="ada@example.com", phone="+14155550101",
                       tags=["VIP", "Newsletter"], city="Boston", country="US", sms_state="SUBSCRIBED",
                       sms_updated=dt.datetime(2026, 1, 5, tzinfo=UTC), customer_id=31)
    store.add_customer(first_name="Bob", email="bob@example.com", customer_id=32, country="DE", city="Berlin")
    store.add_order(31, [(11, "Linen Shirt", 2, "49.50"), (12, "Wool Socks", 1, "12.00")], order_id=41,
                    name="#1001", discount_codes=["WELCOME10"])
    store.add_order(32, [(12, "Wool Socks", 3, "12.00")], order_id=42, name="#1002", fulfillment="FULFILLED")
    return shirt


def _run_to_completion(app, shop, fake, *, via="webhook"):
    """Start a sync and follow it to the end, as the bulk_operations/finish webhook (or polling) would."""
    queue = app.extensions["kinnekt_queue"]
    assert bulk.request_sync(shop)
    assert queue.drain(30)
    fake.finish_bulk(shop.domain)
    if via == "webhook":
        for gid in fake.bulk_ids(shop.domain).values():
            assert bulk.on_bulk_finished(shop, gid, "completed")
    else:
        from kinnekt.shopify.tasks import poll_bulk
        poll_bulk(shop.id)
    assert queue.drain(60)
    Session.remove()
    return Session.get(Shop, shop.id)


@pytest.mark.parametrize("layout", ["scattered", "grouped"])
def test_full_sync_imports_everything(app, db, shop, fake_shopify, layout):
    fake_shopify.bulk_layout = layout
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    synced = _run_to_completion(app, shop, fake_shopify)

    assert synced.sync_status == "done" and synced.sync_progress == 100
    assert synced.last_synced_at is not None and synced.reconciled_at is not None
    ada = Session.scalar(select(Customer).where(Customer.shopify_id == 31))
    assert (ada.first_name, ada.email, ada.phone, ada.city, ada.country_code) == (
        "Ada", "ada@example.com", "+14155550101", "Boston", "US")
    assert ada.sms_consent_state == "subscribed"
    assert ada.sms_consent_updated_at == dt.datetime(2026, 1, 5, tzinfo=UTC)
    tags = Session.scalars(select(CustomerTag.tag).where(CustomerTag.customer_id == ada.id))
    assert set(tags) == {"vip", "newsletter"}
    order = Session.scalar(select(Order).where(Order.shopify_id == 41))
    assert order.customer_id == ada.id and order.name == "#1001" and order.total_price == Decimal("111.00")
    assert order.financial_status == "paid" and order.fulfillment_status == "unfulfilled"
    assert order.discount_codes == [{"code": "WELCOME10"}]
    lines = sorted((li.product_id, li.variant_id, li.title, li.variant_title, li.quantity, li.price)
                   for li in Session.scalars(select(LineItem).where(LineItem.order_id == order.id)))
    assert lines == [(11, 111, "Linen Shirt", "Default", 2, Decimal("49.50")),
                     (12, 121, "Wool Socks", "Default", 1, Decimal("12.00"))]
    assert Session.scalar(select(Order.fulfillment_status).where(Order.shopify_id == 42)) == "fulfilled"
    assert ada.orders_count == 1 and ada.money_spent == Decimal("111.00")
    products = {p.shopify_id: p for p in Session.scalars(select(Product))}
    assert products[11].title == "Linen Shirt" and products[11].image_url.endswith("/11.jpg")
    assert products[12].status == "draft"
    variants = [(v.product_id, v.shopify_id, v.title, v.sku, v.price, v.position)
                for v in Session.scalars(select(ProductVariant).order_by(ProductVariant.shopify_id))]
    assert variants == [(products[11].id, 111, "S", "LIN-S", Decimal("49.50"), 1),
                        (products[11].id, 112, "M", "LIN-M", Decimal("52.00"), 2)]
    assert {c.shopify_id: c.title for c in Session.scalars(select(Collection))} == {21: "Summer", 22: "Everything"}
    members = set(Session.execute(select(CollectionProduct.collection_id, CollectionProduct.product_id)).tuples())
    assert members == {(21, 11), (22, 11), (22, 12)}
    assert len(fake_shopify.calls("download")) == 4  # results fetched through the override, not from Google


def test_a_finished_sync_leaves_the_planner_statistics_of_what_it_loaded(app, db, shop, fake_shopify):
    from tests.test_db_statistics import analyzed_since, forget_statistics
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    mark = forget_statistics(db)
    assert _run_to_completion(app, shop, fake_shopify).sync_status == "done"
    assert all(analyzed_since(db, table, mark) for table in ("customers", "orders", "line_items", "products"))


def test_polling_follows_a_sync_without_the_webhook(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    synced = _run_to_completion(app, shop, fake_shopify, via="poll")
    assert synced.sync_status == "done"
    assert Session.scalar(select(func.count()).select_from(Order)) == 2
    assert fake_shopify.calls("graphql:KinnektBulkOperation")


def test_an_empty_store_syncs_to_done(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    synced = _run_to_completion(app, shop, fake_shopify)
    assert synced.sync_status == "done" and synced.sync_progress == 100
    assert fake_shopify.calls("download") == []  # Shopify gives no file when nothing matched
    assert set(Session.scalars(select(SyncOperation.status))) == {"imported"}


def test_orders_wait_for_customers(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    queue = app.extensions["kinnekt_queue"]
    bulk.request_sync(shop)
    queue.drain(30)
    fake_shopify.hold_bulk(shop.domain, "customers")
    fake_shopify.finish_bulk(shop.domain, "orders", "products", "collections")
    bulk.poll(shop)
    queue.drain(30)
    status = dict(Session.execute(select(SyncOperation.kind, SyncOperation.status)).all())
    assert status == {"products": "imported", "collections": "imported", "customers": "running",
                      "orders": "completed"}
    assert Session.scalar(select(func.count()).select_from(Order)) == 0
    Session.remove()
    shop = Session.get(Shop, shop.id)
    progress = shop.sync_progress
    assert 50 < progress < 100
    fake_shopify.finish_bulk(shop.domain, "customers")
    bulk.poll(shop)
    queue.drain(30)
    Session.remove()
    assert Session.get(Shop, shop.id).sync_status == "done"
    assert Session.scalar(select(Order.customer_id).where(Order.shopify_id == 41)) is not None


def test_too_many_running_bulk_queries_start_later(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    fake_shopify.bulk_limit = 2
    bulk.request_sync(shop)
    app.extensions["kinnekt_queue"].drain(30)
    status = dict(Session.execute(select(SyncOperation.kind, SyncOperation.status)).all())
    assert sorted(status.values()) == ["running", "running", "starting", "starting"]
    fake_shopify.bulk_limit = 5
    synced = _run_to_completion_after_start(app, shop, fake_shopify)
    assert synced.sync_status == "done"


def _run_to_completion_after_start(app, shop, fake):
    queue = app.extensions["kinnekt_queue"]
    bulk.poll(shop)  # starts the waiting ones
    queue.drain(30)
    fake.finish_bulk(shop.domain)
    bulk.poll(shop)
    queue.drain(60)
    Session.remove()
    return Session.get(Shop, shop.id)


def test_a_failed_bulk_operation_fails_the_sync_visibly(app, db, shop, fake_shopify, client, auth):
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    bulk.request_sync(shop)
    app.extensions["kinnekt_queue"].drain(30)
    fake_shopify.finish_bulk(shop.domain)
    fake_shopify.fail_bulk(shop.domain, "orders", "ACCESS_DENIED")
    bulk.poll(shop)
    app.extensions["kinnekt_queue"].drain(30)
    Session.remove()
    synced = Session.get(Shop, shop.id)
    assert synced.sync_status == "failed" and synced.last_synced_at is None
    error = Session.scalar(select(SyncOperation.error).where(SyncOperation.kind == "orders"))
    assert "access_denied" in error.lower()
    html = client.get("/settings/sync", headers=auth).get_data(as_text=True)
    assert "Failed" in html and "ACCESS_DENIED" in html and "Resync" in html


def test_an_unreadable_result_file_fails_only_that_import(app, db, shop, fake_shopify, monkeypatch):
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    real = bulk.stream_records

    def broken(url):
        yield from real(url)
        raise ValueError("line 3: not JSON")

    monkeypatch.setattr(bulk, "stream_records", broken)
    synced = _run_to_completion(app, shop, fake_shopify)
    assert synced.sync_status == "failed"
    assert Session.scalar(select(func.count()).select_from(SyncOperation)
                          .where(SyncOperation.error.like("import failed%"))) == 4


def test_a_lost_token_stops_following_the_sync(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    bulk.request_sync(shop)
    app.extensions["kinnekt_queue"].drain(30)
    fake_shopify.shop(shop.domain).revoked = True
    fake_shopify.expire_access_tokens(shop.domain)
    from kinnekt.shopify.tasks import poll_bulk
    assert poll_bulk(shop.id) == "not connected"
    Session.remove()
    synced = Session.get(Shop, shop.id)
    assert synced.sync_status == "failed" and synced.needs_reauth


def test_finish_webhook_for_an_operation_we_did_not_start(db, shop, fake_shopify):
    assert bulk.on_bulk_finished(shop, "gid://shopify/BulkOperation/999999", "completed") is False


def test_a_second_sync_is_not_started_while_one_runs(app, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    assert bulk.request_sync(shop) is True
    assert bulk.request_sync(shop) is False
    app.extensions["kinnekt_queue"].drain(30)
    assert len(fake_shopify.calls("graphql:KinnektBulkQuery")) == 4


def test_progress_is_half_shopify_half_import():
    ops = [SyncOperation(kind=k, status=s, imported_count=i, object_count=n) for k, s, i, n in [
        ("products", "imported", 10, 10), ("collections", "completed", 0, 4),
        ("customers", "importing", 50, 100), ("orders", "running", 0, 0)]]
    assert bulk.progress(ops) == int(100 * (1 + 0.5 + 0.75 + 0.1) / 4)
    assert bulk.progress([]) == 0


def test_grouped_reassembles_children_in_any_order():
    records = [{"id": "gid://shopify/Order/1"}, {"id": "gid://shopify/Order/2"},
               {"id": "gid://shopify/LineItem/21", "__parentId": "gid://shopify/Order/2"},
               {"id": "gid://shopify/LineItem/11", "__parentId": "gid://shopify/Order/1"},
               {"id": "gid://shopify/Order/3"},
               {"id": "gid://shopify/LineItem/12", "__parentId": "gid://shopify/Order/1"}]
    pairs = [(root["id"], [c["id"] for c in kids]) for root, kids in bulk.grouped(iter(records), with_children=True)]
    assert pairs == [("gid://shopify/Order/1", ["gid://shopify/LineItem/11", "gid://shopify/LineItem/12"]),
                     ("gid://shopify/Order/2", ["gid://shopify/LineItem/21"]),
                     ("gid://shopify/Order/3", [])]


# --- Settings: progress bar and Resync ---------------------------------------------------------------

def test_resync_button_queues_a_sync_and_the_card_polls_itself(app, client, auth, shop, fake_shopify):
    connect(fake_shopify, shop)
    html = client.get("/settings/", headers=auth).get_data(as_text=True)
    assert 'id="settings-sync"' in html and 'hx-post="/settings/sync"' in html
    assert 'hx-trigger="every 2s"' not in html  # nothing running: no polling
    response = client.post("/settings/sync", headers=auth)
    assert response.status_code == 200 and "Sync started" in response.headers["HX-Trigger"]
    body = response.get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in body and 'hx-get="/settings/sync"' in body and "disabled" in body
    again = client.post("/settings/sync", headers=auth)
    assert "already running" in again.headers["HX-Trigger"]
    app.extensions["kinnekt_queue"].drain(30)
    poll = client.get("/settings/sync", headers=auth)
    assert poll.status_code == 200 and "<progress" in poll.get_data(as_text=True)
    assert "Shopify is preparing the data" in poll.get_data(as_text=True)


def test_the_card_stops_polling_with_286_when_the_sync_is_over(app, client, auth, shop, fake_shopify):
    connect(fake_shopify, shop)
    _seed_small(fake_shopify, shop.domain)
    _run_to_completion(app, shop, fake_shopify)
    response = client.get("/settings/sync", headers=auth)
    assert response.status_code == 286
    html = response.get_data(as_text=True)
    assert "Up to date" in html and 'hx-trigger="every 2s"' not in html
    assert "Customers" in html and "Imported · 2 of 2" in html


def test_the_demo_store_cannot_resync(client, auth, shop, db):
    shop.is_demo = True
    Session.merge(shop)
    Session.commit()
    response = client.post("/settings/sync", headers=auth)
    assert "no Shopify connection" in response.headers["HX-Trigger"]
    assert Session.get(Shop, shop.id).sync_status == "never"


# --- A few thousand records, memory kept flat ----------------------------------------------------------

def test_a_few_thousand_records_import_with_flat_memory(app, db, shop, fake_shopify):
    store = fake_shopify.shop(shop.domain)
    for pid in range(1, 301):
        store.add_product(f"Product {pid}", product_id=pid)
    for cid in range(1, 3001):
        store.add_customer(first_name=f"Customer{cid}", email=f"c{cid}@example.com", tags=["tag-a"],
                           customer_id=cid, updated_at=dt.datetime(2026, 1, 1, tzinfo=UTC))
    for oid in range(1, 3001):
        store.add_order(oid, [(oid % 300 + 1, f"Product {oid % 300 + 1}", 1, "19.99"),
                              ((oid * 7) % 300 + 1, f"Product {(oid * 7) % 300 + 1}", 2, "5.00"),
                              ((oid * 13) % 300 + 1, f"Product {(oid * 13) % 300 + 1}", 1, "42.00")],
                        order_id=oid, name=f"#{oid}", created_at=dt.datetime(2026, 2, 1, tzinfo=UTC))
    connect(fake_shopify, shop)
    bulk.request_sync(shop)
    app.extensions["kinnekt_queue"].drain(30)
    fake_shopify.finish_bulk(shop.domain)
    for operation in Session.scalars(select(SyncOperation)).all():
        bulk.record_status(operation, fake_shopify_node(fake_shopify, shop, operation))
    operations = {op.kind: op for op in Session.scalars(select(SyncOperation))}
    for kind in ("products", "collections", "customers"):
        operations[kind].status = "importing"
        Session.commit()
        bulk.import_result(operations[kind])
    orders_file = fake_shopify.shop(shop.domain).bulk[operations["orders"].bulk_operation_id]["file"]
    file_size = os.path.getsize(orders_file)
    assert file_size > 2_500_000  # 3,000 orders and 9,000 line items

    # The first import warms one-off caches (compiled statements, the driver's type maps), which a
    # long-running worker pays once; the second import of the same file shows the per-file cost.
    operations["orders"].status = "importing"
    Session.commit()
    bulk.import_result(operations["orders"])
    operations["orders"].status = "importing"
    Session.commit()
    tracemalloc.start()
    try:
        imported = bulk.import_result(operations["orders"])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    app.extensions["kinnekt_queue"].drain(30)

    assert imported == 3000
    assert Session.scalar(select(func.count()).select_from(Order)) == 3000
    assert Session.scalar(select(func.count()).select_from(LineItem)) == 9000
    assert Session.scalar(select(func.count()).select_from(Customer)) == 3000
    # Streaming through the staging file keeps the peak to one batch of rows, whatever the file's size.
    # Loading the file whole takes its text plus every parsed object; measure that on the same file.
    tracemalloc.start()
    try:
        with open(orders_file) as source:
            whole = [json.loads(line) for line in source]
        _current, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(whole) == 12000
    del whole
    assert peak < whole_peak / 2, (peak, whole_peak)
    Session.remove()
    assert Session.get(Shop, shop.id).sync_status == "done"


def fake_shopify_node(fake, shop, operation):
    """What bulkOperation(id:) says about an operation, asked through the real client."""
    from kinnekt.shopify.graphql import client_for
    return client_for(shop).query(bulk.BULK_OPERATION, {"id": operation.bulk_operation_id})["bulkOperation"]


def test_start_up_recovery_picks_up_unfinished_shopify_work(db, fake_shopify, monkeypatch):
    from kinnekt import defaults
    from kinnekt import queue as queue_module
    from kinnekt.shopify import tasks as jobs
    from tests.conftest import make_shop
    queued = []
    monkeypatch.setattr(queue_module.get_queue(), "enqueue",
                        lambda func, *args, job_id=None, **kw: queued.append((func.__name__, args)))
    fresh = make_shop("fresh.myshopify.com", access_token_enc="x")             # install job never ran
    waiting = make_shop("waiting.myshopify.com", sync_status="queued")          # sync queued, job lost
    running = make_shop("running.myshopify.com", sync_status="running")         # sync followed by polling
    make_shop("reauth.myshopify.com", access_token_enc="x", needs_reauth=True)  # waits for the merchant
    stale = SyncOperation(shop_id=running.id, kind="orders", status="importing")
    Session.add(stale)
    Session.commit()
    Session.execute(SyncOperation.__table__.update().values(
        updated_at=dt.datetime.now(UTC) - dt.timedelta(seconds=defaults.BULK_IMPORT_STALE_SECONDS + 60)))
    Session.commit()
    assert jobs.requeue_shopify_work() == 4
    assert sorted(queued) == sorted([("install_shop", (fresh.id,)), ("start_bulk_sync", (waiting.id,)),
                                     ("poll_bulk", (running.id,)), ("import_bulk_result", (stale.id,))])
