"""Reconciliation against the fake Shopify: a change whose webhook never arrived is fetched by `updated_at:>`."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Customer, CustomerTag, LineItem, Order, Product, ProductVariant, Shop
from kinnekt.shopify import reconcile
from kinnekt.shopify.ingest.customers import upsert_customers
from kinnekt.shopify.mapping import customer_row
from tests.conftest import make_shop
from tests.fake_shopify import connect


def _synced_shop(fake, *, minutes_ago=30):
    mark = utcnow() - dt.timedelta(minutes=minutes_ago)
    shop = make_shop("recon.myshopify.com", sync_status="done", last_synced_at=mark, reconciled_at=mark)
    connect(fake, shop)
    return shop, mark


def test_a_dropped_webhook_is_picked_up(app, db, fake_shopify):
    shop, mark = _synced_shop(fake_shopify)
    store = fake_shopify.shop(shop.domain)
    long_ago = utcnow() - dt.timedelta(hours=3)
    known = store.add_customer(first_name="Old", email="old@example.com", customer_id=1, updated_at=long_ago)
    upsert_customers(Session, shop, [customer_row(known)])  # what the sync already stored
    # Changes made after the last run, whose webhooks Shopify never delivered:
    later = mark + dt.timedelta(minutes=10)
    store.add_customer(first_name="Grace", email="grace@example.com", phone="+14155550123", tags=["VIP"],
                       customer_id=2, updated_at=later, sms_state="SUBSCRIBED", sms_updated=later)
    # A product with more variants than the first page of them holds (S-1 ... S-60).
    store.add_product("Rain Jacket", product_id=7, updated_at=later,
                      variants=[(700 + n, f"S-{n}", f"RJ-{n}", "120.00") for n in range(1, 61)])
    store.add_order(2, [(7, "Rain Jacket", 1, "120.00")], order_id=9, name="#1009", created_at=later)

    from kinnekt.shopify.tasks import reconcile as reconcile_job
    counts = reconcile_job(shop.id)

    assert counts == {"customers": 1, "orders": 1, "products": 1, "collections": 0}
    grace = Session.scalar(select(Customer).where(Customer.shopify_id == 2))
    assert grace.email == "grace@example.com" and grace.phone == "+14155550123"
    assert grace.sms_consent_state == "subscribed"
    assert list(Session.scalars(select(CustomerTag.tag).where(CustomerTag.customer_id == grace.id))) == ["vip"]
    order = Session.scalar(select(Order).where(Order.shopify_id == 9))
    assert order.customer_id == grace.id and order.total_price == Decimal("120.00")
    assert Session.scalar(select(LineItem.title).where(LineItem.order_id == order.id)) == "Rain Jacket"
    assert Session.scalar(select(Product.title).where(Product.shopify_id == 7)) == "Rain Jacket"
    variants = list(Session.scalars(select(ProductVariant).order_by(ProductVariant.position)))
    assert [v.title for v in variants] == [f"S-{n}" for n in range(1, 61)]  # all pages of them
    assert variants[-1].sku == "RJ-60" and variants[-1].price == Decimal("120.00")
    assert len(fake_shopify.calls("graphql:KinnektProductVariants")) == 1
    assert grace.orders_count == 1 and grace.money_spent == Decimal("120.00")

    searches = {c["variables"]["query"] for c in fake_shopify.calls()
                if c["kind"].startswith("graphql:KinnektReconcile")}
    since = mark - dt.timedelta(seconds=defaults.RECONCILE_OVERLAP_SECONDS)
    assert searches == {f"updated_at:>'{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'"}
    Session.remove()
    assert Session.get(Shop, shop.id).reconciled_at > mark


def test_the_next_run_starts_where_the_last_ended(app, db, fake_shopify):
    shop, _mark = _synced_shop(fake_shopify)
    reconcile.reconcile(shop, now=utcnow())
    first = Session.get(Shop, shop.id).reconciled_at
    fake_shopify.log.clear()
    reconcile.reconcile(Session.get(Shop, shop.id))
    [search] = {c["variables"]["query"] for c in fake_shopify.calls("graphql:KinnektReconcileCustomers")}
    since = first - dt.timedelta(seconds=defaults.RECONCILE_OVERLAP_SECONDS)
    assert search == f"updated_at:>'{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'"


def test_a_newer_row_from_a_webhook_is_not_overwritten(app, db, fake_shopify):
    shop, mark = _synced_shop(fake_shopify)
    store = fake_shopify.shop(shop.domain)
    at_shopify = store.add_customer(first_name="Stale", customer_id=3, updated_at=mark + dt.timedelta(minutes=1))
    newer = dict(at_shopify, firstName="Fresh",
                 updatedAt=(mark + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    upsert_customers(Session, shop, [customer_row(newer)])  # a webhook delivered a newer version already
    reconcile.reconcile(shop)
    assert Session.scalar(select(Customer.first_name).where(Customer.shopify_id == 3)) == "Fresh"


def test_orders_with_many_line_items_are_fetched_whole(app, db, fake_shopify):
    shop, mark = _synced_shop(fake_shopify)
    store = fake_shopify.shop(shop.domain)
    later = mark + dt.timedelta(minutes=2)
    store.add_customer(customer_id=4, updated_at=later)
    store.add_order(4, [(100 + n, f"Item {n}", 1, "1.00") for n in range(130)], order_id=11, created_at=later)
    reconcile.reconcile(shop)
    order_id = Session.scalar(select(Order.id).where(Order.shopify_id == 11))
    assert Session.scalar(select(func.count()).select_from(LineItem).where(LineItem.order_id == order_id)) == 130
    assert len(fake_shopify.calls("graphql:KinnektOrderLineItems")) == 1


def test_nothing_to_do_while_syncing_or_before_the_first_sync(app, db, fake_shopify):
    never = make_shop("never.myshopify.com")
    assert reconcile.reconcile(never).skipped == "the shop has never been synced"
    syncing = make_shop("busy.myshopify.com", sync_status="running", last_synced_at=utcnow())
    assert reconcile.reconcile(syncing).skipped == "a full sync is running"
    assert fake_shopify.calls() == []


def test_reconcile_all_queues_the_connected_synced_shops(app, db, fake_shopify, monkeypatch):
    due, _mark = _synced_shop(fake_shopify)
    make_shop("nosync.myshopify.com")
    make_shop("reauth.myshopify.com", sync_status="done", needs_reauth=True, access_token_enc="x")
    make_shop("demo.myshopify.com", sync_status="done", is_demo=True, access_token_enc="x")
    gone = make_shop("gone.myshopify.com", sync_status="done", access_token_enc="x")
    gone.uninstalled_at = utcnow()
    Session.commit()
    queued = []
    from kinnekt import queue as queue_module
    monkeypatch.setattr(queue_module.get_queue(), "enqueue",
                        lambda func, *args, job_id=None, **kw: queued.append((func.__name__, args, job_id)))
    from kinnekt.shopify.tasks import reconcile_all
    assert reconcile_all() == 1
    assert queued == [("reconcile", (due.id,), f"reconcile-{due.id}")]


def test_reconciliation_runs_periodically():
    from kinnekt.schedule import periodic_jobs
    from kinnekt.shopify.tasks import reconcile_all
    [entry] = [p for p in periodic_jobs() if p.func is reconcile_all]
    assert entry.interval == defaults.RECONCILE_INTERVAL_SECONDS
