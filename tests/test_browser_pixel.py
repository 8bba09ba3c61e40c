"""The pixel's own code (extensions/kinnekt-pixel/src/index.js) in Chromium, against a harness page that plays
Shopify's web pixel runtime, sending to the real endpoint of the test server.

The harness is served by a small HTTP server of its own (another port: another origin) and the pixel's
endpoint is the live server's /pixel/events, so the request is a real cross-origin one and its CORS answer
counts. (Both on the loopback address: Chromium refuses a page it takes for public, such as one fulfilled by a
Playwright route, access to the loopback address space.) The page defines a `register` global and maps the
module `@shopify/web-pixels-extension` (which the pixel imports, as Shopify's CLI bundles it) to a module
handing `register` on; `analytics.subscribe`, `browser.sendBeacon` and `init` stand in for Shopify's. The test
emits standard events with Shopify's documented shapes through `window.__emit(name, data)`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from tests import factories
from tests.conftest import make_shop

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]

PIXEL_JS = Path(__file__).resolve().parent.parent / "extensions" / "kinnekt-pixel" / "src" / "index.js"
KEY = "harness-key-0123456789abcdef0123"

HARNESS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pixel harness</title><link rel="icon" href="data:,">
<script type="importmap">{"imports": {"@shopify/web-pixels-extension": "/harness/web-pixels-extension.js"}}</script>
<script src="/harness/runtime.js"></script>
<script type="module" src="/extension/index.js"></script>
</head><body><h1>Storefront</h1></body></html>"""

RUNTIME = """
(function () {
  const config = %s;
  const subscribers = {};
  let seq = 0;
  window.__sent = [];
  const analytics = {subscribe(name, callback) { (subscribers[name] = subscribers[name] || []).push(callback); }};
  const browser = config.beacon ? {sendBeacon(url, body) {
    window.__sent.push({via: "beacon", body});
    return Promise.resolve(navigator.sendBeacon(url, body));
  }} : {};
  const init = {data: {customer: config.customer}, context: {document: {location: {href: location.href}}}};
  window.register = function (extend) {
    extend({analytics, browser, init, settings: config.settings});
  };
  window.__subscribed = () => Object.keys(subscribers).sort();
  window.__emit = function (name, data, href) {
    seq += 1;
    const event = {id: "sh-" + crypto.randomUUID(), name, type: "standard", seq, clientId: config.clientId,
                   timestamp: new Date().toISOString(),
                   context: {document: {location: {href: href || location.href}, title: document.title},
                             navigator: {userAgent: navigator.userAgent}},
                   data};
    (subscribers[name] || []).forEach((callback) => callback(event));
    return event.id;
  };
  if (!config.beacon) {
    const realFetch = window.fetch;
    window.fetch = function (url, options) {
      window.__sent.push({via: "fetch", body: options.body, keepalive: options.keepalive,
                          type: options.headers["Content-Type"]});
      return realFetch(url, options);
    };
  }
})();
"""

SHIM = "export const register = (extend) => window.register(extend);\n"

VARIANT = {"id": "44001", "title": "Blue / M", "sku": "RJ-B-M", "image": {"src": "https://cdn.example/rj.png"},
           "price": {"amount": 120.0, "currencyCode": "USD"},
           "product": {"id": "7001", "title": "Rain jacket", "vendor": "Northwind", "type": "Jackets",
                       "untranslatedTitle": "Rain jacket", "url": "/products/rain-jacket"}}


class HarnessServer:
    """Serves the harness's files (set per test) on 127.0.0.1 at a port of its own."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        files = self.files = {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                found = files.get(urlsplit(self.path).path)
                if found is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                content_type, body = found
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", f"{content_type}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.origin = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def harness_server():
    server = HarnessServer()
    yield server
    server.stop()


def serve(server: HarnessServer, config: dict) -> None:
    server.files.clear()
    server.files.update({"/": ("text/html", HARNESS),
                         "/harness/runtime.js": ("text/javascript", RUNTIME % json.dumps(config)),
                         "/harness/web-pixels-extension.js": ("text/javascript", SHIM),
                         "/extension/index.js": ("text/javascript", PIXEL_JS.read_text())})


@pytest.fixture
def harness(page, live_server, harness_server):
    """Open the harness with this runtime config; returns the pixel's requests to the endpoint."""
    posted = []

    def open_harness(*, beacon=True, customer=None, client_id="browser-abc"):
        serve(harness_server, {"beacon": beacon, "customer": customer, "clientId": client_id,
                               "settings": {"shopKey": KEY, "endpoint": f"{live_server}/pixel/events"}})
        page.on("request", lambda r: posted.append(r) if r.url.endswith("/pixel/events") else None)
        page.goto(f"{harness_server.origin}/")
        page.wait_for_function("window.__subscribed && window.__subscribed().length === 7")
        return posted

    return open_harness


def wait_for_events(count: int, timeout: float = 15.0) -> list[StorefrontEvent]:
    deadline = time.monotonic() + timeout
    while True:
        Session.expire_all()
        rows = Session.scalars(select(StorefrontEvent).order_by(StorefrontEvent.id)).all()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_the_pixel_subscribes_to_the_seven_events_and_batches_a_pages_events(page, db, harness):
    make_shop("alpha.myshopify.com", pixel_key=KEY)
    harness()
    assert page.evaluate("window.__subscribed()") == sorted([
        "page_viewed", "product_viewed", "collection_viewed", "search_submitted", "product_added_to_cart",
        "cart_viewed", "checkout_started"])
    page.evaluate("""() => {
        window.__emit("page_viewed", {});
        window.__emit("product_viewed", {productVariant: %s});
        window.__emit("collection_viewed", {collection: {id: "555", title: "New arrivals", productVariants: [%s]}});
    }""" % (json.dumps(VARIANT), json.dumps(VARIANT)))
    rows = wait_for_events(3)
    assert [r.name for r in sorted(rows, key=lambda r: r.occurred_at)] and len(rows) == 3
    assert len({r.received_at for r in rows}) == 1  # one batch for the page's three events
    sent = page.evaluate("window.__sent")
    assert [s["via"] for s in sent] == ["beacon"]
    body = json.loads(sent[0]["body"])
    assert body["key"] == KEY and body["customer"] is None and len(body["events"]) == 3
    assert "productVariants" not in body["events"][2]["data"]["collection"]  # slimmed
    by_name = {r.name: r for r in rows}
    assert by_name["product_viewed"].product_id == 7001 and by_name["product_viewed"].variant_id == 44001
    assert by_name["collection_viewed"].collection_id == 555
    assert {r.client_id for r in rows} == {"browser-abc"}


def test_a_started_checkout_is_sent_at_once_and_identifies_the_shopper(page, db, harness):
    shop = make_shop("alpha.myshopify.com", pixel_key=KEY)
    subscriber = factories.subscriber(db, shop, phone="+12125550143")
    harness()
    page.evaluate("""() => {
        window.__emit("search_submitted", {searchResult: {query: "rain jacket", productVariants: []}});
        window.__emit("product_added_to_cart", {cartLine: {quantity: 1, merchandise: %s,
            cost: {totalAmount: {amount: 120.0, currencyCode: "USD"}}}});
        window.__emit("checkout_started", {checkout: {token: "c1f2e3", currencyCode: "USD",
            totalPrice: {amount: "120.00", currencyCode: "USD"}, email: "a@example.com", phone: null,
            lineItems: [{quantity: 1, title: "Rain jacket", variant: %s}],
            shippingAddress: {phone: "212-555-0143", countryCode: "US", city: "New York"}}});
    }""" % (json.dumps(VARIANT), json.dumps(VARIANT)))
    rows = wait_for_events(3, timeout=5)  # checkout_started flushes without waiting for the timer
    assert len(rows) == 3 and {r.subscriber_id for r in rows} == {subscriber.id}
    assert Session.scalar(select(StorefrontBrowser.source)) == "checkout"
    cart = next(r for r in rows if r.name == "product_added_to_cart")
    assert cart.quantity == 1 and str(cart.value) == "120.0000"


def test_without_send_beacon_the_pixel_posts_text_plain_with_keepalive_cross_origin(page, db, harness):
    shop = make_shop("alpha.myshopify.com", pixel_key=KEY)
    person = factories.customer(db, shop, shopify_id=6001)
    subscriber = factories.subscriber(db, shop, customer=person)
    posted = harness(beacon=False, customer={"id": "6001", "email": "c@example.com"})
    page.evaluate("() => window.__emit('cart_viewed', {cart: {id: 'c1', totalQuantity: 0, lines: [], "
                  "cost: {totalAmount: {amount: 0, currencyCode: 'USD'}}}})")
    rows = wait_for_events(1)
    assert len(rows) == 1 and rows[0].subscriber_id == subscriber.id and rows[0].customer_id == 6001
    (sent,) = page.evaluate("window.__sent")
    assert sent["via"] == "fetch" and sent["keepalive"] is True and sent["type"] == "text/plain"
    (request,) = posted
    assert request.method == "POST"
    response = request.response()
    assert response.status == 200 and response.headers["access-control-allow-origin"] == "*"
    assert Session.scalar(select(func.count()).select_from(StorefrontBrowser)) == 1


def test_a_pixel_not_yet_connected_sends_nothing(page, db, harness_server):
    serve(harness_server, {"beacon": True, "customer": None, "clientId": "x", "settings": {}})
    page.goto(f"{harness_server.origin}/")
    page.wait_for_function("typeof window.__emit === 'function'")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__subscribed()") == []
    assert wait_for_events(1, timeout=0.5) == []
