"""The authorization-code grant, kept as a fallback for non-embedded installs: query HMAC, state, checks.

Embedded installs use Shopify-managed install and token exchange (kinnekt.shopify.install). This flow only
runs when a merchant arrives outside the admin: /auth/install sends them to Shopify's grant screen with a
state nonce, and /auth/callback checks the signed query before exchanging the code.
"""
from __future__ import annotations

import hmac
import json
import secrets
import time
from hashlib import sha256
from typing import Iterable
from urllib.parse import urlencode

from kinnekt import defaults
from kinnekt.shopify import endpoints


class OAuthRefused(ValueError):
    """An install or callback request failed a security check; the message says which, for the merchant."""


def _pairs(params) -> Iterable[tuple[str, list[str]]]:
    if hasattr(params, "lists"):  # werkzeug MultiDict: keep repeated keys
        return params.lists()
    return ((key, value if isinstance(value, list) else [value]) for key, value in dict(params).items())


def signed_message(params) -> str:
    """The message Shopify signs: every parameter but `hmac`, as escaped `key=value`, sorted, joined by `&`.

    Repeated `key[]` parameters become `key=["1", "2"]` (JSON), as Shopify's libraries sign them.
    """
    encoded = []
    for key, values in _pairs(params):
        if key == "hmac":
            continue
        if key.endswith("[]"):
            key, value = key[:-2], json.dumps([str(v) for v in values])
        else:
            value = ",".join(str(v) for v in values)
        key = str(key).replace("%", "%25").replace("=", "%3D")
        value = str(value).replace("%", "%25")
        encoded.append(f"{key}={value}".replace("&", "%26"))
    return "&".join(sorted(encoded))


def query_hmac(params, secret: str) -> str:
    """The hex HMAC-SHA256 of the signed message under the app secret."""
    return hmac.new(secret.encode(), signed_message(params).encode(), sha256).hexdigest()


def _same(expected: str, given) -> bool:
    # On bytes: compare_digest refuses str with non-ASCII characters (a TypeError, so a 500), and query values
    # come from whoever sent the request.
    return hmac.compare_digest(expected.encode(), str(given).encode("utf-8", "replace"))


def valid_query_hmac(params, secret: str) -> bool:
    """True when the query's `hmac` matches (compared in constant time)."""
    given = params.get("hmac") or ""
    if not given or not secret:
        return False
    return _same(query_hmac(params, secret), str(given).lower())


def fresh_timestamp(value, *, now: float | None = None, tolerance: int | None = None) -> bool:
    """True when a signed `timestamp` (seconds) is within the tolerance of now, either way."""
    tolerance = defaults.OAUTH_TIMESTAMP_TOLERANCE_SECONDS if tolerance is None else tolerance
    try:
        stamp = int(str(value))
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    return abs(now - stamp) <= tolerance


def checked_shop(value) -> str:
    """The shop parameter, validated with the anchored `<name>.myshopify.com` check."""
    try:
        return endpoints.checked_domain(str(value or ""))
    except endpoints.BadShopDomain:
        raise OAuthRefused("The shop parameter is not a <name>.myshopify.com store address.") from None


def verify_signed_request(params, secret: str, *, now: float | None = None) -> str:
    """Check a Shopify-signed admin request (install link, callback): shop, HMAC, timestamp; returns the shop."""
    shop = checked_shop(params.get("shop"))
    if not valid_query_hmac(params, secret):
        raise OAuthRefused("The request's signature (hmac) is missing or does not match.")
    if not fresh_timestamp(params.get("timestamp"), now=now):
        raise OAuthRefused("The request is too old (or its clock is off); start the install again.")
    return shop


def new_state() -> str:
    """A random state nonce for one install attempt."""
    return secrets.token_urlsafe(24)


def same_state(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the stored and returned state."""
    return bool(expected) and bool(given) and _same(str(expected), given)


def authorize_redirect(shop: str, *, api_key: str, scopes: str, redirect_uri: str, state: str) -> str:
    """Shopify's grant screen for this shop (offline access: no per-user grant option)."""
    query = urlencode({"client_id": api_key, "scope": scopes, "redirect_uri": redirect_uri, "state": state})
    return f"{endpoints.authorize_url(shop)}?{query}"
