"""Authorization-code fallback: query HMAC (documented vector, ShopifyAPI agreement), shop check, timestamp,
state nonce, and the install/callback endpoints against the fake Shopify."""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import shopify
from hypothesis import given, settings, strategies as st
from werkzeug.datastructures import MultiDict

from kinnekt.db import Session
from kinnekt.models import Shop
from kinnekt.shopify import oauth

DOC_QUERY = ("code=0907a61c0c8d55e99db179b68161bc00"
             "&hmac=700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf"
             "&shop=some-shop.myshopify.com&state=0.6784241404160823&timestamp=1337178173")
SHOP = "delta.myshopify.com"


def _multidict(query: str) -> MultiDict:
    return MultiDict([(k, v) for k, values in parse_qs(query, keep_blank_values=True).items() for v in values])


def test_documented_vector():
    assert oauth.valid_query_hmac(_multidict(DOC_QUERY), "hush")
    assert not oauth.valid_query_hmac(_multidict(DOC_QUERY.replace("some-shop", "other-shop")), "hush")
    assert not oauth.valid_query_hmac(_multidict(DOC_QUERY), "not-hush")
    assert not oauth.valid_query_hmac(_multidict(DOC_QUERY.replace("&hmac=700e", "&x=700e")), "hush")


keys = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=8).filter(
    lambda k: k != "hmac" and not k.endswith("[]"))
values = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_agrees_with_shopifyapi(params):
    original = shopify.Session.secret
    shopify.Session.secret = "hush"
    try:
        expected = shopify.Session.calculate_hmac(params)
    finally:
        shopify.Session.secret = original
    assert oauth.query_hmac(params, "hush") == expected


def test_array_parameters_are_signed_as_shopify_signs_them():
    params = MultiDict([("ids[]", "1"), ("ids[]", "2"), ("shop", "a.myshopify.com")])
    assert oauth.signed_message(params) == 'ids=["1", "2"]&shop=a.myshopify.com'


@pytest.mark.parametrize("offset, fresh", [(0, True), (-80, True), (80, True), (-3600, False), (3600, False)])
def test_timestamp_freshness(offset, fresh):
    now = 1_800_000_000
    assert oauth.fresh_timestamp(str(now + offset), now=now) is fresh


@pytest.mark.parametrize("value", ["", None, "abc", "1.5e9"])
def test_unreadable_timestamps_are_not_fresh(value):
    assert oauth.fresh_timestamp(value) is False


@pytest.mark.parametrize("bad", ["evil.com", "some-shop.myshopify.com.evil.com", "some-shop.myshopify.com/",
                                 "https://some-shop.myshopify.com", "-shop.myshopify.com", "shop", ""])
def test_shop_check_is_anchored(bad):
    with pytest.raises(oauth.OAuthRefused):
        oauth.checked_shop(bad)


# --- endpoints ----------------------------------------------------------------------------------------

def _sign(params: dict, secret: str) -> dict:
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {**params, "hmac": hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()}


def _start(client, app, shop=SHOP):
    response = client.get("/auth/install?" + urlencode(_sign({"shop": shop, "timestamp": str(int(time.time()))},
                                                             app.config["SHOPIFY_API_SECRET"])))
    assert response.status_code == 302
    return response


def test_install_redirects_to_the_grant_screen_with_a_state_cookie(app, client, db):
    response = _start(client, app)
    target = urlsplit(response.headers["Location"])
    assert (target.scheme, target.netloc, target.path) == ("https", SHOP, "/admin/oauth/authorize")
    query = parse_qs(target.query)
    assert query["client_id"] == ["test-api-key"]
    assert query["redirect_uri"] == ["https://kinnekt.test/auth/callback"]
    assert query["scope"] == [app.config["SCOPES"]] and "grant_options[]" not in query  # offline token
    cookie = response.headers["Set-Cookie"]
    assert "kinnekt_oauth_state=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" in cookie and "Path=/auth" in cookie
    assert query["state"][0] not in cookie  # the cookie is signed, not the bare nonce


@pytest.mark.parametrize("query", ["shop=evil.com", "shop=delta.myshopify.com.evil.com", "",
                                   "shop=delta.myshopify.com&timestamp=1&hmac=00"])
def test_install_refuses_bad_requests(client, db, query):
    response = client.get("/auth/install?" + query, headers={"Accept": "text/html"})
    assert response.status_code == 400 and "Set-Cookie" not in response.headers


def _callback(client, app, fake, *, state=None, shop=SHOP, code=None, timestamp=None, secret=None, tamper=False):
    start = _start(client, app)
    real_state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    params = {"code": code or fake.issue_code(shop), "host": "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvZGVsdGE",
              "shop": shop, "state": state or real_state, "timestamp": str(timestamp or int(time.time()))}
    signed = _sign(params, secret or app.config["SHOPIFY_API_SECRET"])
    if tamper:
        signed["host"] = "dGFtcGVyZWQ"
    return client.get("/auth/callback?" + urlencode(signed), headers={"Accept": "text/html"})


def test_callback_installs_the_shop(app, client, db, fake_shopify):
    fake_shopify.shop(SHOP).name = "Delta Outdoor"
    response = _callback(client, app, fake_shopify)
    assert response.status_code == 302
    assert response.headers["Location"] == f"https://{SHOP}/admin/apps/test-api-key"
    assert "kinnekt_oauth_state=;" in response.headers["Set-Cookie"]  # used once
    [call] = fake_shopify.calls("token:authorization_code")
    assert call["body"]["expiring"] == "1" and set(call["body"]) == {"client_id", "client_secret", "code", "expiring"}
    app.extensions["kinnekt_queue"].drain(30)
    Session.remove()
    shop = Session.query(Shop).filter_by(domain=SHOP).one()
    assert shop.installed and shop.token_kind == "expiring" and shop.refresh_token_enc
    assert shop.name == "Delta Outdoor"


@pytest.mark.parametrize("case, status", [
    ("tampered", 400), ("wrong secret", 400), ("stale", 400), ("state mismatch", 403), ("bad shop", 400),
])
def test_callback_refuses_and_stores_nothing(app, client, db, fake_shopify, case, status):
    kwargs = {"tampered": {"tamper": True}, "wrong secret": {"secret": "another-secret"},
              "stale": {"timestamp": int(time.time()) - 3600}, "state mismatch": {"state": "forged-state"},
              "bad shop": {"shop": "delta.myshopify.com.evil.com"}}[case]
    response = _callback(client, app, fake_shopify, **kwargs)
    assert response.status_code == status
    assert fake_shopify.calls("token:authorization_code") == []
    assert Session.query(Shop).count() == 0


def test_callback_without_the_state_cookie_is_refused(app, client, db, fake_shopify):
    start = _start(client, app)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    other_browser = app.test_client()
    params = _sign({"code": fake_shopify.issue_code(SHOP), "shop": SHOP, "state": state,
                    "timestamp": str(int(time.time()))}, app.config["SHOPIFY_API_SECRET"])
    response = other_browser.get("/auth/callback?" + urlencode(params), headers={"Accept": "text/html"})
    assert response.status_code == 403
    assert Session.query(Shop).count() == 0


def test_callback_for_another_shop_than_the_install_is_refused(app, client, db, fake_shopify):
    _start(client, app, shop="echo.myshopify.com")
    params = _sign({"code": fake_shopify.issue_code(SHOP), "shop": SHOP, "state": "x",
                    "timestamp": str(int(time.time()))}, app.config["SHOPIFY_API_SECRET"])
    assert client.get("/auth/callback?" + urlencode(params)).status_code == 403


def test_a_used_code_is_refused_by_shopify(app, client, db, fake_shopify):
    code = fake_shopify.issue_code(SHOP)
    assert _callback(client, app, fake_shopify, code=code).status_code == 302
    assert _callback(client, app, fake_shopify, code=code).status_code == 400


@pytest.mark.parametrize("hmac_value", ["é", "\u00ff" * 64, "２" * 64])
def test_a_non_ascii_hmac_is_refused_not_a_crash(client, db, hmac_value):
    query = urlencode({"shop": SHOP, "timestamp": str(int(time.time())), "hmac": hmac_value})
    for path in ("/auth/install", "/auth/callback"):
        response = client.get(f"{path}?{query}", headers={"Accept": "text/html"})
        assert response.status_code == 400 and "Set-Cookie" not in response.headers
    assert not oauth.valid_query_hmac({"shop": SHOP, "hmac": hmac_value}, "hush")


@pytest.mark.parametrize("state", ["é", "état-forgé"])
def test_a_non_ascii_state_is_refused_not_a_crash(app, client, db, fake_shopify, state):
    response = _callback(client, app, fake_shopify, state=state)
    assert response.status_code == 403
    assert fake_shopify.calls("token:authorization_code") == []
    assert not oauth.same_state("abc", state)
