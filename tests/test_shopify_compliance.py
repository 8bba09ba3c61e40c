"""Mandatory compliance topics: data request export, customer redaction, shop redaction."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from sqlalchemy import func, select

from kinnekt.db import Base, utcnow
from kinnekt.models import (
    Campaign, Checkout, Click, Customer, CustomerTag, DataRequest, InboundMessage, Link, Message, Order, Segment,
    Shop, SignupAttempt, StaticList, StaticListEntry, Subscriber, SubscriptionEvent, WebhookEvent,
)
from kinnekt.models.base import TenantMixin
from tests import shopify_payloads as sp
from tests.fake_shopify import connect

UTC = dt.timezone.utc
PHONE = "+16135550142"


def seed_person(db, deliver, shop, *, cid, email="bob@example.com", phone=PHONE):
    """A customer with tags, two orders, a checkout, a linked subscriber with history, messages, a click, a list."""
    buyer = sp.order_customer(cid, email=email, phone=phone, tags="VIP")
    deliver("customers/create", sp.customer(cid, email=email, phone=phone, tags="VIP"))
    oid1, oid2 = sp.next_id(), sp.next_id()
    deliver("orders/create", sp.order(oid1, customer_payload=buyer, total_price="40.00", email=email, phone=phone))
    deliver("orders/create", sp.order(oid2, customer_payload=buyer, total_price="60.00", email=email))
    deliver("checkouts/create", sp.checkout(customer_payload=buyer, phone=phone))
    customer = db.scalar(select(Customer).where(Customer.shopify_id == cid))
    subscriber = Subscriber(shop_id=shop.id, phone=phone, status="subscribed", source="keyword", keyword="JOIN",
                            customer_id=customer.id, first_name="Bob", consent_at=utcnow(),
                            consent_text="Reply Y to get texts", consent_ip="192.0.2.7", subscribed_at=utcnow())
    db.add(subscriber)
    db.flush()
    db.add_all([SubscriptionEvent(shop_id=shop.id, subscriber_id=subscriber.id, kind="subscribed", source="keyword",
                                  detail="texted JOIN")])
    campaign = Campaign(shop_id=shop.id, name="Spring", body="Spring sale!", status="completed")
    db.add(campaign)
    db.flush()
    message = Message(shop_id=shop.id, campaign_id=campaign.id, subscriber_id=subscriber.id, to_phone=phone,
                      body="Spring sale! kinnekt.test/r/abc", status="delivered", sent_at=utcnow(),
                      price=Decimal("0.0075"))
    db.add(message)
    db.flush()
    link = Link(shop_id=shop.id, code=f"c{subscriber.id}x{shop.id}", url="https://alpha.example/spring",
                campaign_id=campaign.id, subscriber_id=subscriber.id, message_id=message.id)
    db.add(link)
    db.flush()
    db.add_all([
        Click(shop_id=shop.id, link_id=link.id, campaign_id=campaign.id, subscriber_id=subscriber.id,
              user_agent="Mozilla/5.0 (iPhone)"),
        InboundMessage(shop_id=shop.id, provider_id=f"in-{shop.id}-{cid}", subscriber_id=subscriber.id,
                       from_phone=phone, text="JOIN", intent="keyword"),
    ])
    static = StaticList(shop_id=shop.id, name=f"VIP list {cid}", row_count=1)
    db.add(static)
    db.flush()
    db.add(StaticListEntry(shop_id=shop.id, list_id=static.id, phone=phone))
    db.add(SignupAttempt(shop_id=shop.id, ip="192.0.2.7", phone=phone))
    from kinnekt.subscribers import properties
    properties.set_values(db, subscriber, {"birthday": "1990-07-04"})
    db.commit()
    return {"customer": customer.id, "subscriber": subscriber.id, "orders": [oid1, oid2], "message": message.id,
            "campaign": campaign.id}


# -- customers/data_request --

def test_data_request_collects_what_we_hold_and_the_merchant_downloads_it(deliver, db, shop, client, auth):
    cid = sp.next_id()
    seeded = seed_person(db, deliver, shop, cid=cid)
    event = deliver("customers/data_request", sp.data_request(cid, orders=seeded["orders"], request_id=4242))
    request = db.scalar(select(DataRequest))
    assert event.note == f"data request {request.id} ready for the merchant"
    assert (request.shop_id, request.shopify_request_id, request.customer_shopify_id, request.email) == (
        shop.id, 4242, cid, "bob@example.com")
    response = client.get(f"/compliance/data-requests/{request.id}.json", headers=auth)
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    data = response.get_json()["data"]
    [customer] = data["customers"]
    assert (customer["shopify_id"], customer["email"], customer["phone"], customer["tags"], customer["money_spent"],
            customer["orders_count"]) == (cid, "bob@example.com", PHONE, ["vip"], "100.0000", 2)
    [subscriber] = data["subscribers"]
    assert subscriber["phone"] == PHONE and subscriber["consent_text"] == "Reply Y to get texts"
    assert [e["detail"] for e in subscriber["consent_history"]] == ["texted JOIN"]
    assert subscriber["profile_properties"] == {"birthday": "1990-07-04"}
    assert [m["body"] for m in data["messages"]] == ["Spring sale! kinnekt.test/r/abc"]
    assert [m["text"] for m in data["inbound_messages"]] == ["JOIN"]
    assert [c["url"] for c in data["clicks"]] == ["https://alpha.example/spring"]
    assert sorted(o["shopify_id"] for o in data["orders"]) == sorted(seeded["orders"])
    assert len(data["checkouts"]) == 1 and data["lists"] == [{"list": f"VIP list {cid}", "phone": PHONE}]
    listing = client.get("/compliance/data-requests", headers=auth).get_json()["data_requests"]
    assert [r["id"] for r in listing] == [request.id]
    assert listing[0]["download_url"] == f"/compliance/data-requests/{request.id}.json"


def test_data_request_is_stored_once_per_shopify_request(deliver, db, shop):
    cid = sp.next_id()
    deliver("customers/data_request", sp.data_request(cid, request_id=77))
    event = deliver("customers/data_request", sp.data_request(cid, request_id=77))
    assert db.scalar(select(func.count()).select_from(DataRequest)) == 1
    assert event.note == "data request already stored"


def test_data_request_for_a_stranger_holds_nothing(deliver, db, shop):
    deliver("customers/data_request", sp.data_request(sp.next_id(), email="nobody@example.com", phone=None))
    report = db.scalar(select(DataRequest)).report
    assert report["customers"] == report["subscribers"] == report["messages"] == report["orders"] == []


def test_data_request_downloads_are_scoped_to_the_shop(deliver, db, shop, other_shop, client, token_for):
    deliver("customers/data_request", sp.data_request(sp.next_id()))
    request = db.scalar(select(DataRequest))
    other = {"Authorization": f"Bearer {token_for(other_shop.domain)}", "HX-Request": "true"}
    assert client.get(f"/compliance/data-requests/{request.id}.json", headers=other).status_code == 404
    assert client.get("/compliance/data-requests", headers=other).get_json() == {"data_requests": []}
    assert client.get(f"/compliance/data-requests/{request.id}.json",
                      headers={"HX-Request": "true"}).status_code == 401


# -- customers/redact --

def _pii_left(db, shop_id) -> dict:
    db.expire_all()
    return {
        "customers": db.execute(select(Customer.email, Customer.phone, Customer.first_name, Customer.last_name,
                                       Customer.city).where(Customer.shop_id == shop_id)).all(),
        "subscribers": db.scalars(select(Subscriber.phone).where(Subscriber.shop_id == shop_id)).all(),
        "messages": db.execute(select(Message.to_phone, Message.body).where(Message.shop_id == shop_id)).all(),
        "inbound": db.scalars(select(InboundMessage.text).where(InboundMessage.shop_id == shop_id)).all(),
        "orders": db.execute(select(Order.email, Order.phone).where(Order.shop_id == shop_id)).all(),
        "checkouts": db.scalars(select(Checkout.phone).where(Checkout.shop_id == shop_id)).all(),
        "lists": db.scalars(select(StaticListEntry.phone).where(StaticListEntry.shop_id == shop_id)).all(),
        "tags": db.scalars(select(CustomerTag.tag).where(CustomerTag.shop_id == shop_id)).all(),
        "signup_attempts": db.scalars(select(SignupAttempt.phone).where(SignupAttempt.shop_id == shop_id)).all(),
    }


def test_customer_redact_erases_pii_and_keeps_aggregates(app, deliver, db, shop, other_shop):
    from kinnekt.segments.service import create_segment
    cid = sp.next_id()
    seeded = seed_person(db, deliver, shop, cid=cid)
    segment = create_segment(db, shop, name="Everyone", definition={
        "match": "all", "rules": [{"field": "subscription_source", "op": "eq", "value": "all"}]})
    app.extensions["kinnekt_queue"].drain()
    db.expire_all()
    assert db.get(Segment, segment.id).member_count == 1
    bystander = sp.next_id()
    deliver("customers/create", sp.customer(bystander, email="eve@example.com", phone="+16135550177"))
    deliver("customers/data_request", sp.data_request(cid, request_id=1))
    event = deliver("customers/redact", sp.customers_redact(cid, orders=seeded["orders"]))
    assert event.note.startswith("redacted customers=1, subscribers=1, messages=1, inbound_messages=1, orders=2")
    db.expire_all()
    customer = db.get(Customer, seeded["customer"])
    assert (customer.email, customer.phone, customer.first_name, customer.last_name, customer.city) == (
        None, None, None, None, None)
    assert customer.money_spent == Decimal("100.00") and customer.orders_count == 2
    assert db.get(Subscriber, seeded["subscriber"]) is None
    assert db.get(Segment, segment.id).member_count == 0
    assert db.scalar(select(func.count()).select_from(SubscriptionEvent)) == 0
    from kinnekt.models import SubscriberProperty
    assert db.scalar(select(func.count()).select_from(SubscriberProperty)) == 0  # the birthday went with it
    message = db.get(Message, seeded["message"])
    assert (message.to_phone, message.body, message.status, message.campaign_id) == (
        "redacted", None, "delivered", seeded["campaign"])
    assert db.scalar(select(func.count()).select_from(Click)) == 1
    assert db.scalar(select(Click.user_agent)) is None
    left = _pii_left(db, shop.id)
    flat = json.dumps({k: v for k, v in left.items() if k != "customers"}, default=str)
    assert "bob@example.com" not in flat and PHONE not in flat
    assert sorted(map(tuple, left["customers"]), key=str) == sorted(
        [(None, None, None, None, None), ("eve@example.com", "+16135550177", "Bob", "Norman", "Ottawa")], key=str)
    assert left["inbound"] == [] and left["lists"] == [] and left["tags"] == [] and left["signup_attempts"] == []
    assert db.scalar(select(func.count()).select_from(DataRequest)) == 0
    # Stored webhook payloads no longer carry the customer's email or phone; the redact event keeps only the id.
    payloads = db.scalars(select(WebhookEvent.payload)).all()
    assert not any("bob@example.com" in p or PHONE in p for p in payloads)
    assert json.loads(db.get(WebhookEvent, event.id).payload) == {"customer": {"id": cid}, "redacted": True}


def test_customer_redact_matches_by_email_and_by_phone(deliver, db, shop):
    cid = sp.next_id()
    deliver("customers/create", sp.customer(cid, email="Sam@Example.com", phone="+16135550111"))
    # A subscriber never linked to any customer, known only by phone.
    db.add(Subscriber(shop_id=shop.id, phone="+16135550122", status="subscribed", source="mobile_popup"))
    db.commit()
    deliver("customers/redact", sp.customers_redact(None, email="sam@example.com", phone=None))
    db.expire_all()
    assert db.scalar(select(Customer.email).where(Customer.shopify_id == cid)) is None
    deliver("customers/redact", sp.customers_redact(None, email=None, phone="613-555-0122"))
    assert db.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_customer_redact_leaves_other_shops_alone(deliver, db, shop, other_shop, app, client):
    cid = sp.next_id()
    seeded = seed_person(db, deliver, shop, cid=cid)
    theirs = Subscriber(shop_id=other_shop.id, phone=PHONE, status="subscribed", source="manual")
    db.add(theirs)
    db.commit()
    deliver("customers/redact", sp.customers_redact(cid, orders=seeded["orders"]))
    db.expire_all()
    assert db.get(Subscriber, theirs.id).phone == PHONE


# -- shop/redact --

def test_shop_redact_deletes_all_the_shops_data(deliver, db, shop, other_shop):
    seed_person(db, deliver, shop, cid=sp.next_id())
    deliver("customers/create", sp.customer(sp.next_id()), domain=other_shop.domain)
    db.add(Message(shop_id=shop.id, kind="reply", to_phone=PHONE, body="Reply HELP for help", status="sent"))
    shop.uninstalled_at = utcnow() - dt.timedelta(hours=48)  # Shopify asks 48 hours after the uninstall
    db.commit()
    shop_id, domain = shop.id, shop.domain
    event = deliver("shop/redact", sp.shop_redact(domain))
    db.expire_all()
    assert db.get(Shop, shop_id) is None
    for table in Base.metadata.sorted_tables:
        if "shop_id" in table.c:
            left = db.scalar(select(func.count()).select_from(table).where(table.c.shop_id == shop_id))
            assert left == 0, table.name
    events = db.scalars(select(WebhookEvent).where(WebhookEvent.shop_domain == domain)).all()
    assert [e.id for e in events] == [event.id]
    assert events[0].shop_id is None and events[0].note == f"all data of {domain} erased"
    assert db.get(Shop, other_shop.id) is not None
    assert db.scalar(select(func.count()).select_from(Customer).where(Customer.shop_id == other_shop.id)) == 1


def test_shop_redact_after_a_reinstall_erases_nothing(deliver, db, shop):
    shop.installed_at = utcnow()
    db.commit()
    event = deliver("shop/redact", sp.shop_redact(shop.domain), triggered_at=utcnow() - dt.timedelta(days=1))
    db.expire_all()
    assert db.get(Shop, shop.id) is not None and "nothing erased" in event.note


def test_shop_redact_of_a_shop_still_installed_asks_shopify_first(deliver, db, shop, fake_shopify):
    """A genuine shop/redact body from a past uninstall, replayed with a fresh X-Shopify-Triggered-At after the
    merchant installed again, erases nothing while Shopify still answers; once it refuses, the shop goes."""
    connect(fake_shopify, shop)
    shop.installed_at = utcnow() - dt.timedelta(days=3)
    db.commit()
    event = deliver("shop/redact", sp.shop_redact(shop.domain), triggered_at=utcnow())
    db.expire_all()
    assert db.get(Shop, shop.id).installed and "nothing erased" in event.note
    fake_shopify.uninstall(shop.domain)  # the app/uninstalled delivery never came
    shop_id = shop.id
    event = deliver("shop/redact", sp.shop_redact(shop.domain), triggered_at=utcnow())
    db.expire_all()
    assert db.get(Shop, shop_id) is None and event.note.endswith("erased")


def test_a_data_request_never_redacts_the_customer(deliver, app, client, db, shop):
    """The HMAC covers the body only: a data request replayed as customers/redact is refused at the door, and an
    event stored before that check existed is ignored when processed."""
    from kinnekt.shopify.tasks import process_webhook_event
    cid = sp.next_id()
    seeded = seed_person(db, deliver, shop, cid=cid)
    request_body = sp.data_request(cid, orders=seeded["orders"])
    response = sp.deliver(client, "customers/redact", request_body, secret=app.config["SHOPIFY_API_SECRET"])
    assert response.status_code == 400
    stored = WebhookEvent(webhook_id="stored-earlier", shop_id=shop.id, shop_domain=shop.domain,
                          topic="customers/redact", payload=json.dumps(request_body))
    db.add(stored)
    db.commit()
    assert process_webhook_event(stored.id) == "processed"
    db.expire_all()
    assert "is not a customers/redact payload" in db.get(WebhookEvent, stored.id).note
    assert db.get(Subscriber, seeded["subscriber"]).phone == PHONE
    assert db.get(Customer, seeded["customer"]).email == "bob@example.com"


def test_compliance_payload_naming_another_shop_is_ignored(deliver, db, shop):
    event = deliver("shop/redact", sp.shop_redact("someone-else.myshopify.com"))
    db.expire_all()
    assert db.get(Shop, shop.id) is not None and "another shop" in event.note


def test_every_tenant_model_is_covered_by_shop_redact():
    """A new tenant table cascades from shops, so shop/redact keeps erasing everything.

    Messages are the one exception: keyed to their campaign (which cascades from the shop), and those without
    a campaign deleted by compliance.redact_shop itself (test_shop_redact_deletes_all_the_shops_data).
    """
    for mapper in Base.registry.mappers:
        cls = mapper.class_
        if issubclass(cls, TenantMixin):
            referred = {(fk.column.table.name, fk.ondelete) for fk in cls.__table__.c.shop_id.foreign_keys}
            expected = {("campaigns", "CASCADE")} if cls is Message else {("shops", "CASCADE")}
            assert referred == expected, cls.__name__
