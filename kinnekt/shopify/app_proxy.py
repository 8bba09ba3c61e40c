"""Shopify app proxy requests: verify the `signature` Shopify adds, the timestamp and the shop it names.

Shopify forwards `https://{shop}/apps/kinnekt/<path>?<query>` to `{app}/proxy/<path>?<query>&shop=…
&logged_in_customer_id=…&path_prefix=…&timestamp=…&signature=…`. The signature is the hex
HMAC-SHA256 (app secret) of the query without `signature`: repeated keys' values joined by ",", the
pairs sorted by key and written `key=value` with no separator between pairs (shopify.dev
"Authenticate app proxies"). Only the query string is signed, never a POST body.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.models import Shop
from kinnekt.shopify.session_token import is_shop_domain

SINGLE_VALUED = ("shop", "timestamp", "signature")
"""Keys Shopify sends once; a repeated one is refused (as shopify-app-js does)."""


class ProxyRequestError(Exception):
    """The request did not come from Shopify's app proxy for an installed shop (answer 401)."""


def message_to_sign(params: list[tuple[str, str]]) -> str:
    """The string Shopify signs: the params except `signature`, merged per key, sorted, `k=v` with no separator."""
    merged: dict[str, list[str]] = {}
    for key, value in params:
        if key != "signature":
            merged.setdefault(key, []).append(value)
    return "".join(f"{key}={','.join(values)}" for key, values in sorted(merged.items()))


def signature_for(params: list[tuple[str, str]], secret: str) -> str:
    """The hex HMAC-SHA256 Shopify puts in `signature` for these query params."""
    return hmac.new(secret.encode(), message_to_sign(params).encode(), hashlib.sha256).hexdigest()


def verify(query_string: str, secret: str, *, now: float | None = None) -> dict[str, str]:
    """Check a proxied request's raw query string; returns its params (repeated values joined by ",").

    Raises ProxyRequestError for a missing or wrong signature, a repeated shop/timestamp/signature,
    a timestamp outside the allowed skew, or a shop that is not an anchored `*.myshopify.com` name.
    """
    if not secret:
        raise ProxyRequestError("the app secret is not configured")
    params = parse_qsl(query_string or "", keep_blank_values=True)
    given = [value for key, value in params if key == "signature"]
    if not given:
        raise ProxyRequestError("missing signature")
    for key in SINGLE_VALUED:
        if sum(1 for k, _ in params if k == key) > 1:
            raise ProxyRequestError(f"repeated {key}")
    if not hmac.compare_digest(signature_for(params, secret).encode(), given[0].strip().lower().encode()):
        raise ProxyRequestError("bad signature")
    merged: dict[str, str] = {}
    for key, value in params:
        if key != "signature":
            merged[key] = f"{merged[key]},{value}" if key in merged else value
    try:
        stamp = int(merged.get("timestamp", ""))
    except ValueError:
        raise ProxyRequestError("missing or malformed timestamp") from None
    now = time.time() if now is None else now
    if abs(now - stamp) > defaults.APP_PROXY_MAX_SKEW_SECONDS:
        raise ProxyRequestError("stale timestamp")
    if not is_shop_domain(merged.get("shop")):
        raise ProxyRequestError("shop is not a *.myshopify.com domain")
    return merged


def installed_shop(session: OrmSession, params: dict[str, str]) -> Shop:
    """The installed shop a verified proxy request names; raises ProxyRequestError for any other."""
    shop = session.scalar(select(Shop).where(Shop.domain == params["shop"].lower()))
    if shop is None or not shop.installed:
        raise ProxyRequestError("the shop has not installed the app")
    return shop


def client_ip(forwarded_for: str | None, remote_addr: str | None, own_proxies: int = 0) -> str | None:
    """The shopper's IP address, for the consent record and per-IP limits (None when it cannot be told).

    Shopify's proxy appends the address it saw to X-Forwarded-For; each proxy of our own in front of the
    app (`own_proxies`, the TRUSTED_PROXY_HOPS setting) appends one more. So the shopper is the entry that many places
    from the right; entries further left were sent by the browser and could say anything.
    """
    hops = [part.strip() for part in (forwarded_for or "").split(",") if part.strip()]
    index = len(hops) - 1 - own_proxies
    candidate = hops[index] if 0 <= index < len(hops) else (None if hops else remote_addr)
    try:
        return str(ipaddress.ip_address((candidate or "").strip()))
    except ValueError:
        return None
