"""Shopify URLs (token endpoint, GraphQL Admin, bulk downloads), honouring SHOPIFY_BASE_URL_OVERRIDE.

With the override set (local fakes in tests, scripted end-to-end runs) every call goes to
`<override>/<shop domain>/admin/...`, so one fake serves many shops, and bulk result downloads go to
`<override>/<path of Shopify's URL>`.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app

from kinnekt.shopify.session_token import is_shop_domain


class BadShopDomain(ValueError):
    """Not a `<name>.myshopify.com` host."""


def checked_domain(domain: str) -> str:
    """The lower-cased shop domain, or BadShopDomain (anchored check before any URL is built)."""
    value = (domain or "").strip().lower()
    if not is_shop_domain(value):
        raise BadShopDomain(f"{domain!r} is not a <name>.myshopify.com shop domain")
    return value


def _override() -> str:
    return (current_app.config.get("SHOPIFY_BASE_URL_OVERRIDE") or "").rstrip("/")


def shop_base(domain: str) -> str:
    """`https://<shop>` or, with the override, `<override>/<shop>`."""
    domain = checked_domain(domain)
    override = _override()
    return f"{override}/{domain}" if override else f"https://{domain}"


def token_url(domain: str) -> str:
    """The OAuth token endpoint (token exchange, refresh, authorization code)."""
    return f"{shop_base(domain)}/admin/oauth/access_token"


def authorize_url(domain: str) -> str:
    """Where a merchant grants the app access (authorization-code grant).

    Always Shopify's real URL: this is a browser redirect, not a call we make.
    """
    return f"https://{checked_domain(domain)}/admin/oauth/authorize"


def graphql_url(domain: str) -> str:
    """The GraphQL Admin endpoint at the pinned API version."""
    version = current_app.config.get("SHOPIFY_API_VERSION") or "2026-10"
    return f"{shop_base(domain)}/admin/api/{version}/graphql.json"


def download_url(url: str) -> str:
    """A bulk result URL as given by Shopify, or the same path on the override host."""
    override = _override()
    if not override:
        return url
    parts = urlsplit(url)
    return override + parts.path + (f"?{parts.query}" if parts.query else "")
