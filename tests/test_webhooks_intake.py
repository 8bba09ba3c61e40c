"""Webhook intake: HMAC first, size limit, required headers, storing once, queueing, answering 200."""
from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from sqlalchemy import func, select

from kinnekt.models import WebhookEvent
from kinnekt.shopify import webhooks
from tests import shopify_payloads as sp


@pytest.fixture
def secret(app):
    return app.config["SHOPIFY_API_SECRET"]


@pytest.fixture
def queue(app):
    return app.extensions["kinnekt_queue"]


def event_count(db) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(WebhookEvent))


def sample_payloads() -> dict[str, dict]:
    """One realistic payload per subscribed topic."""
    cid, oid, pid = sp.next_id(), sp.next_id(), sp.next_id()
    order = sp.order(oid, customer_payload=sp.order_customer(cid), line_items=[sp.line_item(product_id=pid)])
    return {
        "app/scopes_update": sp.scopes_update(["read_customers", "read_orders"], ["read_customers"]),
        "customers/create": sp.customer(cid),
        "customers/update": sp.customer(cid, updated_at=dt.datetime(2026, 1, 6, tzinfo=dt.timezone.utc)),
        "customers_marketing_consent/update": sp.marketing_consent(cid, state="not_subscribed"),
        "orders/create": order, "orders/updated": order, "orders/paid": order, "orders/cancelled": order,
        "orders/fulfilled": order, "orders/partially_fulfilled": order,
        "products/create": sp.product(pid), "products/update": sp.product(pid),
        "collections/create": sp.collection(), "collections/update": sp.collection(),
        "checkouts/create": sp.checkout(), "checkouts/update": sp.checkout(),
        "bulk_operations/finish": sp.bulk_finish(status="failed", error_code="ACCESS_DENIED"),
        "app_subscriptions/update": sp.subscription_update(),
        "app_subscriptions/approaching_capped_amount": sp.approaching_capped_amount(),
        "customers/data_request": sp.data_request(cid),
        "orders/delete": sp.order_deleted(oid), "products/delete": sp.deleted(pid),
        "collections/delete": sp.collection_deleted(sp.next_id()),
        "customers/redact": sp.customers_redact(cid), "customers/delete": sp.customer_deleted(cid),
        "app/uninstalled": sp.shop_object(), "shop/redact": sp.shop_redact(),
    }


def test_every_topic_is_stored_linked_queued_and_processed(client, db, shop, secret, queue):
    payloads = sample_payloads()
    assert set(payloads) == set(sp.ENDPOINTS) == set(webhooks.ALL_TOPICS)
    triggered = dt.datetime(2026, 11, 20, 15, 0, 1, tzinfo=dt.timezone.utc)
    for n, (topic, payload) in enumerate(payloads.items()):
        if topic == "shop/redact":
            continue  # it erases the shop; tested in test_shopify_compliance
        response = sp.deliver(client, topic, payload, secret=secret, webhook_id=f"wh-{n}", event_id=f"ev-{n}",
                              triggered_at=triggered)
        assert response.status_code == 200, (topic, response.data)
        assert queue.drain()
    db.expire_all()
    events = db.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
    assert [e.topic for e in events] == [t for t in payloads if t != "shop/redact"]
    for n, event in enumerate(events):
        assert event.webhook_id == f"wh-{n}" and event.event_id == f"ev-{n}"
        assert event.shop_id == shop.id and event.shop_domain == shop.domain
        assert event.api_version == "2026-10"
        assert event.triggered_at == triggered
        assert event.processed_at is not None and event.error is None, (event.topic, event.error)
        assert event.attempts == 1
        assert event.note


def test_stored_payload_is_the_raw_body(client, db, shop, secret, queue):
    body = b'{"id": 7001,  "email": "x@example.com", "updated_at": "2026-01-01T00:00:00Z"}'
    response = client.post("/webhooks/customers", data=body,
                           headers=sp.headers("customers/update", body, secret=secret, webhook_id="raw-1"))
    assert response.status_code == 200
    queue.drain()
    assert db.scalar(select(WebhookEvent.payload)) == body.decode()


def test_docs_hmac_vector():
    body = b'{"id":1,"email":"a@example.com"}'
    assert webhooks.sign(body, "hush") == "SnRPygpSlvOBkfX6XdQZR4cL4GiE8A3prXrBdoz9iBA="
    assert webhooks.verify_hmac(body, "SnRPygpSlvOBkfX6XdQZR4cL4GiE8A3prXrBdoz9iBA=", "hush")
    assert not webhooks.verify_hmac(body, "SnRPygpSlvOBkfX6XdQZR4cL4GiE8A3prXrBdoz9iBB=", "hush")
    assert not webhooks.verify_hmac(body, "not base64!", "hush")
    assert not webhooks.verify_hmac(body, "", "hush")
    assert not webhooks.verify_hmac(body, "SnRPygpSlvOBkfX6XdQZR4cL4GiE8A3prXrBdoz9iBA=", "")


def _signed(topic="orders/create", payload=None, *, secret, **fields):
    body = json.dumps(payload if payload is not None else sp.order()).encode()
    return body, sp.headers(topic, body, secret=secret, **fields)


@pytest.mark.parametrize("path", ["/webhooks/orders", "/webhooks/compliance/customers-data-request",
                                  "/webhooks/compliance/customers-redact", "/webhooks/compliance/shop-redact",
                                  "/webhooks/app"])
def test_wrong_secret_is_401_and_nothing_stored(client, db, shop, path):
    topic = {"/webhooks/orders": "orders/create", "/webhooks/app": "app/uninstalled",
             "/webhooks/compliance/customers-data-request": "customers/data_request",
             "/webhooks/compliance/customers-redact": "customers/redact",
             "/webhooks/compliance/shop-redact": "shop/redact"}[path]
    body, headers = _signed(topic, {"shop_domain": shop.domain}, secret="not-the-app-secret")
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 401
    assert event_count(db) == 0


def test_tampered_body_is_401(client, db, shop, secret):
    body, headers = _signed(secret=secret)
    tampered = body.replace(b'"199.00"', b'"0.01"')
    assert tampered != body
    assert client.post("/webhooks/orders", data=tampered, headers=headers).status_code == 401
    assert event_count(db) == 0


@pytest.mark.parametrize("value", [None, "", "garbage!!", "c2hvcnQ="])
def test_missing_or_malformed_hmac_header_is_401(client, db, shop, secret, value):
    body, headers = _signed(secret=secret)
    if value is None:
        del headers["X-Shopify-Hmac-Sha256"]
    else:
        headers["X-Shopify-Hmac-Sha256"] = value
    assert client.post("/webhooks/orders", data=body, headers=headers).status_code == 401
    assert event_count(db) == 0


def test_hmac_is_checked_before_headers(client, db, shop):
    """An unsigned request learns nothing about which headers or topics are valid."""
    body = b"not json at all"
    response = client.post("/webhooks/orders", data=body, headers={"X-Shopify-Hmac-Sha256": "AAAA"})
    assert response.status_code == 401
    assert event_count(db) == 0


def test_oversized_body_is_413_and_nothing_stored(app, client, db, shop, secret, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_WEBHOOK_BYTES", 2048)
    payload = sp.order(line_items=[sp.line_item() for _ in range(20)])
    body, headers = _signed(payload=payload, secret=secret)
    assert len(body) > 2048
    response = client.post("/webhooks/orders", data=body, headers=headers)
    assert response.status_code == 413
    assert event_count(db) == 0


def test_oversized_chunked_body_is_413_without_reading_it_all(app, client, db, shop, secret, monkeypatch):
    """Without a Content-Length the body is read only up to the limit."""
    monkeypatch.setitem(app.config, "MAX_WEBHOOK_BYTES", 2048)
    body, headers = _signed(payload=sp.order(line_items=[sp.line_item() for _ in range(200)]), secret=secret)
    stream = io.BytesIO(body)
    headers["Transfer-Encoding"] = "chunked"
    response = client.post("/webhooks/orders", input_stream=stream, headers=headers,
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert stream.tell() < len(body) / 2
    assert event_count(db) == 0


def test_body_at_the_limit_is_accepted(app, client, db, shop, secret, monkeypatch, queue):
    body, headers = _signed(payload=sp.order(), secret=secret)
    monkeypatch.setitem(app.config, "MAX_WEBHOOK_BYTES", len(body))
    assert client.post("/webhooks/orders", data=body, headers=headers).status_code == 200
    queue.drain()
    assert event_count(db) == 1


@pytest.mark.parametrize("header", ["X-Shopify-Topic", "X-Shopify-Shop-Domain", "X-Shopify-Webhook-Id"])
def test_missing_required_header_is_400(client, db, shop, secret, header):
    body, headers = _signed(secret=secret)
    del headers[header]
    response = client.post("/webhooks/orders", data=body, headers=headers)
    assert response.status_code == 400
    assert header.encode() in response.data
    assert event_count(db) == 0


@pytest.mark.parametrize("domain", ["evil.com", "alpha.myshopify.com.evil.test", "https://alpha.myshopify.com",
                                    "-alpha.myshopify.com", "alpha.myshopify.com/x"])
def test_bad_shop_domain_is_400(client, db, shop, secret, domain):
    body, headers = _signed(secret=secret, domain=domain)
    assert client.post("/webhooks/orders", data=body, headers=headers).status_code == 400
    assert event_count(db) == 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"", "{\"a\": 1}".encode("utf-16")])
def test_body_must_be_a_json_object(client, db, shop, secret, body):
    headers = sp.headers("orders/create", body, secret=secret)
    response = client.post("/webhooks/orders", data=body, headers=headers)
    assert response.status_code == 400
    assert event_count(db) == 0


def test_topic_must_belong_to_the_endpoint(client, db, shop, secret):
    body, headers = _signed("orders/create", secret=secret)
    for path in ("/webhooks/customers", "/webhooks/compliance/shop-redact", "/webhooks/app"):
        response = client.post(path, data=body, headers=headers)
        assert response.status_code == 400
        assert b"not delivered to this endpoint" in response.data
    body, headers = _signed("themes/publish", {"id": 1}, secret=secret)
    assert client.post("/webhooks/catalog", data=body, headers=headers).status_code == 400
    assert event_count(db) == 0


def _swaps():
    """(topic header, a genuine body of another topic, what the body really is): HMAC-valid replays."""
    cid, oid = sp.next_id(), sp.next_id()
    order = sp.order(oid, customer_payload=sp.order_customer(cid))
    return [
        ("app/uninstalled", order, "an order"),
        ("app/uninstalled", sp.shop_redact(), "a shop redaction"),
        ("app/uninstalled", sp.customers_redact(cid), "a customer redaction"),
        ("customers/redact", sp.data_request(cid), "a data request"),
        ("customers/redact", sp.shop_redact(), "a shop redaction"),
        ("customers/redact", {**sp.data_request(cid), "orders_to_redact": []}, "a data request with a redact key"),
        ("shop/redact", sp.customers_redact(cid), "a customer redaction"),
        ("shop/redact", sp.data_request(cid), "a data request"),
        ("shop/redact", sp.shop_object(), "a shop"),
        ("customers/data_request", sp.customers_redact(cid), "a customer redaction"),
        ("customers/update", order, "an order"),
        ("customers/delete", sp.collection_deleted(sp.next_id()), "a deleted collection"),
        ("orders/create", sp.customer(cid), "a customer"),
        ("products/update", sp.collection(), "a collection"),
        ("app/scopes_update", sp.shop_object(), "a shop"),
        ("bulk_operations/finish", sp.shop_object(), "a shop"),
    ]


@pytest.mark.parametrize("topic, payload, what", _swaps(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_body_of_another_topic_is_400_and_nothing_stored(client, db, shop, secret, topic, payload, what):
    """The HMAC covers the body, not the X-Shopify-Topic header: a replayed body must look like its topic."""
    response = sp.deliver(client, topic, payload, secret=secret)
    assert response.status_code == 400, what
    assert f"body is not a {topic} payload".encode() in response.data
    assert event_count(db) == 0


def test_duplicate_delivery_is_stored_and_processed_once(client, db, shop, secret, queue):
    payload = sp.order(customer_payload=sp.order_customer(sp.next_id()))
    first = sp.deliver(client, "orders/create", payload, secret=secret, webhook_id="dup-1")
    queue.drain()
    again = sp.deliver(client, "orders/create", payload, secret=secret, webhook_id="dup-1")
    queue.drain()
    assert first.status_code == again.status_code == 200
    assert event_count(db) == 1
    event = db.scalar(select(WebhookEvent))
    assert event.attempts == 1 and event.processed_at is not None


def test_event_for_unknown_shop_is_stored_and_a_no_op(client, db, secret, queue):
    response = sp.deliver(client, "orders/create", sp.order(), secret=secret, domain="stranger.myshopify.com")
    assert response.status_code == 200
    queue.drain()
    db.expire_all()
    event = db.scalar(select(WebhookEvent))
    assert event.shop_id is None and event.shop_domain == "stranger.myshopify.com"
    assert event.processed_at is not None and "nothing to do" in event.note


def test_missing_triggered_at_and_event_id_are_optional(client, db, shop, secret, queue):
    body, headers = _signed(secret=secret)
    del headers["X-Shopify-Triggered-At"], headers["X-Shopify-Event-Id"]
    assert client.post("/webhooks/orders", data=body, headers=headers).status_code == 200
    queue.drain()
    event = db.scalar(select(WebhookEvent))
    assert event.triggered_at is None and event.event_id is None


def test_webhooks_accept_only_post(client, db, shop):
    assert client.get("/webhooks/orders").status_code == 405
