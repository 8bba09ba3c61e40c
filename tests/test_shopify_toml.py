"""shopify.app.toml and shopify.web.toml follow the Shopify CLI's schema and the issue's rules."""
from __future__ import annotations

import re
import tomllib
from urllib.parse import urlsplit

import pytest

from kinnekt.config import PROJECT_ROOT, Config

APP = tomllib.loads((PROJECT_ROOT / "shopify.app.toml").read_text())
WEB = tomllib.loads((PROJECT_ROOT / "shopify.web.toml").read_text())
HOST = urlsplit(APP["application_url"]).netloc
SUBSCRIPTIONS = APP["webhooks"]["subscriptions"]

REQUIRED_TOPICS = {
    "app/uninstalled", "app/scopes_update", "bulk_operations/finish",
    "app_subscriptions/update", "app_subscriptions/approaching_capped_amount",
    "customers/create", "customers/update", "customers/delete", "customers_marketing_consent/update",
    "orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled",
    "orders/partially_fulfilled", "orders/delete",
    "products/create", "products/update", "products/delete",
    "collections/create", "collections/update", "collections/delete",
    "checkouts/create", "checkouts/update",
}
COMPLIANCE_TOPICS = {"customers/data_request", "customers/redact", "shop/redact"}


def test_app_identity():
    assert re.fullmatch(r"[0-9a-f]{32}", APP["client_id"])
    assert 0 < len(APP["name"]) <= 30
    assert APP["application_url"].startswith("https://")
    assert APP["embedded"] is True


def test_scopes_cover_what_kinnekt_uses_and_match_the_config():
    scopes = APP["access_scopes"]["scopes"].split(",")
    assert {"read_customers", "write_customers", "read_orders", "read_all_orders", "read_products",
            "read_discounts", "write_discounts", "write_app_proxy", "read_themes", "write_pixels",
            "read_customer_events"} <= set(scopes)
    assert APP["access_scopes"]["use_legacy_install_flow"] is False  # Shopify-managed install
    assert scopes == Config.SCOPES.split(",")


def test_the_app_handle_is_the_one_the_theme_embed_is_looked_up_by():
    assert APP["handle"] == Config.SHOPIFY_APP_HANDLE


def test_the_authorization_code_callback_is_listed():
    assert f"https://{HOST}/auth/callback" in APP["auth"]["redirect_urls"]


def test_webhooks_use_the_pinned_version():
    assert APP["webhooks"]["api_version"] == Config.SHOPIFY_API_VERSION == "2026-10"


@pytest.mark.parametrize("index", range(len(SUBSCRIPTIONS)))
def test_every_subscription_has_an_absolute_https_uri_on_the_app(index):
    uri = SUBSCRIPTIONS[index]["uri"]
    parts = urlsplit(uri)
    assert parts.scheme == "https" and parts.netloc == HOST and parts.path.startswith("/")


def test_compliance_topics_each_in_a_block_of_their_own():
    blocks = [s for s in SUBSCRIPTIONS if "compliance_topics" in s]
    assert all("topics" not in s for s in blocks)
    assert all(len(s["compliance_topics"]) == 1 for s in blocks)
    assert {s["compliance_topics"][0] for s in blocks} == COMPLIANCE_TOPICS
    assert "privacy_compliance" not in APP["webhooks"]  # not the legacy form as well


def test_every_topic_kinnekt_handles_is_subscribed_once():
    topics = [t for s in SUBSCRIPTIONS for t in s.get("topics", [])]
    assert len(topics) == len(set(topics))
    assert REQUIRED_TOPICS <= set(topics)
    assert all(re.fullmatch(r"[a-z_]+/[a-z_]+", t) for t in topics)


def test_every_webhook_uri_is_a_post_route_of_the_app(app):
    routes = {rule.rule: rule.methods for rule in app.url_map.iter_rules()}
    for subscription in SUBSCRIPTIONS:
        path = urlsplit(subscription["uri"]).path
        assert path in routes and "POST" in routes[path], path


def test_the_app_proxy_for_the_storefront_signup():
    proxy = APP["app_proxy"]
    assert urlsplit(proxy["url"]).scheme == "https" and urlsplit(proxy["url"]).netloc == HOST
    assert proxy["prefix"] in {"apps", "a", "community", "tools"}
    assert re.fullmatch(r"[a-z0-9-]+", proxy["subpath"])


def test_web_toml_starts_the_app_and_worker():
    assert {"frontend", "backend"} <= set(WEB["roles"]) <= {"frontend", "backend", "background"}
    dev = WEB["commands"]["dev"]
    # The CLI splits the command on spaces (and `&&`) and runs it without a shell: no quotes, no pipes.
    assert not re.search(r"[\"'|;$]", dev)
    script = PROJECT_ROOT / dev.split()[-1]
    assert dev.split()[0] == "sh" and script.exists()
    text = script.read_text()
    assert "SHOPIFY_APP_URL=${SHOPIFY_APP_URL:-${APP_URL:-" in text  # the CLI passes APP_URL, we read SHOPIFY_APP_URL
    assert '--port "$PORT"' in text and "-m workers" in text and "rq\" cron" in text
    if "port" in WEB:
        assert isinstance(WEB["port"], int) and 0 < WEB["port"] < 65536
    assert WEB.get("auth_callback_path", "/auth/callback") == "/auth/callback"
