"""Storefront events are kept for the shop's retention (daily job, bounded batches), and erased with the person on
customers/redact and with the shop on shop/redact."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Shop, Subscriber
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from kinnekt.schedule import periodic_jobs
from kinnekt.storefront import retention
from kinnekt.storefront.tasks import prune_storefront_events
from tests import factories
from tests import shopify_payloads as sp
from tests.conftest import make_shop


def add_events(db, shop, *, days_ago: float, count: int = 1, client_id="c-1", subscriber_id=None, customer_id=None):
    at = utcnow() - dt.timedelta(days=days_ago)
    for _ in range(count):
        db.add(StorefrontEvent(shop_id=shop.id, event_id=f"e-{factories.serial()}", name="page_viewed",
                               occurred_at=at, client_id=client_id, subscriber_id=subscriber_id,
                               customer_id=customer_id))
    db.commit()


def count(db, shop_id=None, model=StorefrontEvent):
    db.expire_all()
    query = select(func.count()).select_from(model)
    if shop_id is not None:
        query = query.where(model.shop_id == shop_id)
    return db.scalar(query)


def test_the_daily_job_keeps_each_shops_own_retention_in_bounded_batches(db, shop, monkeypatch):
    short = make_shop("short.myshopify.com", storefront_retention_days=7)
    monkeypatch.setattr(defaults, "STOREFRONT_PRUNE_BATCH", 3)
    add_events(db, shop, days_ago=100, count=4)
    add_events(db, shop, days_ago=30, count=2)
    add_events(db, short, days_ago=8, count=5)
    add_events(db, short, days_ago=6, count=1)
    assert prune_storefront_events() == 9
    assert count(db, shop.id) == 2 and count(db, short.id) == 1
    assert prune_storefront_events() == 0


def test_the_retention_job_is_scheduled_daily():
    (periodic,) = [p for p in periodic_jobs() if p.name == "prune_storefront_events"]
    assert periodic.interval == 86400


def test_retention_is_a_whole_number_of_days_from_1_to_730(db, shop):
    for bad in ("0", "731", "-1", "1.5", "", "abc", "²", "9" * 40):
        try:
            retention.set_retention(db, shop, bad)
        except retention.RetentionError as exc:
            assert "from 1 to 730" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    db.expire_all()
    assert db.get(Shop, shop.id).storefront_retention_days == 90
    assert retention.set_retention(db, shop, " 30 ") == 30
    db.expire_all()
    assert db.get(Shop, shop.id).storefront_retention_days == 30


def test_customer_redact_erases_the_persons_events_and_browsers(deliver, db, shop, other_shop):
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, email="bob@example.com", phone="+16135550142"))
    from kinnekt.models import Customer
    customer = db.scalar(select(Customer).where(Customer.shopify_id == cid))
    subscriber = factories.subscriber(db, shop, customer=customer, phone="+16135550142")
    db.add(StorefrontBrowser(shop_id=shop.id, client_id="bob-phone", subscriber_id=subscriber.id, source="customer"))
    db.commit()
    add_events(db, shop, days_ago=1, count=3, client_id="bob-phone", subscriber_id=subscriber.id)
    add_events(db, shop, days_ago=1, count=2, client_id="bob-laptop", customer_id=cid)  # signed in, not tied yet
    add_events(db, shop, days_ago=1, count=1, client_id="bob-laptop")  # the same browser before signing in
    add_events(db, shop, days_ago=1, count=4, client_id="someone-else")
    add_events(db, other_shop, days_ago=1, count=2, client_id="bob-phone")
    event = deliver("customers/redact", sp.customers_redact(cid, phone="+16135550142"))
    assert "storefront_events=6" in event.note
    assert count(db, shop.id) == 4 and count(db, other_shop.id) == 2
    assert count(db, model=StorefrontBrowser) == 0
    assert db.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.shop_id == shop.id)) == 0


def test_shop_redact_erases_the_shops_events_and_browsers(deliver, db, shop, other_shop):
    subscriber = factories.subscriber(db, shop)
    db.add(StorefrontBrowser(shop_id=shop.id, client_id="b", subscriber_id=subscriber.id, source="link"))
    db.commit()
    add_events(db, shop, days_ago=1, count=3, subscriber_id=subscriber.id)
    add_events(db, other_shop, days_ago=1, count=2)
    shop.uninstalled_at = utcnow() - dt.timedelta(days=3)
    db.commit()
    deliver("shop/redact", sp.shop_redact())
    assert count(db, model=StorefrontBrowser) == 0
    assert count(db) == 2
