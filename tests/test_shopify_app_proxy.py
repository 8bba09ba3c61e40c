"""Shopify app proxy signature: Shopify's documented vectors, tampering, staleness, shops, and the client IP."""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import pytest

from kinnekt.shopify import app_proxy
from kinnekt.shopify.app_proxy import ProxyRequestError, client_ip, verify
from tests.conftest import make_shop

DOC_SECRET = "hush"
DOC_LOGGED_IN = ("extra=1&extra=2&shop=shop-name.myshopify.com&logged_in_customer_id=1"
                 "&path_prefix=%2Fapps%2Fawesome_reviews&timestamp=1317327555"
                 "&signature=4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb")
DOC_ANONYMOUS = (DOC_LOGGED_IN.replace("logged_in_customer_id=1", "logged_in_customer_id=")
                 .replace("4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb",
                          "e072b6d7e6622d85912a5214b860d3100dc1e73d9bc29f43796ac8c9ff8093cb"))
DOC_TIME = 1317327555


def shopify_signs(pairs: list[tuple[str, str]], secret: str) -> str:
    """What Shopify's proxy does, written out independently of the app: merge, sort, join with no separator."""
    merged: dict[str, list[str]] = {}
    for key, value in pairs:
        merged.setdefault(key, []).append(value)
    message = "".join(f"{key}={','.join(merged[key])}" for key in sorted(merged))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def proxy_query(shop_domain: str, secret: str, *, extra: list[tuple[str, str]] = (), timestamp: int | None = None,
                customer_id: str = "") -> str:
    """The query string Shopify appends when it forwards /apps/kinnekt/... for `shop_domain`."""
    pairs = [*extra, ("shop", shop_domain), ("logged_in_customer_id", customer_id),
             ("path_prefix", "/apps/kinnekt"), ("timestamp", str(int(time.time()) if timestamp is None else timestamp))]
    return urlencode(pairs + [("signature", shopify_signs(pairs, secret))])


# --- verify -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, customer", [(DOC_LOGGED_IN, "1"), (DOC_ANONYMOUS, "")])
def test_shopify_documented_vectors_verify(query, customer):
    params = verify(query, DOC_SECRET, now=DOC_TIME)
    assert params == {"extra": "1,2", "shop": "shop-name.myshopify.com", "logged_in_customer_id": customer,
                      "path_prefix": "/apps/awesome_reviews", "timestamp": str(DOC_TIME)}


def test_the_signed_message_has_no_separator_between_pairs():
    pairs = [("b", "2"), ("a", "1"), ("a", "3"), ("signature", "x")]
    assert app_proxy.message_to_sign(pairs) == "a=1,3b=2"


def test_the_order_of_different_keys_does_not_matter():
    parts = DOC_LOGGED_IN.split("&")
    reordered = "&".join([p for p in parts if not p.startswith("extra")] + [p for p in parts if p.startswith("extra")])
    assert verify(reordered, DOC_SECRET, now=DOC_TIME)["shop"] == "shop-name.myshopify.com"


@pytest.mark.parametrize("tamper", [
    lambda q: q.replace("logged_in_customer_id=1", "logged_in_customer_id=2"),
    lambda q: q.replace("shop-name.myshopify.com", "other-shop.myshopify.com"),
    lambda q: q + "&extra=3",
    lambda q: q.replace("signature=4c68", "signature=5c68"),
    lambda q: q.replace("&extra=2", ""),
])
def test_any_change_to_the_query_breaks_the_signature(tamper):
    with pytest.raises(ProxyRequestError, match="bad signature"):
        verify(tamper(DOC_LOGGED_IN), DOC_SECRET, now=DOC_TIME)


def test_wrong_secret_is_refused():
    with pytest.raises(ProxyRequestError, match="bad signature"):
        verify(DOC_LOGGED_IN, "not-hush", now=DOC_TIME)


def test_missing_signature_is_refused():
    unsigned = DOC_LOGGED_IN.rsplit("&signature=", 1)[0]
    with pytest.raises(ProxyRequestError, match="missing signature"):
        verify(unsigned, DOC_SECRET, now=DOC_TIME)
    with pytest.raises(ProxyRequestError, match="missing signature"):
        verify("", DOC_SECRET, now=DOC_TIME)


@pytest.mark.parametrize("skew, ok", [(0, True), (90, True), (-90, True), (91, False), (-91, False), (3600, False)])
def test_timestamp_must_be_within_90_seconds(skew, ok):
    if ok:
        assert verify(DOC_LOGGED_IN, DOC_SECRET, now=DOC_TIME + skew)
    else:
        with pytest.raises(ProxyRequestError, match="stale timestamp"):
            verify(DOC_LOGGED_IN, DOC_SECRET, now=DOC_TIME + skew)


def test_a_repeated_shop_or_timestamp_is_refused_even_when_signed():
    pairs = [("shop", "a.myshopify.com"), ("shop", "b.myshopify.com"), ("timestamp", str(DOC_TIME))]
    query = urlencode(pairs + [("signature", shopify_signs(pairs, DOC_SECRET))])
    with pytest.raises(ProxyRequestError, match="repeated shop"):
        verify(query, DOC_SECRET, now=DOC_TIME)


@pytest.mark.parametrize("shop", ["evil.com", "shop.myshopify.com.evil.com", "shop.myshopify.com/x", "",
                                  "-a.myshopify.com"])
def test_shop_must_be_an_anchored_myshopify_domain(shop):
    pairs = [("shop", shop), ("timestamp", str(DOC_TIME))]
    query = urlencode(pairs + [("signature", shopify_signs(pairs, DOC_SECRET))])
    with pytest.raises(ProxyRequestError, match="myshopify"):
        verify(query, DOC_SECRET, now=DOC_TIME)


def test_missing_timestamp_is_refused():
    pairs = [("shop", "a.myshopify.com")]
    query = urlencode(pairs + [("signature", shopify_signs(pairs, DOC_SECRET))])
    with pytest.raises(ProxyRequestError, match="timestamp"):
        verify(query, DOC_SECRET, now=DOC_TIME)


def test_no_secret_configured_refuses_everything():
    with pytest.raises(ProxyRequestError, match="not configured"):
        verify(DOC_LOGGED_IN, "", now=DOC_TIME)


# --- the shop ---------------------------------------------------------------------------------------

def test_installed_shop_is_found_and_others_are_refused(db, shop):
    assert app_proxy.installed_shop(db, {"shop": "ALPHA.myshopify.com"}).id == shop.id
    with pytest.raises(ProxyRequestError, match="not installed"):
        app_proxy.installed_shop(db, {"shop": "unknown.myshopify.com"})
    gone = make_shop("gone.myshopify.com")
    gone.uninstalled_at = gone.installed_at
    db.commit()
    with pytest.raises(ProxyRequestError, match="not installed"):
        app_proxy.installed_shop(db, {"shop": "gone.myshopify.com"})


# --- the shopper's IP -------------------------------------------------------------------------------

@pytest.mark.parametrize("forwarded, remote, own, expected", [
    ("203.0.113.7", "23.227.38.1", 0, "203.0.113.7"),          # Shopify -> app
    ("1.2.3.4, 203.0.113.7", "23.227.38.1", 0, "203.0.113.7"),  # the browser sent its own X-Forwarded-For
    ("203.0.113.7, 23.227.38.1", "10.0.0.2", 1, "203.0.113.7"),  # Shopify -> our load balancer -> app
    ("2001:db8::1", "23.227.38.1", 0, "2001:db8::1"),
    ("not-an-ip", "23.227.38.1", 0, None),
    ("", "23.227.38.1", 0, "23.227.38.1"),
    ("203.0.113.7", "10.0.0.2", 1, None),  # fewer hops than configured: cannot tell
])
def test_client_ip_is_the_address_shopify_saw(forwarded, remote, own, expected):
    assert client_ip(forwarded, remote, own) == expected


# --- the endpoints ----------------------------------------------------------------------------------

def test_popup_endpoints_refuse_unsigned_stale_and_foreign_requests(app, client, db, shop):
    secret = app.config["SHOPIFY_API_SECRET"]
    shop.popup_settings = {"enabled": True}
    db.commit()
    good = proxy_query(shop.domain, secret)
    assert client.get(f"/proxy/popup?{good}").status_code == 200
    refused = [
        "",                                                        # missing
        good.replace("signature=", "signature=0"),                 # bad
        proxy_query(shop.domain, "another-apps-secret"),           # signed by someone else
        proxy_query(shop.domain, secret, timestamp=int(time.time()) - 600),  # stale (a replay)
        proxy_query("unknown.myshopify.com", secret),              # not installed
        good.replace("alpha.myshopify.com", "beta.myshopify.com"),  # other shop in a signed query
    ]
    for query in refused:
        response = client.get(f"/proxy/popup?{query}")
        assert response.status_code == 401, query
        assert response.json["ok"] is False
        assert client.post(f"/proxy/popup?{query}", data={"phone": "+16502530000", "consent": "1"}).status_code == 401


def test_scripts_are_served_without_a_signature(client):
    script = client.get("/proxy/popup.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert b"/popup" in script.data
    style = client.get("/proxy/popup.css")
    assert style.status_code == 200 and style.mimetype == "text/css" and b".kn-popup" in style.data
