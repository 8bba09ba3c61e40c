"""Session-token verification: acceptance and every rejection, through the real merchant routes."""
import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from kinnekt.shopify import session_token
from kinnekt.shopify.session_token import SessionTokenError, verify

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

KEY, SECRET = "test-api-key", "test-api-secret-for-hs256-0123456789abcdef"
SHOP = "alpha.myshopify.com"


def test_valid_token_gives_the_shop():
    claims = verify(session_token.mint(SHOP, KEY, SECRET), KEY, SECRET)
    assert claims["shop"] == SHOP
    assert claims["sub"] == "42"


def test_nbf_slightly_in_future_is_accepted_within_leeway():
    token = session_token.mint(SHOP, KEY, SECRET, now=int(time.time()) + 8)
    assert verify(token, KEY, SECRET)["shop"] == SHOP


def test_host_in_capitals_is_the_same_shop():
    token = session_token.mint(SHOP, KEY, SECRET, iss="https://ALPHA.myshopify.com/admin", dest="https://Alpha.myshopify.com")
    assert verify(token, KEY, SECRET)["shop"] == SHOP


def _none_alg_token() -> str:
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    now = int(time.time())
    claims = {"iss": f"https://{SHOP}/admin", "dest": f"https://{SHOP}", "aud": KEY, "sub": "1",
              "exp": now + 60, "nbf": now, "iat": now, "jti": "x", "sid": "y"}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


REJECTIONS = {
    "bad signature": lambda: session_token.mint(SHOP, KEY, "another-secret-another-secret-123456"),
    "wrong audience": lambda: session_token.mint(SHOP, "other-app", SECRET),
    "expired": lambda: session_token.mint(SHOP, KEY, SECRET, now=int(time.time()) - 120, ttl=60),
    "not yet valid": lambda: session_token.mint(SHOP, KEY, SECRET, now=int(time.time()) + 120),
    "iss/dest mismatch": lambda: session_token.mint(SHOP, KEY, SECRET, iss="https://beta.myshopify.com/admin"),
    "foreign host": lambda: session_token.mint("evil.example.com", KEY, SECRET),
    "host suffix trick": lambda: session_token.mint("alpha.myshopify.com.evil.com", KEY, SECRET),
    "http scheme": lambda: session_token.mint(SHOP, KEY, SECRET, iss=f"http://{SHOP}/admin", dest=f"http://{SHOP}"),
    "iss not admin": lambda: session_token.mint(SHOP, KEY, SECRET, iss=f"https://{SHOP}/"),
    "port": lambda: session_token.mint(SHOP, KEY, SECRET, iss=f"https://{SHOP}:8443/admin", dest=f"https://{SHOP}:8443"),
    "user in host": lambda: session_token.mint(SHOP, KEY, SECRET, iss=f"https://x@{SHOP}/admin", dest=f"https://x@{SHOP}"),
    "alg none": _none_alg_token,
    "HS512": lambda: jwt.encode(jwt.decode(session_token.mint(SHOP, KEY, SECRET), options={"verify_signature": False}),
                                SECRET, algorithm="HS512"),
    "missing exp": lambda: jwt.encode({"iss": f"https://{SHOP}/admin", "dest": f"https://{SHOP}", "aud": KEY,
                                       "sub": "1", "nbf": 0, "iat": 0}, SECRET, algorithm="HS256"),
    "garbage": lambda: "not-a-jwt",
    "empty": lambda: "",
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected(case):
    with pytest.raises(SessionTokenError):
        verify(REJECTIONS[case](), KEY, SECRET)


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_on_htmx_route_with_retry_header(client, db, case):
    response = client.get("/segments/", headers={"Authorization": f"Bearer {REJECTIONS[case]()}",
                                                 "HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"


def test_document_request_without_token_bounces(client, db):
    response = client.get("/subscribers/?shop=alpha.myshopify.com&host=abc&page=2",
                          headers={"Accept": "text/html"})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/auth/session-token-bounce"
    query = parse_qs(location.query)
    assert query["shopify-reload"] == ["/subscribers/?shop=alpha.myshopify.com&host=abc&page=2"]
    assert query["shop"] == ["alpha.myshopify.com"] and query["host"] == ["abc"]


def test_bounce_page_only_reloads_same_origin(client, db):
    page = client.get("/auth/session-token-bounce?shopify-reload=https://evil.example.com/x").get_data(as_text=True)
    assert 'data-reload="/"' in page
    page = client.get("/auth/session-token-bounce?shopify-reload=//evil.example.com/x").get_data(as_text=True)
    assert 'data-reload="/"' in page
    page = client.get("/auth/session-token-bounce?shopify-reload=/campaigns/%3Fa%3D1").get_data(as_text=True)
    assert 'data-reload="/campaigns/?a=1"' in page
    assert 'name="shopify-api-key" content="test-api-key"' in page


def test_document_request_with_id_token_query(client, shop, token_for):
    response = client.get(f"/segments/?shop={shop.domain}&id_token={token_for(shop.domain)}")
    assert response.status_code == 200


def test_shop_comes_from_token_never_from_query(client, shop, other_shop, token_for):
    response = client.get(f"/settings/?shop={other_shop.domain}",
                          headers={"Authorization": f"Bearer {token_for(shop.domain)}"})
    assert response.status_code == 200
    assert f"https://{shop.domain}" in response.headers["Content-Security-Policy"]
    assert other_shop.domain not in response.headers["Content-Security-Policy"]


def test_csp_frame_ancestors(client, auth, shop):
    csp = client.get("/segments/", headers=auth).headers["Content-Security-Policy"]
    assert csp == (f"script-src 'self' https://cdn.shopify.com; object-src 'none'; base-uri 'self'; "
                   f"frame-ancestors https://{shop.domain} https://admin.shopify.com;")


def test_unknown_shop_with_valid_token_is_registered(app, client, db, token_for, fake_shopify):
    from kinnekt import shops
    from kinnekt.db import Session
    fake_shopify.shop("gamma.myshopify.com").name = "Gamma Goods"
    response = client.get("/segments/", headers={"Authorization": f"Bearer {token_for('gamma.myshopify.com')}"})
    assert response.status_code == 200
    assert len(fake_shopify.calls("token:urn:ietf:params:oauth:grant-type:token-exchange")) == 1
    assert app.extensions["kinnekt_queue"].drain(30)  # the install job reads the shop from Shopify
    Session.remove()
    shop = shops.by_domain("gamma.myshopify.com")
    assert shop is not None and shop.installed and not shop.needs_reauth and shop.access_token_enc
    assert shop.name == "Gamma Goods"


def test_api_request_without_token_is_401_json(client, db):
    response = client.get("/segments/", headers={"Accept": "application/json"})
    assert response.status_code == 401


def _demo_client(database_url, **overrides):
    from kinnekt import create_app
    from kinnekt.config import config_for_tests
    return create_app(config_for_tests(DATABASE_URL=database_url, DEMO_MODE=True, **overrides)).test_client()


def test_demo_mode_skips_the_token_only_without_a_real_secret(database_url, db):
    from tests.conftest import make_shop
    make_shop("kinnekt-demo.myshopify.com")
    with_secret = _demo_client(database_url)  # the test config carries a real app secret
    assert with_secret.get("/segments/", headers={"HX-Request": "true"}).status_code == 401
    without_secret = _demo_client(database_url, SHOPIFY_API_SECRET="")
    response = without_secret.get("/segments/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and 'id="segments-page"' in response.get_data(as_text=True)


def test_demo_mode_without_a_seeded_store_says_what_to_run(database_url, db):
    response = _demo_client(database_url, SHOPIFY_API_SECRET="").get("/segments/")
    assert response.status_code == 503
    assert "flask --app app demo seed" in response.get_data(as_text=True)
