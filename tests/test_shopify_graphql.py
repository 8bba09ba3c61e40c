"""The GraphQL Admin client against the fake Shopify: pinned version, cost-based throttling, retries, 401 refresh."""
from __future__ import annotations

import pytest

from kinnekt import defaults
from kinnekt.shopify import endpoints, graphql
from kinnekt.shopify.graphql import AdminClient
from tests.conftest import make_shop
from tests.fake_shopify import connect

SHOP_QUERY = "query KinnektShop { shop { name } }"


class Sleeps(list):
    """Records the waits the client asks for instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


def _client(fake, domain="gql.myshopify.com", **kw):
    token = fake.static_token(domain)
    sleeps = Sleeps()
    return AdminClient(domain, token=lambda: token, sleep=sleeps, **kw), sleeps, token


def test_query_sends_the_token_to_the_pinned_version(app, fake_shopify):
    with app.app_context():
        client, sleeps, token = _client(fake_shopify)
        assert client.url.endswith("/gql.myshopify.com/admin/api/2026-10/graphql.json")
        data = client.query(SHOP_QUERY)
    assert data["shop"]["name"] == "Fake Store"
    [call] = fake_shopify.calls("graphql:KinnektShop")
    assert call["token"] == token
    assert client.last_cost["throttleStatus"]["maximumAvailable"] == 2000.0
    assert sleeps == []


def test_another_api_version_is_not_served(app, fake_shopify, monkeypatch):
    monkeypatch.setitem(app.config, "SHOPIFY_API_VERSION", "2024-01")
    with app.app_context():
        client, _sleeps, _token = _client(fake_shopify)
        with pytest.raises(graphql.GraphQLQueryError):
            client.query(SHOP_QUERY)


def test_throttled_reply_waits_for_the_missing_points_and_retries(app, fake_shopify):
    fake_shopify.fail_next("throttled", 2)
    with app.app_context():
        client, sleeps, _token = _client(fake_shopify)
        assert client.query(SHOP_QUERY)["shop"]["name"] == "Fake Store"
    assert len(fake_shopify.calls("graphql:KinnektShop")) == 3
    # The fake reports cost 12 with 2 points left at 100 points/s: 0.1 s per THROTTLED reply ...
    assert sleeps[0] == pytest.approx(0.1, abs=0.01)
    # ... and before each next call the client waits until the bucket holds its reserve again.
    assert all(s > 0 for s in sleeps) and len(sleeps) >= 3


def test_a_low_bucket_delays_the_next_call(app, fake_shopify):
    fake_shopify.bucket_available = 10.0
    with app.app_context():
        client, sleeps, _token = _client(fake_shopify)
        client.query(SHOP_QUERY)
        assert sleeps == []  # nothing known before the first reply
        client.query(SHOP_QUERY)
    reserve = defaults.SHOPIFY_THROTTLE_RESERVE_POINTS
    assert len(sleeps) == 1 and 0 < sleeps[0] <= (reserve - 10.0) / 100.0


def test_still_throttled_after_every_retry_is_a_clear_error(app, fake_shopify):
    fake_shopify.fail_next("throttled", 10)
    with app.app_context():
        client, sleeps, _token = _client(fake_shopify, max_retries=2)
        with pytest.raises(graphql.ShopifyThrottled):
            client.query(SHOP_QUERY)
    assert len(fake_shopify.calls("graphql:KinnektShop")) == 3


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_server_errors_are_retried_with_backoff(app, fake_shopify, status):
    fake_shopify.fail_next(status, 2)
    with app.app_context():
        client, sleeps, _token = _client(fake_shopify)
        assert client.query(SHOP_QUERY)["shop"]["name"] == "Fake Store"
    assert len(fake_shopify.calls("graphql:KinnektShop")) == 3
    assert len(sleeps) == 2 and 0 < sleeps[0] <= sleeps[1]  # exponential backoff (with jitter)


def test_server_errors_beyond_the_retries_raise_unavailable(app, fake_shopify):
    fake_shopify.fail_next("503", 10)
    with app.app_context():
        client, sleeps, _token = _client(fake_shopify, max_retries=3)
        with pytest.raises(graphql.ShopifyUnavailable):
            client.query(SHOP_QUERY)
    assert len(sleeps) == 3


def test_unreachable_shopify_is_unavailable(app, monkeypatch):
    import socket
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(app.config, "SHOPIFY_BASE_URL_OVERRIDE", f"http://127.0.0.1:{port}")
    sleeps = Sleeps()
    with app.app_context():
        client = AdminClient("gql.myshopify.com", token=lambda: "x", sleep=sleeps, max_retries=1)
        with pytest.raises(graphql.ShopifyUnavailable):
            client.query(SHOP_QUERY)
    assert len(sleeps) == 1


def test_query_errors_are_raised_with_shopify_s_message(app, fake_shopify):
    with app.app_context():
        client, _sleeps, _token = _client(fake_shopify)
        with pytest.raises(graphql.GraphQLQueryError) as error:
            client.query("query NoSuchOperation { shop { name } }")
    assert "NoSuchOperation" in str(error.value)


def test_forbidden_is_an_auth_error_without_retries(app, fake_shopify):
    fake_shopify.fail_next("403")
    with app.app_context():
        client, sleeps, _token = _client(fake_shopify)
        with pytest.raises(graphql.ShopifyAuthError):
            client.query(SHOP_QUERY)
    assert sleeps == [] and len(fake_shopify.calls("graphql:KinnektShop")) == 1


def test_401_refreshes_the_token_once_and_retries(db, fake_shopify):
    shop = make_shop("refresh.myshopify.com")
    first = connect(fake_shopify, shop)
    fake_shopify.expire_access_tokens(shop.domain)  # Shopify stopped accepting it before its expiry
    data = graphql.client_for(shop).query(SHOP_QUERY)
    assert data["shop"]["name"] == "Fake Store"
    calls = fake_shopify.calls("graphql:KinnektShop")
    assert [c["token"] == first.access_token for c in calls] == [True, False]
    assert len(fake_shopify.calls("token:refresh_token")) == 1


def test_401_after_a_refresh_is_an_auth_error(db, fake_shopify):
    shop = make_shop("refresh.myshopify.com")
    connect(fake_shopify, shop)
    fake_shopify.fail_next("401", 2)
    with pytest.raises(graphql.ShopifyAuthError):
        graphql.client_for(shop).query(SHOP_QUERY)
    assert len(fake_shopify.calls("token:refresh_token")) == 1
    assert len(fake_shopify.calls("graphql:KinnektShop")) == 2


def test_a_user_errors_payload_raises(app):
    with pytest.raises(graphql.UserErrors) as error:
        graphql.raise_user_errors({"userErrors": [{"field": ["basicCodeDiscount", "code"], "message": "taken"}]})
    assert "basicCodeDiscount.code: taken" in str(error.value)
    assert graphql.raise_user_errors({"userErrors": [], "x": 1}) == {"userErrors": [], "x": 1}


def test_pages_through_a_connection(db, fake_shopify):
    shop = make_shop("pages.myshopify.com")
    connect(fake_shopify, shop)
    for n in range(7):
        fake_shopify.shop(shop.domain).add_product(f"Product {n}")
    from kinnekt.shopify.reconcile import PRODUCTS
    nodes = list(graphql.client_for(shop).nodes(PRODUCTS, {"query": ""}, "products", page_size=3))
    assert [n["title"] for n in nodes] == [f"Product {n}" for n in range(7)]
    assert len(fake_shopify.calls("graphql:KinnektReconcileProducts")) == 3


def test_shop_domains_are_checked_before_any_url_is_built(app):
    with app.app_context():
        for bad in ("evil.com", "alpha.myshopify.com.evil.com", "https://alpha.myshopify.com", "a b.myshopify.com"):
            with pytest.raises(endpoints.BadShopDomain):
                AdminClient(bad, token=lambda: "x")


def test_override_routes_every_call_per_shop(app, monkeypatch):
    monkeypatch.setitem(app.config, "SHOPIFY_BASE_URL_OVERRIDE", "http://127.0.0.1:9/")
    with app.app_context():
        assert endpoints.token_url("a.myshopify.com") == "http://127.0.0.1:9/a.myshopify.com/admin/oauth/access_token"
        assert endpoints.graphql_url("b.myshopify.com") == "http://127.0.0.1:9/b.myshopify.com/admin/api/2026-10/graphql.json"
        assert (endpoints.download_url("https://storage.googleapis.com/bucket/x.jsonl?sig=1")
                == "http://127.0.0.1:9/bucket/x.jsonl?sig=1")
    monkeypatch.setitem(app.config, "SHOPIFY_BASE_URL_OVERRIDE", "")
    with app.app_context():
        assert endpoints.graphql_url("b.myshopify.com") == "https://b.myshopify.com/admin/api/2026-10/graphql.json"
        assert endpoints.download_url("https://storage.googleapis.com/x") == "https://storage.googleapis.com/x"


def test_the_http_client_has_timeouts(app):
    timeout = graphql.http_client().timeout
    assert timeout.connect == defaults.SHOPIFY_CONNECT_TIMEOUT_SECONDS
    assert timeout.read == defaults.SHOPIFY_READ_TIMEOUT_SECONDS


def test_gids(app):
    assert graphql.gid_to_id("gid://shopify/Product/8123456789") == 8123456789
    assert graphql.gid_to_id(None) is None and graphql.gid_to_id("gid://shopify/Product/x") is None
    # "²".isdigit() is true but int("²") raises; an id past a BIGINT would fail in the database
    assert graphql.gid_to_id("gid://shopify/Product/²") is None
    assert graphql.gid_to_id(f"gid://shopify/Product/{2**63}") is None


def test_a_shopify_id_from_a_payload_is_ascii_digits_within_a_bigint():
    from kinnekt.shopify.ingest.rest import shopify_id
    assert shopify_id(123) == 123 and shopify_id("gid://shopify/Order/123") == 123 and shopify_id(" 45 ") == 45
    for hostile in ("²", "gid://shopify/Order/²", "١٢", 2**63, str(2**63), -5, "0", True, "1e3", ""):
        assert shopify_id(hostile) is None, hostile
    assert graphql.gid("Collection", 5) == "gid://shopify/Collection/5"
