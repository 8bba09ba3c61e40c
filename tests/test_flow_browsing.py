"""Browsing triggers from their real ingest path: the web pixel's events posted to /pixel/events with the shop's
key start "viewed a product" and "added to cart" runs once attributed (at once, or when the browser is identified
later), carry the product's catalog title, leave on a cart or a started checkout, and honour one run at a time and
the cool-down; the ready-made browse and cart abandonment flows."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.campaigns import composer, trigger_tags
from kinnekt.db import Session, utcnow
from kinnekt.flows import engine, service
from kinnekt.models import Campaign, Flow, FlowRun, Product, Subscriber
from kinnekt.models.flow import RunState
from kinnekt.queue import get_queue
from kinnekt.storefront import limits
from tests import factories
from tests.conftest import make_shop
from tests.test_flow_engine import flow_messages, runs, time_passes
from tests.test_pixel_ingest import KEY, event, now_iso, post, variant

pytestmark = pytest.mark.usefixtures("settled_jobs")


@pytest.fixture(autouse=True)
def _fresh_limits():
    limits.reset_local()
    yield
    limits.reset_local()


@pytest.fixture
def store(db):
    """A shop with the pixel's key, quiet hours off, a catalog product (Shopify id 7001) and a signed-in buyer."""
    shop = make_shop("browse.myshopify.com", pixel_key=KEY, quiet_hours_enabled=False)
    db.add(Product(shop_id=shop.id, shopify_id=7001, title="Rain jacket"))
    db.add(Product(shop_id=shop.id, shopify_id=7002, title="Wool hat"))
    db.commit()
    customer = factories.customer(db, shop, shopify_id=9911)
    person = factories.subscriber(db, shop, customer=customer)
    return shop, person


def viewed(product=7001, client="b-1"):
    return event("product_viewed", {"productVariant": variant(product=product)}, client=client)


def carted(product=7001, client="b-1"):
    return event("product_added_to_cart", {"cartLine": {"quantity": 1, "merchandise": variant(product=product),
                                                        "cost": {"totalAmount": {"amount": 19.99,
                                                                                 "currencyCode": "USD"}}}},
                 client=client)


def checkout_started(client="b-1"):
    return event("checkout_started", {"checkout": {"token": "tok-9", "currencyCode": "USD",
                                                   "totalPrice": {"amount": "19.99", "currencyCode": "USD"}}},
                 client=client)


def send(client, *events, signed_in=True):
    body = {"key": KEY, "events": list(events)}
    if signed_in:
        body["customer"] = {"id": "9911"}
    assert post(client, body).status_code == 200
    assert get_queue().drain(30)  # the receivers' jobs: re-checks, the flows job, the exits job


def builtin_on(db, shop, key):
    flow = service.add_builtin(db, shop, key)
    service.set_status(db, flow, True, now=utcnow() - dt.timedelta(seconds=1))
    return flow


def rendered(db, shop, flow, person):
    [message] = flow_messages(db, flow)
    campaign = db.get(Campaign, message.campaign_id)
    tags = trigger_tags.values_for(db, campaign, [message])[message.id]
    return composer.render(campaign.body, shop=shop, subscriber=db.get(Subscriber, person.id), discount_code=None,
                           first_message=False, extra=tags)


def test_browse_abandonment_texts_the_product_viewed_an_hour_later(client, db, store):
    shop, person = store
    flow = builtin_on(db, shop, "browse_abandonment")
    send(client, viewed(7001), {**viewed(7002), "timestamp": now_iso(-60)})  # the hat was seen first
    [run] = runs(db, flow)  # one run for the person, with the product seen last
    assert (run.subscriber_id, run.product_id, run.state) == (person.id, 7001, RunState.ACTIVE)
    assert run.trigger_key.startswith("viewed:")
    engine.advance(db, shop.id)
    assert flow_messages(db, flow) == []  # waiting its hour
    time_passes(db, flow, 3600)
    engine.advance(db, shop.id)
    assert rendered(db, shop, flow, person) == (
        "Browse: still thinking about the Rain jacket? It is waiting for you in the store.")
    assert runs(db, flow)[0].state == RunState.COMPLETED


def test_adding_to_the_cart_during_the_wait_ends_the_browse_run(client, db, store):
    shop, person = store
    flow = builtin_on(db, shop, "browse_abandonment")
    send(client, viewed())
    send(client, carted())
    [run] = runs(db, flow)
    assert (run.state, run.exit_reason) == (RunState.EXITED, "added_to_cart")  # at once, not after the wait
    time_passes(db, flow, 3600)
    engine.advance(db, shop.id, now=utcnow() + dt.timedelta(hours=2))
    assert flow_messages(db, flow) == []


def test_cart_abandonment_starts_on_a_cart_and_leaves_on_a_started_checkout(client, db, store):
    shop, person = store
    flow = builtin_on(db, shop, "cart_abandonment")
    browse = builtin_on(db, shop, "browse_abandonment")
    send(client, carted(7002))
    [run] = runs(db, flow)
    assert (run.product_id, run.trigger_key[:5], run.state) == (7002, "cart:", RunState.ACTIVE)
    assert runs(db, browse) == []  # a cart is not a view
    send(client, checkout_started())
    assert [(r.state, r.exit_reason) for r in runs(db, flow)] == [(RunState.EXITED, "started_checkout")]
    time_passes(db, flow, 3600)
    engine.advance(db, shop.id, now=utcnow() + dt.timedelta(hours=2))
    assert flow_messages(db, flow) == []


def test_an_unattributed_view_starts_a_run_when_the_browser_is_identified(client, db, store, monkeypatch):
    shop, person = store
    flow = builtin_on(db, shop, "browse_abandonment")
    send(client, viewed(client="anon"), signed_in=False)
    monkeypatch.setattr(defaults, "FLOW_TRIGGER_LOOKBACK_SECONDS", 0)
    engine.enter(db, shop.id)  # the flows job reads past the view while nobody is known for it
    assert runs(db, flow) == []
    send(client, event("page_viewed", client="anon"))  # the shopper signs in: the earlier view is theirs
    [run] = runs(db, flow)
    assert (run.subscriber_id, run.product_id) == (person.id, 7001)
    send(client, event("page_viewed", client="anon"))  # read again: nothing new
    assert len(runs(db, flow)) == 1


def test_one_run_at_a_time_and_the_cool_down(client, db, store, monkeypatch):
    shop, person = store
    flow = builtin_on(db, shop, "cart_abandonment")
    send(client, carted())
    send(client, carted(7002))
    assert len(runs(db, flow)) == 1  # already in the flow
    time_passes(db, flow, 3600)
    engine.advance(db, shop.id)
    assert [r.state for r in runs(db, flow)] == [RunState.COMPLETED]
    send(client, carted(7002))
    assert len(runs(db, flow)) == 1  # within the day's cool-down
    engine.enter(db, shop.id)
    monkeypatch.setattr(defaults, "FLOW_TRIGGER_LOOKBACK_SECONDS", 0)  # the day passes: reads are past that cart
    engine.enter(db, shop.id, now=utcnow() + dt.timedelta(days=1, minutes=1))
    assert len(runs(db, flow)) == 1  # and the old event does not start one after it


def test_an_event_before_the_flow_was_on_and_another_shops_events_start_nothing(client, db, store):
    shop, person = store
    send(client, viewed())
    flow = service.add_builtin(db, shop, "browse_abandonment")
    service.set_status(db, flow, True, now=utcnow() + dt.timedelta(seconds=1))
    other = make_shop("other.myshopify.com", pixel_key="o" * 32, quiet_hours_enabled=False)
    other_customer = factories.customer(db, other, shopify_id=9911)
    factories.subscriber(db, other, customer=other_customer)
    assert post(client, {"key": "o" * 32, "customer": {"id": "9911"}, "events": [viewed()]}).status_code == 200
    assert get_queue().drain(30)
    engine.enter(db, shop.id, now=utcnow() + dt.timedelta(seconds=2))
    assert runs(db, flow) == []
    assert [r.flow_id for r in Session.scalars(select(FlowRun))] == []


def test_the_editor_offers_the_browsing_triggers_and_exits_and_saves_one(client, auth, shop, db):
    from tests.test_flows_editor import HX, form_of, toast
    html = client.get("/flows/new", headers=auth).get_data(as_text=True)
    for words in ("Views a product", "Adds a product to the cart", "They add to the cart", "They start a checkout"):
        assert words in html
    steps = [{"kind": "wait", "seconds": 3600}, {"kind": "send", "body": "Still thinking about the {product_title}?"}]
    response = client.post("/flows/", headers={**auth, **HX}, data=form_of(
        steps, name="Browsers", trigger="product_viewed", exits=["order", "added_to_cart", "started_checkout"]))
    assert not toast(response)["isError"], response.get_data(as_text=True)
    flow = db.scalar(select(Flow).where(Flow.shop_id == shop.id))
    assert (flow.trigger, flow.exit_conditions, flow.status) == (
        "product_viewed", ["order", "added_to_cart", "started_checkout"], "off")


def test_a_checkout_link_in_a_browsing_flow_is_refused_and_nothing_is_saved(client, auth, shop, db):
    from tests.test_flows_editor import HX, counts, form_of, toast
    steps = [{"kind": "send", "body": "Come back: {checkout_url}"}]
    response = client.post("/flows/", headers={**auth, **HX}, data=form_of(steps, trigger="added_to_cart"))
    assert toast(response)["isError"] and "checkout_url" in response.get_data(as_text=True)
    assert counts() == (0, 0, 0)



def test_a_view_stamped_long_before_it_arrived_is_outside_the_read_a_recent_one_is_not(client, db, store,
                                                                                          monkeypatch):
    shop, person = store
    flow = builtin_on(db, shop, "browse_abandonment")
    monkeypatch.setattr(defaults, "FLOW_TRIGGER_LOOKBACK_SECONDS", 0)
    send(client, event("page_viewed", client="b-1"))  # the browser is known from here on
    stale = engine.BROWSING_CLOCK_MARGIN_SECONDS + 600
    send(client, {**viewed(), "timestamp": now_iso(-stale)})  # the shopper's clock far behind: outside the read
    assert runs(db, flow) == []
    send(client, {**viewed(7002), "timestamp": now_iso(-60)})
    assert [r.product_id for r in runs(db, flow)] == [7002]
