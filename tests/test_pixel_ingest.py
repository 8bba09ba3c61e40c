"""POST /pixel/events: the shop's own key only, Shopify's event shapes, bounds, rate limits, idempotent storage,
who did it (customer, checkout phone, tracked link), never a 500 (fuzzed), and two posts of one batch at once."""
from __future__ import annotations

import datetime as dt
import json
import random
import threading
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt import defaults, signals
from kinnekt.db import Session, utcnow
from kinnekt.models import Link
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from kinnekt.storefront import limits, pixel_keys
from tests import factories
from tests.conftest import make_shop

URL = "/pixel/events"
KEY = "k" * 32


@pytest.fixture(autouse=True)
def _fresh_limits():
    limits.reset_local()
    pixel_keys.forget_all()
    yield
    limits.reset_local()
    pixel_keys.forget_all()


@pytest.fixture
def pixel_shop(db):
    return make_shop("pixel.myshopify.com", pixel_key=KEY)


def now_iso(offset_seconds: float = 0) -> str:
    return (utcnow() + dt.timedelta(seconds=offset_seconds)).isoformat().replace("+00:00", "Z")


def event(name: str, data: dict | None = None, *, client="client-1", href="https://shop.example.com/", **extra):
    return {"id": extra.pop("id", f"sh-{uuid.uuid4()}"), "name": name, "timestamp": extra.pop("timestamp", now_iso()),
            "clientId": client, "type": "standard", "seq": 1,
            "context": {"document": {"location": {"href": href}, "title": "Shop"}}, "data": data or {}, **extra}


def variant(product=7001, variant_id=8001, amount="19.99"):
    return {"id": str(variant_id), "title": "Blue / M", "price": {"amount": float(amount), "currencyCode": "USD"},
            "product": {"id": str(product), "title": "Rain jacket", "vendor": "Northwind", "type": "Jackets"}}


def every_kind(client="client-1"):
    return [
        event("page_viewed", client=client),
        event("product_viewed", {"productVariant": variant()}, client=client),
        event("collection_viewed", {"collection": {"id": "gid://shopify/Collection/555", "title": "New"}},
              client=client),
        event("search_submitted", {"searchResult": {"query": "  rain jacket ", "productVariants": []}}, client=client),
        event("product_added_to_cart", {"cartLine": {"quantity": 2, "merchandise": variant(),
                                                     "cost": {"totalAmount": {"amount": 39.98,
                                                                              "currencyCode": "USD"}}}},
              client=client),
        event("cart_viewed", {"cart": None}, client=client),
        event("checkout_started", {"checkout": {"token": "tok-123", "currencyCode": "USD",
                                                "totalPrice": {"amount": "39.98", "currencyCode": "USD"},
                                                "phone": None, "email": "x@example.com"}}, client=client),
    ]


def post(client, body, *, content_type="text/plain;charset=UTF-8", headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, headers=headers or {})


def stored(shop_id=None):
    query = select(StorefrontEvent)
    if shop_id is not None:
        query = query.where(StorefrontEvent.shop_id == shop_id)
    return Session.scalars(query.order_by(StorefrontEvent.id)).all()


def count_events():
    Session.expire_all()
    return Session.scalar(select(func.count()).select_from(StorefrontEvent))


# ----------------------------------------------------------------------------------------------- happy path

def test_a_batch_of_every_kind_is_stored_with_what_segments_use(client, pixel_shop):
    batch = {"key": KEY, "customer": None, "events": every_kind()}
    response = post(client, batch)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"ok": True, "received": 7, "stored": 7}
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    rows = {row.name: row for row in stored(pixel_shop.id)}
    assert set(rows) == {"page_viewed", "product_viewed", "collection_viewed", "search_submitted",
                         "product_added_to_cart", "cart_viewed", "checkout_started"}
    assert rows["product_viewed"].product_id == 7001 and rows["product_viewed"].variant_id == 8001
    assert rows["product_viewed"].value == Decimal("19.9900") and rows["product_viewed"].currency == "USD"
    assert rows["collection_viewed"].collection_id == 555
    assert rows["search_submitted"].search_query == "rain jacket"
    assert rows["product_added_to_cart"].quantity == 2 and rows["product_added_to_cart"].value == Decimal("39.98")
    assert rows["checkout_started"].checkout_token == "tok-123"
    assert rows["page_viewed"].url == "https://shop.example.com/" and rows["page_viewed"].client_id == "client-1"
    assert all(row.subscriber_id is None for row in rows.values())


def test_a_replayed_batch_stores_nothing_more(client, pixel_shop):
    batch = {"key": KEY, "events": every_kind()}
    assert post(client, batch).get_json()["stored"] == 7
    again = post(client, batch)
    assert again.status_code == 200 and again.get_json() == {"ok": True, "received": 7, "stored": 0}
    assert count_events() == 7


def test_the_same_event_id_in_another_shop_is_another_event(client, pixel_shop, db):
    make_shop("second.myshopify.com", pixel_key="s" * 32)
    batch = every_kind()
    assert post(client, {"key": KEY, "events": batch}).get_json()["stored"] == 7
    assert post(client, {"key": "s" * 32, "events": batch}).get_json()["stored"] == 7
    assert count_events() == 14


def test_the_preflight_allows_a_post_from_any_origin(client):
    response = client.options(URL, headers={"Origin": "https://shop.example.com",
                                            "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "Content-Type"


def test_a_timestamp_far_from_now_is_stored_at_its_arrival(client, pixel_shop):
    batch = {"key": KEY, "events": [event("page_viewed", timestamp="1999-01-01T00:00:00Z")]}
    assert post(client, batch).status_code == 200
    (row,) = stored()
    occurred = row.occurred_at if row.occurred_at.tzinfo else row.occurred_at.replace(tzinfo=dt.timezone.utc)
    assert abs((occurred - utcnow()).total_seconds()) < 60


# ------------------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("body, status, says", [
    ({"key": "x" * 32, "events": [event("page_viewed")]}, 403, "no shop"),
    ({"events": [event("page_viewed")]}, 400, "key"),
    ({"key": KEY, "events": []}, 400, "non-empty"),
    ({"key": KEY, "events": "page_viewed"}, 400, "non-empty"),
    ({"key": KEY, "events": [event("checkout_completed")]}, 400, "events[0].name"),
    ({"key": KEY, "events": [event("page_viewed", id="")]}, 400, "events[0].id"),
    ({"key": KEY, "events": [event("page_viewed", id="a" * 65)]}, 400, "events[0].id"),
    ({"key": KEY, "events": [event("page_viewed", client="has space")]}, 400, "events[0].clientId"),
    ({"key": KEY, "events": [event("page_viewed", timestamp="yesterday")]}, 400, "events[0].timestamp"),
    ({"key": KEY, "events": [event("page_viewed", timestamp="2026-12-07T10:00:00")]}, 400, "time zone"),
    ({"key": KEY, "events": [event("page_viewed"), event("product_viewed", {})]}, 400,
     "events[1].data.productVariant is missing"),
    ({"key": KEY, "events": [event("product_viewed", {"productVariant": {"id": "1", "product": {"id": "abc"}}})]},
     400, "events[0].data.productVariant.product.id"),
    ({"key": KEY, "events": [event("product_viewed", {"productVariant": {"product": {"id": 2 ** 63}}})]},
     400, "product.id"),
    ({"key": KEY, "events": [event("product_viewed", {"productVariant": {"product": {"id": True}}})]},
     400, "product.id"),
    ({"key": KEY, "events": [event("collection_viewed", {"collection": {"title": "x"}})]}, 400,
     "data.collection.id is missing"),
    ({"key": KEY, "events": [event("search_submitted", {"searchResult": {"query": 5}})]}, 400,
     "searchResult.query has the wrong type"),
    ({"key": KEY, "events": [event("product_added_to_cart", {"cartLine": {"quantity": -1,
                                                                          "merchandise": variant()}})]},
     400, "quantity is out of range"),
    ({"key": KEY, "events": [event("product_viewed", {"productVariant": {**variant(), "price": {
        "amount": "1e999999", "currencyCode": "USD"}}})]}, 400, "amount"),
    ({"key": KEY, "events": [event("product_viewed", {"productVariant": {**variant(), "price": {
        "amount": 10, "currencyCode": "dollars"}}})]}, 400, "currencyCode"),
    ({"key": KEY, "events": [event("checkout_started", {})]}, 400, "data.checkout is missing"),
    ({"key": KEY, "events": [event("page_viewed", context={"document": "nope"})]}, 400, "context.document"),
    ({"key": KEY, "events": [event("page_viewed")] * 0 + [event("page_viewed") for _ in range(51)]}, 400,
     "at most 50"),
    ([1, 2, 3], 400, "key"),
])
def test_bad_batches_are_refused_with_a_reason_and_store_nothing(client, pixel_shop, body, status, says):
    response = post(client, body)
    assert response.status_code == status, response.get_json()
    assert says in response.get_json()["error"]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert count_events() == 0


def test_bad_bodies_are_refused(client, pixel_shop):
    assert post(client, b"{not json").status_code == 400
    assert post(client, b"\xff\xfe").status_code == 400
    assert post(client, b"[" * 10_000 + b"]" * 10_000).status_code == 400
    nul = json.dumps({"key": KEY, "events": [event("search_submitted", {"searchResult": {"query": "a\u0000b"}})]})
    response = post(client, nul)
    assert response.status_code == 400 and "NUL" in response.get_json()["error"]
    surrogate = '{"key": "%s", "events": [{"name": "\\ud800"}]}' % KEY
    assert post(client, surrogate).status_code == 400
    # the same text without an escape: a surrogate's UTF-8 bytes, and a NUL escape in a UTF-16 body
    raw_surrogate = b'{"key": "%s", "events": [{"name": "\xed\xa0\x80"}]}' % KEY.encode()
    response = post(client, raw_surrogate)
    assert response.status_code == 400 and "surrogate" in response.get_json()["error"]
    utf16 = nul.encode("utf-16")
    response = post(client, utf16)
    assert response.status_code == 400 and "NUL" in response.get_json()["error"]
    assert count_events() == 0


def test_a_body_over_the_limit_is_refused_unread(client, pixel_shop):
    body = json.dumps({"key": KEY, "events": [event("page_viewed", href="https://x/" + "a" * 70_000)]})
    response = post(client, body)
    assert response.status_code == 413 and count_events() == 0


def test_an_uninstalled_shop_takes_no_events(client, pixel_shop):
    pixel_shop.uninstalled_at = utcnow()
    Session.commit()
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 403
    assert count_events() == 0


def test_long_fields_are_cut_to_their_columns(client, pixel_shop):
    long_url = "https://shop.example.com/search?q=" + "é" * 3000
    batch = {"key": KEY, "events": [event("search_submitted", {"searchResult": {"query": "ж" * 600}},
                                          href=long_url)]}
    assert post(client, batch).status_code == 200
    (row,) = stored()
    assert len(row.search_query) == 255 and len(row.url) == 2048


# ------------------------------------------------------------------------------ the key's shop, remembered

def another_process(statement):
    """Run a Core statement on a connection of its own, outside every session: as another gunicorn worker or an RQ
    worker would change the shop (no session event in this process sees it)."""
    from kinnekt import db as kdb
    with kdb.engine().begin() as connection:
        connection.execute(statement)


def test_the_keys_shop_is_remembered_until_its_time_is_up(client, pixel_shop, monkeypatch):
    from kinnekt.models import Shop
    clock = [1000.0]
    monkeypatch.setattr(pixel_keys.time, "monotonic", lambda: clock[0])
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200
    another_process(Shop.__table__.update().where(Shop.__table__.c.id == pixel_shop.id).values(uninstalled_at=utcnow()))
    clock[0] += defaults.PIXEL_KEY_CACHE_SECONDS - 1
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200  # remembered
    clock[0] += 2
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 403  # read again
    assert count_events() == 2


def test_an_unknown_key_is_not_remembered(client, db):
    from kinnekt.models import Shop
    key = "n" * 32
    assert post(client, {"key": key, "events": [event("page_viewed")]}).status_code == 403
    another_process(Shop.__table__.insert().values(domain="late.myshopify.com", name="Late", timezone="UTC",
                                                   installed_at=utcnow(), pixel_key=key))
    assert post(client, {"key": key, "events": [event("page_viewed")]}).status_code == 200


def test_an_uninstall_in_this_process_stops_the_key_at_once(client, pixel_shop):
    from kinnekt.shopify.handlers import mark_uninstalled
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200
    mark_uninstalled(Session, Session.merge(pixel_shop), at=utcnow())
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 403
    assert count_events() == 1


def test_a_new_key_replaces_the_old_one_at_once(client, pixel_shop):
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200
    shop = Session.merge(pixel_shop)
    shop.pixel_key = "r" * 32
    Session.commit()
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 403
    assert post(client, {"key": "r" * 32, "events": [event("page_viewed")]}).status_code == 200


def test_an_update_or_delete_statement_on_shops_forgets_the_keys(client, pixel_shop):
    from sqlalchemy import delete, update

    from kinnekt.models import Shop
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200
    Session.execute(update(Shop).where(Shop.id == pixel_shop.id).values(pixel_key="u" * 32))
    Session.commit()
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 403
    assert post(client, {"key": "u" * 32, "events": [event("page_viewed")]}).status_code == 200
    Session.execute(delete(Shop).where(Shop.id == pixel_shop.id))
    Session.commit()
    assert post(client, {"key": "u" * 32, "events": [event("page_viewed")]}).status_code == 403


def test_a_rolled_back_change_keeps_what_is_remembered_right(client, pixel_shop):
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200
    shop = Session.merge(pixel_shop)
    shop.uninstalled_at = utcnow()
    Session.flush()
    Session.rollback()
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200


# -------------------------------------------------------------------------------------------- rate limits

def test_a_browser_over_its_limit_is_refused_others_are_not(client, pixel_shop, monkeypatch):
    monkeypatch.setattr(defaults, "PIXEL_EVENTS_PER_BROWSER_PER_MINUTE", 10)
    for _ in range(2):
        assert post(client, {"key": KEY, "events": [event("page_viewed") for _ in range(5)]}).status_code == 200
    refused = post(client, {"key": KEY, "events": [event("page_viewed")]})
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert post(client, {"key": KEY, "events": [event("page_viewed", client="client-2")]}).status_code == 200
    assert count_events() == 11


def test_a_shop_over_its_limit_is_refused(client, pixel_shop, monkeypatch):
    monkeypatch.setattr(defaults, "PIXEL_EVENTS_PER_SHOP_PER_MINUTE", 6)
    assert post(client, {"key": KEY, "events": every_kind()[:6]}).status_code == 200
    response = post(client, {"key": KEY, "events": [event("page_viewed", client="someone-else")]})
    assert response.status_code == 429 and count_events() == 6


def test_limits_count_in_redis_across_processes(app, client, pixel_shop, monkeypatch):
    import os
    url = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")
    from kinnekt.sms.ratelimit import shared_redis
    for key in shared_redis(url).scan_iter(match=f"{limits.PREFIX}:*"):
        shared_redis(url).delete(key)
    monkeypatch.setitem(app.config, "REDIS_URL", url)
    monkeypatch.setattr(defaults, "PIXEL_EVENTS_PER_BROWSER_PER_MINUTE", 3)
    assert post(client, {"key": KEY, "events": [event("page_viewed") for _ in range(3)]}).status_code == 200
    limits.reset_local()  # another process: nothing counted locally, Redis remembers
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 429
    counted = list(shared_redis(url).scan_iter(match=f"{limits.PREFIX}:*"))
    assert any(b":browser:" in key for key in counted) and any(b":shop:" in key for key in counted)
    assert all(0 < shared_redis(url).ttl(key) <= 2 * defaults.PIXEL_RATE_WINDOW_SECONDS for key in counted)


def test_an_unreachable_redis_falls_back_to_counting_in_the_process(app, client, pixel_shop, monkeypatch):
    monkeypatch.setitem(app.config, "REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(defaults, "PIXEL_EVENTS_PER_BROWSER_PER_MINUTE", 2)
    assert post(client, {"key": KEY, "events": [event("page_viewed") for _ in range(2)]}).status_code == 200
    assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 429


# ------------------------------------------------------------------------------------------------ identity

def announced():
    """Connect a receiver that records storefront_activity (the caller holds it, and disconnects it)."""
    calls = []

    def receiver(session, **details):
        calls.append(details)
    signals.storefront_activity.connect(receiver)
    return calls, receiver


def test_a_signed_in_customer_ties_the_browser_and_its_earlier_events_to_the_subscriber(client, pixel_shop, db):
    person = factories.customer(db, pixel_shop, shopify_id=9911)
    sub = factories.subscriber(db, pixel_shop, customer=person)
    calls, receiver = announced()
    try:
        assert post(client, {"key": KEY, "events": [event("page_viewed", client="b-1")]}).status_code == 200
        assert calls == []  # nobody known yet
        batch = {"key": KEY, "customer": {"id": "9911"}, "events": [event("product_viewed",
                                                                           {"productVariant": variant()},
                                                                           client="b-1")]}
        assert post(client, batch).status_code == 200
    finally:
        signals.storefront_activity.disconnect(receiver)
    Session.expire_all()
    assert [row.subscriber_id for row in stored()] == [sub.id, sub.id]
    assert [row.customer_id for row in stored()] == [None, 9911]
    browser = Session.scalar(select(StorefrontBrowser))
    assert (browser.client_id, browser.subscriber_id, browser.source) == ("b-1", sub.id, "customer")
    assert calls == [{"shop_id": pixel_shop.id, "subscriber_ids": [sub.id]}]
    # later events of the known browser carry the subscriber at once
    assert post(client, {"key": KEY, "events": [event("cart_viewed", client="b-1")]}).status_code == 200
    Session.expire_all()
    assert stored()[-1].subscriber_id == sub.id


def test_a_started_checkouts_phone_identifies_the_browser(client, pixel_shop, db):
    sub = factories.subscriber(db, pixel_shop, phone="+12125550187")
    factories.subscriber(db, make_shop("other.myshopify.com"), phone="+12125550188")
    batch = {"key": KEY, "events": [
        event("page_viewed", client="b-2"),
        event("checkout_started", {"checkout": {"token": "t1", "phone": None,
                                                "shippingAddress": {"phone": "(212) 555-0187", "countryCode": "US"}}},
              client="b-2")]}
    assert post(client, batch).status_code == 200
    Session.expire_all()
    assert {row.subscriber_id for row in stored()} == {sub.id}
    assert Session.scalar(select(StorefrontBrowser.source)) == "checkout"
    # another shop's number is nobody here
    other = {"key": KEY, "events": [event("checkout_started", {"checkout": {"phone": "+12125550188"}},
                                          client="b-3")]}
    assert post(client, other).status_code == 200
    Session.expire_all()
    assert stored()[-1].subscriber_id is None


def test_a_tracked_links_kn_reference_identifies_the_browser_in_its_own_shop_only(client, pixel_shop, db):
    sub = factories.subscriber(db, pixel_shop)
    factories.save(db, Link(shop_id=pixel_shop.id, code="AbC123", url="https://shop.example.com/",
                            subscriber_id=sub.id))
    stranger_shop = make_shop("stranger.myshopify.com")
    stranger = factories.subscriber(db, stranger_shop)
    factories.save(db, Link(shop_id=stranger_shop.id, code="Zz9999", url="https://x.example.com/",
                            subscriber_id=stranger.id))
    landing = "https://shop.example.com/products/jacket?utm_source=sms&kn=AbC123"
    assert post(client, {"key": KEY, "events": [event("page_viewed", client="b-4", href=landing)]}).status_code == 200
    foreign = "https://shop.example.com/?kn=Zz9999"
    assert post(client, {"key": KEY, "events": [event("page_viewed", client="b-5", href=foreign)]}).status_code == 200
    Session.expire_all()
    assert [row.subscriber_id for row in stored()] == [sub.id, None]
    assert Session.scalar(select(StorefrontBrowser.source)) == "link"


# -------------------------------------------------------------------------------------------------- fuzzing

HOSTILE_VALUES = [None, True, False, 0, -1, 2 ** 64, 10 ** 400, 1.5, float("1e308"), "", " ", "0", "-5",
                  "9" * 30, "gid://shopify/Product/-1", "gid://shopify/Product/99999999999999999999", "ünïcødé",
                  "🙂" * 40, "\u202e", "a" * 300, [], [None], {}, {"id": {}}, {"amount": "NaN"},
                  {"amount": "Infinity", "currencyCode": "USD"}, {"amount": [1]}, "2026-13-45T99:99:99Z",
                  "+99999-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"]


def mutate(value, rng: random.Random, depth: int = 0):
    """The same document with one random part replaced by something hostile."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(list(value))
        copy = dict(value)
        choice = rng.random()
        if choice < 0.15:
            del copy[key]
        elif choice < 0.55:
            copy[key] = rng.choice(HOSTILE_VALUES)
        else:
            copy[key] = mutate(value[key], rng, depth + 1)
        return copy
    if isinstance(value, list) and value and depth < 6:
        copy = list(value)
        index = rng.randrange(len(copy))
        if rng.random() < 0.3:
            copy[index] = rng.choice(HOSTILE_VALUES)
        else:
            copy[index] = mutate(copy[index], rng, depth + 1)
        return copy
    return rng.choice(HOSTILE_VALUES)


def test_fuzzed_batches_never_get_a_500_and_store_only_whole_valid_batches(client, pixel_shop, monkeypatch):
    monkeypatch.setattr(defaults, "PIXEL_EVENTS_PER_BROWSER_PER_MINUTE", 10 ** 6)
    rng = random.Random(2312)
    statuses: dict[int, int] = {}
    accepted = 0
    for round_ in range(400):
        base = {"key": KEY, "customer": {"id": "5"}, "events": every_kind(client=f"fuzz-{round_ % 7}")}
        document = mutate(base, rng)
        if rng.random() < 0.2:
            document = mutate(document, rng)
        raw = json.dumps(document, allow_nan=True)
        if rng.random() < 0.05:
            raw = raw[: rng.randrange(len(raw))]  # cut short
        before = count_events()
        response = post(client, raw)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code in (200, 400, 403, 413), (response.status_code, raw[:300])
        assert response.is_json and response.headers["Access-Control-Allow-Origin"] == "*"
        after = count_events()
        if response.status_code == 200:
            accepted += 1
            assert after - before == response.get_json()["stored"]
        else:
            assert after == before, raw[:300]
    assert statuses.get(400, 0) > 100 and accepted > 20, statuses
    # a replay of everything accepted stores nothing new
    before = count_events()
    rng = random.Random(2312)
    for round_ in range(50):
        document = mutate({"key": KEY, "events": every_kind(client=f"fuzz-{round_ % 7}")}, rng)
        post(client, json.dumps(document, allow_nan=True))
    assert count_events() >= before


def test_random_bytes_never_get_a_500(client, pixel_shop):
    rng = random.Random(7)
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        response = post(client, raw, content_type=rng.choice(["text/plain", "application/json",
                                                               "application/x-www-form-urlencoded"]))
        assert response.status_code in (400, 403), response.status_code
    assert count_events() == 0


# ----------------------------------------------------------------------------------------------- concurrency

def test_two_threads_posting_the_same_batch_store_it_once(app, pixel_shop):
    person = factories.customer(Session, pixel_shop, shopify_id=4242)
    factories.subscriber(Session, pixel_shop, customer=person)
    batch = json.dumps({"key": KEY, "customer": {"id": 4242}, "events": every_kind(client="race")})
    barrier = threading.Barrier(2)
    answers = []

    def send():
        with app.app_context():
            test_client = app.test_client()
            barrier.wait()
            answers.append(post(test_client, batch).get_json())

    for _round in range(3):
        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(answers) == 6 and all(answer["ok"] for answer in answers), answers
    assert sum(answer["stored"] for answer in answers) == 7
    assert count_events() == 7
    assert Session.scalar(select(func.count()).select_from(StorefrontBrowser)) == 1


def test_a_batch_is_one_insert_statement(client, pixel_shop):
    from sqlalchemy import event as sa_event
    from sqlalchemy.engine import Engine
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO STOREFRONT_EVENTS"):
            statements.append(statement)

    sa_event.listen(Engine, "before_cursor_execute", record)  # every engine: on PostgreSQL the writer's pool
    try:
        assert post(client, {"key": KEY, "events": every_kind() + every_kind(client="client-2")}).status_code == 200
    finally:
        sa_event.remove(Engine, "before_cursor_execute", record)
    assert len(statements) == 1 and "ON CONFLICT" in statements[0].upper() and count_events() == 14


def test_the_endpoint_answers_before_flask_and_through_it_alike(app, client, pixel_shop, monkeypatch):
    """POST /pixel/events is answered by the WSGI fast path (no request context, no before/after-request hooks);
    with a query string it goes through Flask's routing and hooks as any request: the same checks, the same
    answer, the same headers."""
    hooks = []
    app.before_request_funcs.setdefault(None, []).append(lambda: hooks.append(1))
    try:
        fast = post(client, {"key": KEY, "events": [event("page_viewed")]})
        assert hooks == []  # Flask's request handling never ran
        through = client.post(URL + "?from=test", data=json.dumps({"key": KEY, "events": [event("page_viewed")]}),
                              content_type="text/plain")
        assert hooks == [1]
    finally:
        app.before_request_funcs[None].pop()
    for response in (fast, through):
        assert response.status_code == 200 and response.get_json() == {"ok": True, "received": 1, "stored": 1}
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Type"] == "application/json"
    assert count_events() == 2
    for path in (URL, URL + "?x=1"):
        refused = client.post(path, data=b"{", content_type="text/plain")
        assert refused.status_code == 400 and refused.get_json()["ok"] is False
    nul = client.post(URL + "?x=%00", data=json.dumps({"key": KEY, "events": [event("page_viewed")]}),
                      content_type="text/plain")
    assert nul.status_code == 400 and count_events() == 2  # Flask's guard, as for every request


def test_a_bug_in_the_fast_path_is_answered_as_the_apps_own_handler_does(client, pixel_shop, monkeypatch):
    """Not an input the endpoint can get (the fuzz tests above prove none gives a 500): a bug is logged, its
    transaction rolled back, nothing stored, and the pixel gets JSON as for any other answer."""
    from kinnekt.storefront import ingest

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingest, "store", broken)
    response = post(client, {"key": KEY, "events": [event("page_viewed")]})
    assert response.status_code == 500 and response.get_json()["ok"] is False and count_events() == 0


def test_on_postgresql_batches_do_not_wait_for_the_disk_and_most_take_one_statement(client, pixel_shop, db):
    """The writer's pool has synchronous_commit off, and a batch without an identity clue is its INSERT alone,
    outside a transaction (no BEGIN or COMMIT round trips); a batch with a clue is one transaction."""
    from sqlalchemy import event as sa_event, text
    from kinnekt.db import on_postgresql
    from kinnekt.storefront import ingest
    if not on_postgresql(db):
        pytest.skip("the writer's pool is PostgreSQL's")
    with ingest.writer_engine(db).connect() as conn:
        assert conn.scalar(text("SHOW synchronous_commit")) == "off"
    with db.get_bind().connect() as conn:
        assert conn.scalar(text("SHOW synchronous_commit")) == "on"  # the app's own pool: unchanged
    writer = ingest.writer_engine(db)
    seen = []

    def statement(conn, cursor, sql, *rest):
        seen.append(sql.split()[0].upper())

    def commit(conn):
        seen.append("COMMIT")

    sa_event.listen(writer, "before_cursor_execute", statement)
    sa_event.listen(writer, "commit", commit)
    try:
        assert post(client, {"key": KEY, "events": [event("page_viewed")]}).status_code == 200
        assert seen == ["INSERT"]
        seen.clear()
        assert post(client, {"key": KEY, "customer": {"id": "424242"}, "events": [event("page_viewed")]}) \
            .status_code == 200
        assert seen[-2:] == ["INSERT", "COMMIT"] and seen.count("COMMIT") == 1
    finally:
        sa_event.remove(writer, "before_cursor_execute", statement)
        sa_event.remove(writer, "commit", commit)
    assert count_events() == 2
