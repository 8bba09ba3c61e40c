"""Webhook processing: signed deliveries through intake and the in-process queue into customers, orders, catalog."""
from __future__ import annotations

import datetime as dt
import json
import socket
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.db import utcnow
from kinnekt.models import (
    Campaign, Checkout, Collection, CollectionProduct, Customer, CustomerTag, LineItem, Order, Product,
    ProductVariant, Segment, SegmentMember, Shop, Subscriber, WebhookEvent,
)
from kinnekt.shopify.ingest.orders import fulfillment_status
from kinnekt.shopify import tokens
from tests import shopify_payloads as sp
from tests.fake_shopify import connect

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def customer_by(db, shopify_id) -> Customer | None:
    db.expire_all()
    return db.scalar(select(Customer).where(Customer.shopify_id == shopify_id))


def order_by(db, shopify_id) -> Order | None:
    db.expire_all()
    return db.scalar(select(Order).where(Order.shopify_id == shopify_id))


def tags_of(db, customer) -> list[str]:
    return sorted(db.scalars(select(CustomerTag.tag).where(CustomerTag.customer_id == customer.id)))


def add_subscriber(db, shop, phone, **fields) -> Subscriber:
    subscriber = Subscriber(shop_id=shop.id, phone=phone, status=fields.pop("status", "subscribed"),
                            source=fields.pop("source", "manual"), subscribed_at=utcnow(), **fields)
    db.add(subscriber)
    db.commit()
    return subscriber


# -- customers --

def test_customer_create_stores_the_customer(deliver, db, shop):
    cid = sp.next_id()
    event = deliver("customers/create", sp.customer(cid, email="Bob@Example.com", phone="+1 613-555-0142",
                                                    city="  Ottawa ", country_code="CA"))
    customer = customer_by(db, cid)
    assert customer.shop_id == shop.id
    assert (customer.email, customer.phone, customer.first_name, customer.last_name, customer.city,
            customer.country_code) == ("Bob@Example.com", "+16135550142", "Bob", "Norman", "Ottawa", "CA")
    assert customer.city_folded == "ottawa"  # the copy segments compare (kinnekt.casefold)
    assert customer.shopify_created_at == dt.datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    assert customer.shopify_updated_at == dt.datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    assert customer.money_spent == 0 and customer.orders_count == 0
    assert f"customer {cid} stored" == event.note


def test_older_customer_update_never_overwrites_a_newer_one(deliver, db, shop):
    cid = sp.next_id()
    new, old = T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=1)
    deliver("customers/update", sp.customer(cid, first_name="Newest", updated_at=new))
    event = deliver("customers/update", sp.customer(cid, first_name="Older", updated_at=old))
    assert customer_by(db, cid).first_name == "Newest"
    assert "unchanged" in event.note
    # The same updated_at again (another topic, a second subscription) changes nothing.
    event = deliver("customers/update", sp.customer(cid, first_name="Same time", updated_at=new))
    assert customer_by(db, cid).first_name == "Newest" and "unchanged" in event.note
    deliver("customers/update", sp.customer(cid, first_name="Later", updated_at=new + dt.timedelta(seconds=1)))
    assert customer_by(db, cid).first_name == "Later"


def test_tags_are_lower_case_replaced_on_update_and_kept_when_the_payload_has_none(deliver, db, shop):
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, tags="VIP, Wholesale ,vip", updated_at=T0))
    customer = customer_by(db, cid)
    assert tags_of(db, customer) == ["vip", "wholesale"]
    deliver("customers/update", sp.customer(cid, tags="Wholesale, Newsletter", updated_at=T0 + dt.timedelta(1)))
    assert tags_of(db, customer) == ["newsletter", "wholesale"]
    # 2025-01+ customer payloads carry no tags at all: the stored set stays.
    deliver("customers/update", sp.customer(cid, updated_at=T0 + dt.timedelta(2)))
    assert tags_of(db, customer) == ["newsletter", "wholesale"]
    deliver("customers/update", sp.customer(cid, tags="", updated_at=T0 + dt.timedelta(3)))
    assert tags_of(db, customer) == []


def test_customer_links_subscribers_by_phone_in_e164(deliver, db, shop, other_shop):
    mine = add_subscriber(db, shop, "+16135550142")
    theirs = add_subscriber(db, other_shop, "+16135550142")
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, phone="(613) 555-0142", country_code="CA"))
    db.expire_all()
    customer = customer_by(db, cid)
    assert customer.phone == "+16135550142"
    assert db.get(Subscriber, mine.id).customer_id == customer.id
    assert db.get(Subscriber, theirs.id).customer_id is None


def test_invalid_customer_phone_stays_unlinked(deliver, db, shop):
    subscriber = add_subscriber(db, shop, "+16135550142")
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, phone="555-0142-99", country_code=None, city=None))
    assert customer_by(db, cid).phone is None
    db.expire_all()
    assert db.get(Subscriber, subscriber.id).customer_id is None


def test_customer_delete_unlinks_subscribers_and_a_late_update_does_not_bring_it_back(deliver, db, shop):
    subscriber = add_subscriber(db, shop, "+16135550142")
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, updated_at=T0))
    deliver("orders/create", sp.order(customer_payload=sp.order_customer(cid, updated_at=T0)))
    order = db.scalar(select(Order))
    assert order.customer_id == customer_by(db, cid).id
    event = deliver("customers/delete", sp.customer_deleted(cid), triggered_at=T0 + dt.timedelta(hours=1))
    assert customer_by(db, cid) is None and event.note == f"customer {cid} deleted"
    db.expire_all()
    assert db.get(Subscriber, subscriber.id).customer_id is None
    assert order_by(db, order.shopify_id).customer_id is None
    # A retried update from before the deletion arrives late.
    deliver("customers/update", sp.customer(cid, updated_at=T0 + dt.timedelta(minutes=30)))
    assert customer_by(db, cid) is None


# -- orders --

def test_orders_set_customer_facts_exactly(deliver, db, shop):
    cid = sp.next_id()
    buyer = sp.order_customer(cid, updated_at=T0)
    deliver("customers/create", sp.customer(cid, updated_at=T0))
    first, second = T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=9)
    # A partly refunded order: current_total_price counts, not total_price.
    deliver("orders/create", sp.order(customer_payload=buyer, total_price="100.50", current_total_price="90.25",
                                      total_discounts="4.75", created_at=first))
    deliver("orders/paid", sp.order(customer_payload=buyer, total_price="20.10", total_discounts="5.00",
                                    created_at=second, discount_codes=[{"code": "SMS5", "amount": "5.00",
                                                                        "type": "fixed_amount"}]))
    # Neither a test order nor a cancelled one counts.
    deliver("orders/create", sp.order(customer_payload=buyer, total_price="500.00", test=True,
                                      created_at=T0 + dt.timedelta(days=20)))
    deliver("orders/cancelled", sp.order(customer_payload=buyer, total_price="70.00", total_discounts="7.00",
                                         cancelled_at=T0 + dt.timedelta(days=3), created_at=T0 - dt.timedelta(1)))
    customer = customer_by(db, cid)
    assert customer.money_spent == Decimal("110.35")
    assert customer.total_discounts == Decimal("9.75")
    assert customer.orders_count == 2
    assert customer.first_order_at == first and customer.last_order_at == second
    assert db.scalar(select(func.count()).select_from(Order).where(Order.customer_id == customer.id)) == 4


def test_order_with_no_current_total_counts_total_price(deliver, db, shop):
    cid = sp.next_id()
    payload = sp.order(customer_payload=sp.order_customer(cid), total_price="42.00")
    payload["current_total_price"] = None
    deliver("orders/create", payload)
    assert customer_by(db, cid).money_spent == Decimal("42.00")


def test_order_fields_line_items_and_statuses(deliver, db, shop):
    pid, vid = sp.next_id(), sp.next_id()
    oid = sp.next_id()
    items = [sp.line_item(product_id=pid, variant_id=vid, title="Coffee", variant_title="1 kg", quantity=2,
                          price="12.50"),
             sp.line_item(product_id=None, variant_id=None, title="Custom engraving", variant_title=None)]
    deliver("orders/create", sp.order(oid, line_items=items, fulfillment_status=None, financial_status="pending",
                                      discount_codes=[{"code": "WELCOME10", "amount": "10.00", "type": "percentage"}],
                                      name="#1042", updated_at=T0))
    order = order_by(db, oid)
    assert (order.name, order.fulfillment_status, order.financial_status, order.test, order.currency) == (
        "#1042", "unfulfilled", "pending", False, "USD")
    assert order.discount_codes == [{"code": "WELCOME10", "amount": "10.00", "type": "percentage"}]
    assert order.landing_site == "/?utm_source=kinnekt&utm_campaign=7" and order.source_name == "web"
    lines = db.scalars(select(LineItem).where(LineItem.order_id == order.id).order_by(LineItem.title)).all()
    assert [(li.title, li.product_id, li.variant_id, li.variant_title, li.quantity, li.price) for li in lines] == [
        ("Coffee", pid, vid, "1 kg", 2, Decimal("12.50")), ("Custom engraving", None, None, None, 1,
                                                            Decimal("199.00"))]
    assert [(li.title_folded, li.variant_title_folded) for li in lines] == [("coffee", "1 kg"),
                                                                          ("custom engraving", None)]
    deliver("orders/partially_fulfilled", sp.order(oid, line_items=items[:1], fulfillment_status="partial",
                                                   updated_at=T0 + dt.timedelta(hours=1)))
    order = order_by(db, oid)
    assert order.fulfillment_status == "partially_fulfilled" and order.financial_status == "paid"
    assert db.scalar(select(func.count()).select_from(LineItem).where(LineItem.order_id == order.id)) == 1
    deliver("orders/fulfilled", sp.order(oid, line_items=items[:1], fulfillment_status="fulfilled",
                                         updated_at=T0 + dt.timedelta(hours=2)))
    assert order_by(db, oid).fulfillment_status == "fulfilled"


@pytest.mark.parametrize("raw, ours", [(None, "unfulfilled"), ("partial", "partially_fulfilled"),
                                       ("fulfilled", "fulfilled"), ("restocked", "unfulfilled"),
                                       ("PARTIALLY_FULFILLED", "partially_fulfilled"), ("UNFULFILLED", "unfulfilled")])
def test_fulfillment_status_words(raw, ours):
    assert fulfillment_status(raw) == ours


def test_older_order_update_is_ignored(deliver, db, shop):
    cid, oid = sp.next_id(), sp.next_id()
    buyer = sp.order_customer(cid)
    later = T0 + dt.timedelta(hours=3)
    deliver("orders/cancelled", sp.order(oid, customer_payload=buyer, total_price="80.00", cancelled_at=later,
                                         updated_at=later))
    event = deliver("orders/paid", sp.order(oid, customer_payload=buyer, total_price="80.00",
                                            updated_at=T0 + dt.timedelta(hours=1)))
    order = order_by(db, oid)
    assert order.cancelled_at == T0 + dt.timedelta(hours=3) and "unchanged" in event.note
    customer = customer_by(db, cid)
    assert customer.money_spent == 0 and customer.orders_count == 0


def test_cancelling_an_order_takes_it_out_of_the_facts(deliver, db, shop):
    cid, oid = sp.next_id(), sp.next_id()
    buyer = sp.order_customer(cid)
    deliver("orders/create", sp.order(oid, customer_payload=buyer, total_price="80.00", updated_at=T0))
    assert customer_by(db, cid).money_spent == Decimal("80.00")
    deliver("orders/cancelled", sp.order(oid, customer_payload=buyer, total_price="80.00", updated_at=T0 +
                                         dt.timedelta(hours=1), cancelled_at=T0 + dt.timedelta(hours=1)))
    customer = customer_by(db, cid)
    assert (customer.money_spent, customer.orders_count, customer.last_order_at) == (0, 0, None)


def test_order_delete_recomputes_facts_and_stays_deleted(deliver, db, shop):
    cid, keep, drop = sp.next_id(), sp.next_id(), sp.next_id()
    buyer = sp.order_customer(cid)
    deliver("orders/create", sp.order(keep, customer_payload=buyer, total_price="10.00", updated_at=T0))
    deliver("orders/create", sp.order(drop, customer_payload=buyer, total_price="15.00", updated_at=T0))
    assert customer_by(db, cid).money_spent == Decimal("25.00")
    deliver("orders/delete", sp.order_deleted(drop), triggered_at=T0 + dt.timedelta(hours=1))
    assert order_by(db, drop) is None
    assert db.scalar(select(func.count()).select_from(LineItem)) == 1
    assert customer_by(db, cid).money_spent == Decimal("10.00")
    deliver("orders/updated", sp.order(drop, customer_payload=buyer, total_price="15.00",
                                       updated_at=T0 + dt.timedelta(minutes=5)))
    assert order_by(db, drop) is None and customer_by(db, cid).money_spent == Decimal("10.00")


def test_order_arriving_before_its_customer_is_linked_when_the_customer_comes(deliver, db, shop):
    cid, oid = sp.next_id(), sp.next_id()
    payload = sp.order(oid, total_price="30.00")
    payload["customer"] = {"id": cid}  # a minimal embedded customer with no data and no updated_at
    deliver("orders/create", payload)
    placeholder = customer_by(db, cid)
    assert placeholder.email is None and placeholder.money_spent == Decimal("30.00")
    deliver("customers/create", sp.customer(cid, email="late@example.com"))
    customer = customer_by(db, cid)
    assert customer.id == placeholder.id and customer.email == "late@example.com"
    assert customer.money_spent == Decimal("30.00")


def test_order_without_customer_is_stored_unlinked(deliver, db, shop):
    oid = sp.next_id()
    deliver("orders/create", sp.order(oid, customer_payload=None))
    assert order_by(db, oid).customer_id is None
    assert db.scalar(select(func.count()).select_from(Customer)) == 0


def test_orders_put_linked_subscribers_into_segments(app, deliver, db, shop):
    from kinnekt.segments.service import create_segment
    subscriber = add_subscriber(db, shop, "+16135550142")
    segment = create_segment(db, shop, name="Spent over 100",
                             definition={"match": "all", "rules": [{"field": "money_spent", "op": "gt",
                                                                    "value": 100}]})
    app.extensions["kinnekt_queue"].drain()
    cid = sp.next_id()
    buyer = sp.order_customer(cid, phone="+16135550142")
    deliver("orders/create", sp.order(customer_payload=buyer, total_price="60.00"))
    db.expire_all()
    assert db.get(Subscriber, subscriber.id).customer_id == customer_by(db, cid).id
    assert db.scalar(select(func.count()).select_from(SegmentMember)) == 0
    deliver("orders/create", sp.order(customer_payload=buyer, total_price="60.00"))
    members = db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == segment.id)).all()
    assert members == [subscriber.id]
    assert db.get(Segment, segment.id).member_count == 1


# -- catalog --

def test_products_create_update_delete(deliver, db, shop):
    pid = sp.next_id()
    deliver("products/create", sp.product(pid, title="Mug", handle="mug", updated_at=T0))
    db.expire_all()
    product = db.scalar(select(Product))
    assert (product.shopify_id, product.title, product.handle, product.status) == (pid, "Mug", "mug", "active")
    assert product.image_url == "https://cdn.shopify.com/s/files/1/ipod-nano.png"
    deliver("products/update", sp.product(pid, title="Big mug", status="draft", updated_at=T0 + dt.timedelta(1)))
    deliver("products/update", sp.product(pid, title="Stale", updated_at=T0))
    db.expire_all()
    product = db.scalar(select(Product))
    assert (product.title, product.status) == ("Big mug", "draft")
    cid = sp.next_id()
    deliver("collections/create", sp.collection(cid, product_ids=[pid]))
    deliver("products/delete", sp.deleted(pid))
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Product)) == 0
    assert db.scalar(select(func.count()).select_from(CollectionProduct)) == 0


def variants_of(db) -> list[tuple]:
    db.expire_all()
    return [(v.shopify_id, v.title, v.sku, v.price, v.position)
            for v in db.scalars(select(ProductVariant).order_by(ProductVariant.position, ProductVariant.shopify_id))]


def with_variants(payload: dict, *variants: tuple) -> dict:
    """The payload with these (id, title, sku, price) variants, in order."""
    payload["variants"] = [{"id": vid, "product_id": payload["id"], "title": title, "sku": sku, "price": price,
                            "position": n} for n, (vid, title, sku, price) in enumerate(variants, start=1)]
    return payload


def test_products_webhooks_add_change_and_remove_variants(deliver, db, shop):
    pid, small, medium, large = (sp.next_id() for _ in range(4))
    deliver("products/create", with_variants(sp.product(pid, title="Tee", updated_at=T0),
                                             (small, "S", "TEE-S", "20.00"), (medium, "M", "TEE-M", "20.00")))
    assert variants_of(db) == [(small, "S", "TEE-S", Decimal("20.00"), 1), (medium, "M", "TEE-M", Decimal("20.00"), 2)]
    product = db.scalar(select(Product))
    assert {v.product_id for v in db.scalars(select(ProductVariant))} == {product.id}
    # M is renamed and repriced, S is gone, L is new.
    deliver("products/update", with_variants(sp.product(pid, title="Tee", updated_at=T0 + dt.timedelta(1)),
                                             (medium, "Medium", "TEE-MED", "22.50"), (large, "L", None, "24")))
    assert variants_of(db) == [(medium, "Medium", "TEE-MED", Decimal("22.50"), 1), (large, "L", None, Decimal("24"), 2)]
    # An older delivery changes nothing; a payload without a variants list leaves them alone.
    deliver("products/update", with_variants(sp.product(pid, title="Tee", updated_at=T0),
                                             (small, "S", "TEE-S", "20.00")))
    without = sp.product(pid, title="Tee v2", updated_at=T0 + dt.timedelta(2))
    del without["variants"]
    deliver("products/update", without)
    assert [v[0] for v in variants_of(db)] == [medium, large]
    deliver("products/update", with_variants(sp.product(pid, updated_at=T0 + dt.timedelta(3))))
    assert variants_of(db) == []
    deliver("products/update", with_variants(sp.product(pid, updated_at=T0 + dt.timedelta(4)),
                                             (small, "S", "TEE-S", "20.00")))
    deliver("products/delete", sp.deleted(pid))
    assert variants_of(db) == [] and db.scalar(select(func.count()).select_from(Product)) == 0


def test_bad_variant_values_do_not_fail_the_job(deliver, db, shop):
    pid, good, huge, negative, odd = (sp.next_id() for _ in range(5))
    payload = with_variants(sp.product(pid, title="Odd", updated_at=T0),
                            (good, "Fine", "OK-1", "9.99"), ("²", "No id", "X", "1"), ("abc", "No id", "X", "1"),
                            (2**64, "Too big an id", "X", "1"), (huge, "Huge", "H", "1e30"),
                            (negative, "Negative", "N", "-5"), (odd, "Odd", "O", "NaN"))
    payload["variants"][0]["position"] = 2**40  # no INTEGER holds it: the payload order is used
    payload["variants"].append("not an object")
    event = deliver("products/create", payload)
    assert event.error is None
    assert [(v[0], v[1], v[3]) for v in variants_of(db)] == [
        (good, "Fine", Decimal("9.99")), (huge, "Huge", None), (negative, "Negative", None), (odd, "Odd", None)]
    assert db.scalar(select(ProductVariant.position).where(ProductVariant.shopify_id == good)) == 1
    payload["variants"] = "not a list"
    payload["updated_at"] = (T0 + dt.timedelta(1)).isoformat()
    assert deliver("products/update", payload).error is None
    assert len(variants_of(db)) == 4


def test_collections_keep_memberships_unless_the_payload_lists_products(deliver, db, shop):
    col, p1, p2 = sp.next_id(), sp.next_id(), sp.next_id()
    deliver("collections/create", sp.collection(col, title="Summer", product_ids=[p1, p2], updated_at=T0))

    def members():
        db.expire_all()
        return sorted(db.scalars(select(CollectionProduct.product_id).where(CollectionProduct.collection_id == col)))

    assert members() == sorted([p1, p2])
    deliver("collections/update", sp.collection(col, title="Summer sale", updated_at=T0 + dt.timedelta(1)))
    assert members() == sorted([p1, p2])
    assert db.scalar(select(Collection.title)) == "Summer sale"
    deliver("collections/update", sp.collection(col, product_ids=[p2], updated_at=T0 + dt.timedelta(2)))
    assert members() == [p2]
    deliver("collections/delete", sp.collection_deleted(col))
    assert members() == []
    assert db.scalar(select(func.count()).select_from(Collection)) == 0


def test_collection_membership_change_rechecks_buyers(app, deliver, db, shop):
    from kinnekt.segments.service import create_segment
    col, pid = sp.next_id(), sp.next_id()
    subscriber = add_subscriber(db, shop, "+16135550142")
    cid = sp.next_id()
    deliver("orders/create", sp.order(customer_payload=sp.order_customer(cid),
                                      line_items=[sp.line_item(product_id=pid)]))
    deliver("collections/create", sp.collection(col, product_ids=[], updated_at=T0))
    segment = create_segment(db, shop, name="Bought summer", definition={
        "match": "all", "rules": [{"field": "ordered_collection", "op": "eq", "value": [str(col)]}]})
    app.extensions["kinnekt_queue"].drain()
    db.expire_all()
    assert db.get(Segment, segment.id).member_count == 0
    deliver("collections/update", sp.collection(col, product_ids=[pid], updated_at=T0 + dt.timedelta(1)))
    assert db.scalars(select(SegmentMember.subscriber_id)).all() == [subscriber.id]


# -- checkouts --

def test_checkout_without_customer_rechecks_the_subscriber_with_its_phone(deliver, db, shop, segment_rechecks):
    """A checkout with no customer is a `started_checkout` event of the subscriber with its phone (the contract)."""
    sub = Subscriber(shop_id=shop.id, phone="+16135550177", status="subscribed", source="manual")
    db.add(sub)
    db.commit()
    deliver("checkouts/create", sp.checkout("nocustomer1", phone="+1 613 555 0177", created_at=T0))
    assert (shop.id, [sub.id]) in segment_rechecks


def test_checkouts_create_and_complete(deliver, db, shop):
    cid, token = sp.next_id(), "a1b2c3d4e5f6"
    started = T0 + dt.timedelta(days=4)
    deliver("checkouts/create", sp.checkout(token, customer_payload=sp.order_customer(cid), phone="+16135550199",
                                            created_at=started))
    db.expire_all()
    checkout = db.scalar(select(Checkout))
    assert (checkout.token, checkout.customer_id, checkout.phone, checkout.started_at, checkout.completed_at) == (
        token, customer_by(db, cid).id, "+16135550199", started, None)
    done = started + dt.timedelta(minutes=20)
    deliver("checkouts/update", sp.checkout(token, customer_payload=sp.order_customer(cid), created_at=started,
                                            updated_at=done, completed_at=done))
    deliver("checkouts/update", sp.checkout(token, created_at=started, updated_at=started + dt.timedelta(minutes=5)))
    db.expire_all()
    checkout = db.scalar(select(Checkout))
    assert checkout.completed_at == done and checkout.customer_id is not None


# -- app --

def test_uninstall_marks_the_shop_drops_tokens_and_stops_campaigns(deliver, db, shop, fake_shopify):
    connect(fake_shopify, shop)
    shop.installed_at = utcnow() - dt.timedelta(days=30)
    campaigns = {status: Campaign(shop_id=shop.id, name=status, body="Hi", status=status)
                 for status in ("draft", "scheduled", "in_progress", "completed")}
    db.add_all(campaigns.values())
    db.commit()
    fake_shopify.uninstall(shop.domain)
    at = utcnow().replace(microsecond=0)
    event = deliver("app/uninstalled", sp.shop_object(shop.domain), triggered_at=at)
    db.expire_all()
    shop = db.get(Shop, shop.id)
    assert shop.uninstalled_at == at and not shop.installed
    assert (shop.access_token_enc, shop.refresh_token_enc, shop.access_token_expires_at,
            shop.refresh_token_expires_at) == (None, None, None, None)
    statuses = {name: (db.get(Campaign, c.id).status, db.get(Campaign, c.id).failure_reason)
                for name, c in campaigns.items()}
    assert statuses == {"draft": ("draft", None), "scheduled": ("failed", "App uninstalled"),
                        "in_progress": ("ended", "App uninstalled"), "completed": ("completed", None)}
    assert event.note == "uninstalled; 2 campaign(s) stopped"
    assert fake_shopify.calls("graphql:KinnektAppInstalled", shop.domain)  # confirmed with Shopify first


def test_a_replayed_uninstall_of_a_shop_that_is_still_installed_changes_nothing(deliver, db, shop, fake_shopify):
    """The HMAC does not cover the headers: a genuine uninstall body of a past uninstall, replayed with a fresh
    X-Shopify-Triggered-At after the merchant installed again, must not uninstall the shop."""
    connect(fake_shopify, shop)
    shop.installed_at = utcnow() - dt.timedelta(days=30)
    running = Campaign(shop_id=shop.id, name="Spring", body="Hi", status="in_progress")
    db.add(running)
    db.commit()
    event = deliver("app/uninstalled", sp.shop_object(shop.domain), triggered_at=utcnow())
    db.expire_all()
    shop = db.get(Shop, shop.id)
    assert shop.installed and shop.access_token_enc and not shop.needs_reauth
    assert db.get(Campaign, running.id).status == "in_progress"
    assert event.note == "Shopify still answers with our token: not uninstalled, ignored"
    assert len(fake_shopify.calls("graphql:KinnektAppInstalled", shop.domain)) == 1


def test_uninstall_is_confirmed_after_a_refused_refresh_flagged_the_shop(deliver, db, shop, fake_shopify):
    connect(fake_shopify, shop, access_ttl=0)  # the next call must refresh
    shop.installed_at = utcnow() - dt.timedelta(days=30)
    db.commit()
    fake_shopify.uninstall(shop.domain)
    with pytest.raises(tokens.NotConnected):  # a background job met the revoked token before the webhook came
        tokens.access_token(shop)
    db.expire_all()
    assert db.get(Shop, shop.id).needs_reauth
    event = deliver("app/uninstalled", sp.shop_object(shop.domain))
    db.expire_all()
    assert not db.get(Shop, shop.id).installed and event.note.startswith("uninstalled")


def test_an_uninstall_shopify_cannot_confirm_is_kept_and_retried(app, client, db, shop, fake_shopify, monkeypatch):
    from kinnekt.shopify.tasks import process_webhook_event
    connect(fake_shopify, shop)
    shop.installed_at = utcnow() - dt.timedelta(days=30)
    db.commit()
    with socket.socket() as probe:  # a port nothing listens on: every call to "Shopify" fails to connect
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setitem(app.config, "SHOPIFY_BASE_URL_OVERRIDE", f"http://127.0.0.1:{closed}")
    response = sp.deliver(client, "app/uninstalled", sp.shop_object(shop.domain),
                          secret=app.config["SHOPIFY_API_SECRET"])
    assert response.status_code == 200
    app.extensions["kinnekt_queue"].drain()
    db.expire_all()
    event = db.scalar(select(WebhookEvent))
    assert event.processed_at is None and event.attempts == 1 and "ShopifyUnavailable" in event.error
    assert db.get(Shop, shop.id).installed and db.get(Shop, shop.id).access_token_enc
    # Shopify answers again (the merchant had really uninstalled): the retry uninstalls
    monkeypatch.setitem(app.config, "SHOPIFY_BASE_URL_OVERRIDE", fake_shopify.url)
    fake_shopify.uninstall(shop.domain)
    assert process_webhook_event(event.id) == "processed"
    db.expire_all()
    assert not db.get(Shop, shop.id).installed and db.get(WebhookEvent, event.id).attempts == 2


def test_late_uninstall_after_a_reinstall_is_ignored(deliver, db, shop):
    shop.access_token_enc = "enc-access"
    shop.installed_at = utcnow()
    db.commit()
    event = deliver("app/uninstalled", sp.shop_object(shop.domain), triggered_at=utcnow() - dt.timedelta(hours=2))
    db.expire_all()
    assert db.get(Shop, shop.id).installed and db.get(Shop, shop.id).access_token_enc == "enc-access"
    assert "installed again" in event.note


def test_uninstall_naming_another_shop_is_ignored(deliver, db, shop):
    event = deliver("app/uninstalled", sp.shop_object("other.myshopify.com"))
    db.expire_all()
    assert db.get(Shop, shop.id).installed and "another shop" in event.note


def test_scopes_update_stores_the_new_scopes(deliver, db, shop):
    deliver("app/scopes_update", sp.scopes_update(["write_customers", "read_orders", "read_customers"],
                                                  ["read_customers"]))
    db.expire_all()
    assert db.get(Shop, shop.id).scopes == "read_customers,read_orders,write_customers"


def test_bulk_operation_finish_of_an_unknown_operation_is_recorded(deliver, db, shop):
    import importlib.util
    event = deliver("bulk_operations/finish", sp.bulk_finish(999, status="failed", error_code="INTERNAL_SERVER_ERROR"))
    assert "gid://shopify/BulkOperation/999 failed" in event.note
    if importlib.util.find_spec("kinnekt.shopify.bulk") is None:
        assert "no bulk sync module" in event.note
    else:
        assert "not one of our syncs" in event.note


# -- robustness --

def test_payload_without_an_id_is_a_no_op_with_a_note(deliver, db, shop):
    event = deliver("customers/update", {"email": "nobody@example.com"})
    assert event.note.startswith("bad payload") and event.error is None
    assert db.scalar(select(func.count()).select_from(Customer)) == 0


def test_event_stored_before_the_shop_existed_is_linked_when_processed(app, db):
    from kinnekt.shopify.tasks import process_webhook_event
    cid = sp.next_id()
    event = WebhookEvent(webhook_id="early-1", shop_domain="late.myshopify.com", topic="customers/create",
                         payload=json.dumps(sp.customer(cid)))
    db.add(event)
    db.commit()
    shop = Shop(domain="late.myshopify.com", name="Late", installed_at=utcnow())
    db.add(shop)
    db.commit()
    assert process_webhook_event(event.id) == "processed"
    assert process_webhook_event(event.id) == "already processed"
    db.expire_all()
    event = db.get(WebhookEvent, event.id)
    assert event.shop_id == shop.id and event.attempts == 1
    assert customer_by(db, cid).shop_id == shop.id


def test_failing_handler_leaves_the_event_for_a_retry(app, db, shop, monkeypatch):
    from kinnekt.shopify.ingest import customers as ingest_customers
    from kinnekt.shopify.tasks import process_webhook_event
    event = WebhookEvent(webhook_id="boom-1", shop_id=shop.id, shop_domain=shop.domain, topic="customers/create",
                         payload=json.dumps(sp.customer(sp.next_id())))
    db.add(event)
    db.commit()

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest_customers, "link_by_phone", broken)
    with pytest.raises(RuntimeError):
        process_webhook_event(event.id)
    db.expire_all()
    stored = db.get(WebhookEvent, event.id)
    assert stored.processed_at is None and stored.attempts == 1 and "database went away" in stored.error
    assert db.scalar(select(func.count()).select_from(Customer)) == 0
    monkeypatch.undo()
    assert process_webhook_event(event.id) == "processed"
    db.expire_all()
    stored = db.get(WebhookEvent, event.id)
    assert stored.attempts == 2 and stored.error is None
    assert db.scalar(select(func.count()).select_from(Customer)) == 1


# -- SMS consent (customers_marketing_consent/update) --

def test_sms_consent_subscribes_through_checkout_collection(deliver, db, shop):
    shop.checkout_collection = True
    db.commit()
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, phone="+16135550142"))
    at = dt.datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    event = deliver("customers_marketing_consent/update",
                    sp.marketing_consent(cid, phone="+16135550142", state="subscribed", consent_updated_at=at))
    customer = customer_by(db, cid)
    assert (customer.sms_consent_state, customer.sms_consent_updated_at) == ("subscribed", at)
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.phone, subscriber.status, subscriber.source, subscriber.customer_id) == (
        "+16135550142", "subscribed", "checkout", customer.id)
    assert event.note == f"customer {cid} SMS consent subscribed"


def test_older_sms_consent_never_overrides_a_newer_one(deliver, db, shop):
    shop.checkout_collection = True
    db.commit()
    cid = sp.next_id()
    late = utcnow().replace(microsecond=0) - dt.timedelta(minutes=2)
    deliver("customers_marketing_consent/update", sp.marketing_consent(cid, state="subscribed",
                                                                       consent_updated_at=late))
    deliver("customers_marketing_consent/update", sp.marketing_consent(cid, state="unsubscribed",
                                                                       consent_updated_at=late - dt.timedelta(1)))
    customer = customer_by(db, cid)
    assert (customer.sms_consent_state, customer.sms_consent_updated_at) == ("subscribed", late)
    assert db.scalar(select(Subscriber.status)) == "subscribed"
    just_now = utcnow() + dt.timedelta(seconds=1)  # after the subscription we recorded, as a real change is
    deliver("customers_marketing_consent/update", sp.marketing_consent(cid, state="unsubscribed",
                                                                       consent_updated_at=just_now))
    assert customer_by(db, cid).sms_consent_state == "unsubscribed"
    assert db.scalar(select(Subscriber.status)) == "unsubscribed"


def test_sms_consent_without_checkout_collection_is_stored_on_the_customer_only(deliver, db, shop):
    cid = sp.next_id()
    deliver("customers_marketing_consent/update", sp.marketing_consent(cid, phone="+1 613-555-0142",
                                                                       state="subscribed"))
    customer = customer_by(db, cid)
    # The consent arrived before the customer: a placeholder keeps it, with the phone in E.164.
    assert (customer.sms_consent_state, customer.phone, customer.email) == ("subscribed", "+16135550142", None)
    assert db.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_sms_consent_links_an_existing_subscriber_by_phone(deliver, db, shop):
    subscriber = add_subscriber(db, shop, "+16135550142", source="keyword")
    cid = sp.next_id()
    deliver("customers_marketing_consent/update", sp.marketing_consent(cid, phone="+16135550142",
                                                                       state="not_subscribed"))
    db.expire_all()
    stored = db.get(Subscriber, subscriber.id)
    # A keyword subscriber keeps the consent given to us; it is now linked to the customer.
    assert stored.customer_id == customer_by(db, cid).id and stored.status == "subscribed"


def test_concurrent_orders_of_one_customer_both_count(app, db, shop):
    """Two jobs storing orders of one customer at once: the second waits and sums with the first's order."""
    import threading
    import time

    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    from kinnekt import db as kdb
    from kinnekt.shopify.ingest import rest
    from kinnekt.shopify.ingest.orders import _upsert, recompute_customer_facts, upsert_orders
    if kdb.engine().dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time; the race needs PostgreSQL's concurrent writers")
    cid = sp.next_id()
    deliver_shop = db.get(Shop, shop.id)
    upsert_orders(db, deliver_shop, [rest.order_row(sp.order(customer_payload=sp.order_customer(cid),
                                                             total_price="1.00"))])
    make = sessionmaker(bind=kdb.engine(), expire_on_commit=False)
    first, second = make(), make()
    shop_a, shop_b = first.get(Shop, shop.id), second.get(Shop, shop.id)
    row_a = rest.order_row(sp.order(customer_payload=sp.order_customer(cid), total_price="10.00"))
    row_b = rest.order_row(sp.order(customer_payload=sp.order_customer(cid), total_price="100.00"))
    _ids, customers = _upsert(first, shop_a, [row_a])
    recompute_customer_facts(first, shop.id, customers)  # holds the customer's row lock, not committed
    errors = []

    def job_b():
        try:
            with app.app_context():
                upsert_orders(second, shop_b, [row_b])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=job_b)
    thread.start()
    deadline = time.monotonic() + 30
    while not db.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
        assert time.monotonic() < deadline, "the second job never waited for the first"
        time.sleep(0.02)
    first.commit()
    thread.join(30)
    first.close(), second.close()
    assert not errors and not thread.is_alive()
    customer = customer_by(db, cid)
    assert (customer.money_spent, customer.orders_count) == (Decimal("111.00"), 3)


# -- concurrent deliveries: the newest updated_at wins whatever the order the jobs commit in --

NEWER, OLDER = T0 + dt.timedelta(minutes=20), T0 + dt.timedelta(minutes=10)


def store_event(db, shop, topic: str, payload: dict) -> int:
    """A verified delivery as intake stores it, not processed yet; returns its id."""
    event = WebhookEvent(webhook_id=f"race-{sp.next_id()}", shop_id=shop.id, shop_domain=shop.domain, topic=topic,
                         payload=json.dumps(payload))
    db.add(event)
    db.commit()
    return event.id


def process_at_once(app, db, shop, pause_after, first: tuple[str, dict], second: tuple[str, dict]) -> None:
    """Process two deliveries in two jobs at once (tests.concurrent_jobs.Race); both must end processed."""
    from kinnekt.shopify.tasks import process_webhook_event
    from tests.concurrent_jobs import Race
    first_id, second_id = store_event(db, shop, *first), store_event(db, shop, *second)
    Race(app, pause_after).run(lambda: process_webhook_event(first_id), lambda: process_webhook_event(second_id))
    db.expire_all()
    for event_id in (first_id, second_id):
        event = db.get(WebhookEvent, event_id)
        assert event.processed_at is not None and event.error is None, event.error


def in_order(first: str, newer, older):
    """The two deliveries with the one named `first` ("newer" or "older") first."""
    return (newer, older) if first == "newer" else (older, newer)


def line_titles(db, order) -> list[str]:
    return sorted(db.scalars(select(LineItem.title).where(LineItem.order_id == order.id)))


@pytest.mark.parametrize("first", ["older", "newer"])
def test_concurrent_order_updates_keep_the_newest_with_its_line_items_and_facts(app, deliver, db, shop, first):
    from tests.concurrent_jobs import reads
    cid, oid = sp.next_id(), sp.next_id()
    buyer = sp.order_customer(cid, updated_at=T0)
    deliver("orders/create", sp.order(oid, customer_payload=buyer, total_price="10.00", updated_at=T0,
                                      line_items=[sp.line_item(title="Original")]))
    newer = ("orders/updated", sp.order(oid, customer_payload=buyer, total_price="20.00", updated_at=NEWER,
                                        line_items=[sp.line_item(title="Newer", quantity=2)]))
    older = ("orders/updated", sp.order(oid, customer_payload=buyer, total_price="35.00", updated_at=OLDER,
                                        line_items=[sp.line_item(title="Older")]))
    process_at_once(app, db, shop, reads("orders", "shopify_id"), *in_order(first, newer, older))
    order = order_by(db, oid)
    assert (order.total_price, order.shopify_updated_at) == (Decimal("20.00"), NEWER)
    assert line_titles(db, order) == ["Newer"]
    customer = customer_by(db, cid)
    assert (customer.money_spent, customer.orders_count) == (Decimal("20.00"), 1)


@pytest.mark.parametrize("first", ["older", "newer"])
def test_concurrent_customer_updates_keep_the_newest_with_its_tags(app, deliver, db, shop, first):
    from tests.concurrent_jobs import reads
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, first_name="Original", tags="original", updated_at=T0))
    newer = ("customers/update", sp.customer(cid, first_name="Newer", tags="newer", updated_at=NEWER))
    older = ("customers/update", sp.customer(cid, first_name="Older", tags="older", updated_at=OLDER))
    process_at_once(app, db, shop, reads("customers", "shopify_id"), *in_order(first, newer, older))
    customer = customer_by(db, cid)
    assert (customer.first_name, customer.shopify_updated_at) == ("Newer", NEWER)
    assert tags_of(db, customer) == ["newer"]


def _catalog_or_checkout(kind: str, deliver):
    """(the pause point, the newer and the older delivery, a check of the stored state) for one kind of object."""
    from tests.concurrent_jobs import reads
    object_id = sp.next_id()
    if kind == "product":
        deliver("products/create", sp.product(object_id, title="Original", updated_at=T0))
        newer = ("products/update", sp.product(object_id, title="Newer", status="draft", updated_at=NEWER))
        older = ("products/update", sp.product(object_id, title="Older", updated_at=OLDER))

        def stored(db):
            product = db.scalar(select(Product).where(Product.shopify_id == object_id))
            return product.title, product.status, product.shopify_updated_at

        return reads("products", "shopify_id"), newer, older, stored, ("Newer", "draft", NEWER)
    if kind == "collection":
        kept, new_member, old_member = sp.next_id(), sp.next_id(), sp.next_id()
        deliver("collections/create", sp.collection(object_id, title="Original", product_ids=[kept], updated_at=T0))
        newer = ("collections/update", sp.collection(object_id, title="Newer", product_ids=[kept, new_member],
                                                     updated_at=NEWER))
        older = ("collections/update", sp.collection(object_id, title="Older", product_ids=[old_member],
                                                     updated_at=OLDER))

        def stored(db):
            collection = db.scalar(select(Collection).where(Collection.shopify_id == object_id))
            members = sorted(db.scalars(select(CollectionProduct.product_id)
                                        .where(CollectionProduct.collection_id == object_id)))
            return collection.title, members, collection.shopify_updated_at

        return reads("collections", "shopify_id"), newer, older, stored, ("Newer", sorted([kept, new_member]), NEWER)
    token = f"race{object_id}"
    deliver("checkouts/create", sp.checkout(token, phone="+16135550142", created_at=T0))
    newer = ("checkouts/update", sp.checkout(token, phone="+16135550199", created_at=T0, updated_at=NEWER,
                                             completed_at=NEWER))
    older = ("checkouts/update", sp.checkout(token, phone="+16135550188", created_at=T0, updated_at=OLDER))

    def stored(db):
        checkout = db.scalar(select(Checkout).where(Checkout.token == token))
        return checkout.phone, checkout.completed_at, checkout.shopify_updated_at

    return reads("checkouts", "token"), newer, older, stored, ("+16135550199", NEWER, NEWER)


@pytest.mark.parametrize("first", ["older", "newer"])
@pytest.mark.parametrize("kind", ["product", "collection", "checkout"])
def test_concurrent_catalog_and_checkout_updates_keep_the_newest(app, deliver, db, shop, kind, first):
    pause_after, newer, older, stored, expected = _catalog_or_checkout(kind, deliver)
    process_at_once(app, db, shop, pause_after, *in_order(first, newer, older))
    db.expire_all()
    assert stored(db) == expected


@pytest.mark.parametrize("first", ["older", "newer"])
@pytest.mark.parametrize("kind", ["order", "customer"])
def test_concurrent_first_deliveries_of_a_new_object_keep_the_newest(app, db, shop, kind, first):
    from tests.concurrent_jobs import reads
    object_id = sp.next_id()
    if kind == "order":
        buyer = sp.order_customer(sp.next_id(), updated_at=T0)
        newer = ("orders/create", sp.order(object_id, customer_payload=buyer, total_price="20.00",
                                           updated_at=NEWER, line_items=[sp.line_item(title="Newer")]))
        older = ("orders/create", sp.order(object_id, customer_payload=buyer, total_price="35.00",
                                           updated_at=OLDER, line_items=[sp.line_item(title="Older")]))
        process_at_once(app, db, shop, reads("orders", "shopify_id"), *in_order(first, newer, older))
        order = order_by(db, object_id)
        assert (order.total_price, order.shopify_updated_at, line_titles(db, order)) == (
            Decimal("20.00"), NEWER, ["Newer"])
        assert customer_by(db, buyer["id"]).money_spent == Decimal("20.00")
    else:
        newer = ("customers/create", sp.customer(object_id, first_name="Newer", tags="newer", updated_at=NEWER))
        older = ("customers/create", sp.customer(object_id, first_name="Older", tags="older", updated_at=OLDER))
        process_at_once(app, db, shop, reads("customers", "shopify_id"), *in_order(first, newer, older))
        customer = customer_by(db, object_id)
        assert (customer.first_name, customer.shopify_updated_at, tags_of(db, customer)) == (
            "Newer", NEWER, ["newer"])
    assert db.scalar(select(func.count()).select_from(Order if kind == "order" else Customer)) == 1


@pytest.mark.parametrize("first", ["older", "newer"])
def test_concurrent_sms_consent_changes_keep_the_newest(app, deliver, db, shop, first):
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, updated_at=T0))
    newer = ("customers_marketing_consent/update",
             sp.marketing_consent(cid, state="unsubscribed", consent_updated_at=NEWER))
    older = ("customers_marketing_consent/update",
             sp.marketing_consent(cid, state="subscribed", consent_updated_at=OLDER))

    def reads_consent(statement: str) -> bool:  # the read of the customer whose consent is compared
        return statement.lstrip().startswith("SELECT") and "FROM customers" in statement \
            and "customers.sms_consent_updated_at" in statement

    process_at_once(app, db, shop, reads_consent, *in_order(first, newer, older))
    customer = customer_by(db, cid)
    assert (customer.sms_consent_state, customer.sms_consent_updated_at) == ("unsubscribed", NEWER)


def test_two_new_orders_of_one_customer_at_once_both_count_without_a_deadlock(app, deliver, db, shop):
    """Both jobs have written their order (which holds a key-share lock on the customer) before either
    recomputes the customer's facts: the recompute's lock must not wait for the other's key-share lock."""
    from tests.concurrent_jobs import runs
    cid = sp.next_id()
    buyer = sp.order_customer(cid, updated_at=T0)
    deliver("customers/create", sp.customer(cid, updated_at=T0))
    one = ("orders/create", sp.order(customer_payload=buyer, total_price="20.00"))
    two = ("orders/create", sp.order(customer_payload=buyer, total_price="35.00"))
    process_at_once(app, db, shop, runs("INSERT INTO line_items"), one, two)
    customer = customer_by(db, cid)
    assert (customer.money_spent, customer.orders_count) == (Decimal("55.00"), 2)


def test_an_order_batch_and_a_customer_batch_naming_the_same_new_customer_at_once_both_finish(app, db, shop):
    """The bulk sync stores customers and orders at once. An order batch creates a placeholder for a customer it
    names and does not have yet, while a customer batch (holding the lock of a customer the order batch also
    names) inserts that same customer: neither may end up waiting for the other."""
    from kinnekt import db as kdb
    from kinnekt.shopify.ingest import rest
    from kinnekt.shopify.ingest.customers import upsert_customers
    from kinnekt.shopify.ingest.orders import upsert_orders
    from tests.concurrent_jobs import Race, runs
    known, new = sp.next_id(), sp.next_id()
    upsert_customers(db, shop, [rest.customer_row(sp.customer(known, first_name="Known", updated_at=T0))])
    orders = [rest.order_row(sp.order(customer_payload={"id": cid}, total_price="20.00")) for cid in (known, new)]
    customers = [rest.customer_row(sp.customer(known, first_name="Known again", updated_at=NEWER)),
                 rest.customer_row(sp.customer(new, first_name="New", updated_at=NEWER))]

    def store(upsert, rows):
        return lambda: upsert(kdb.Session, kdb.Session.get(Shop, shop.id), rows)

    Race(app, runs("INSERT INTO customers")).run(store(upsert_orders, orders), store(upsert_customers, customers))
    for cid, name in ((known, "Known again"), (new, "New")):
        customer = customer_by(db, cid)
        assert (customer.first_name, customer.money_spent, customer.orders_count) == (name, Decimal("20.00"), 1)


def test_ids_that_are_not_ascii_digits_or_overflow_a_bigint_do_not_crash_processing(app, db, shop):
    # "²".isdigit() is true and int("²") raises: such an id made the job fail in the worker.
    from kinnekt.models import Order
    from kinnekt.shopify.tasks import process_webhook_event
    for hostile in ("²", "gid://shopify/Customer/²", 2**64):
        bad_customer = sp.customer(sp.next_id())
        bad_customer["id"] = hostile
        bad_order = sp.order(sp.next_id(), customer_payload=sp.customer(sp.next_id()))
        bad_order["id"] = hostile
        for topic, payload in (("customers/create", bad_customer), ("orders/create", bad_order)):
            event_id = store_event(db, shop, topic, payload)
            process_webhook_event(event_id)  # no exception: the event ends processed (its error says why)
            db.expire_all()
            assert db.get(WebhookEvent, event_id).processed_at is not None
    assert db.scalar(select(func.count()).select_from(Order)) == 0
