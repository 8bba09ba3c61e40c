"""Verify the App Bridge session (ID) token: HS256 with the app secret, audience, issuer/dest, times."""
from __future__ import annotations

import re
from urllib.parse import urlparse

import jwt

SHOP_DOMAIN_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]*\.myshopify\.com")
LEEWAY_SECONDS = 10
REQUIRED_CLAIMS = ["iss", "dest", "aud", "sub", "exp", "nbf", "iat"]


class SessionTokenError(Exception):
    """The token is missing, malformed, badly signed, expired or for another app or shop."""


def is_shop_domain(value: str | None) -> bool:
    """True for a well-formed `<name>.myshopify.com` host (anchored at both ends)."""
    return bool(value) and SHOP_DOMAIN_RE.fullmatch(value) is not None


def verify(token: str, api_key: str, api_secret: str) -> dict:
    """Return the token's claims plus `shop` (the host of `dest`), or raise SessionTokenError."""
    if not token:
        raise SessionTokenError("missing session token")
    if not api_secret or not api_key:
        raise SessionTokenError("app key/secret not configured")
    try:
        claims = jwt.decode(
            token, api_secret, algorithms=["HS256"], audience=api_key, leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError as exc:
        raise SessionTokenError(f"invalid session token: {exc}") from exc
    iss, dest = urlparse(str(claims["iss"])), urlparse(str(claims["dest"]))
    if iss.scheme != "https" or dest.scheme != "https":
        raise SessionTokenError("iss and dest must be https URLs")
    if any(part.netloc.lower() != part.hostname for part in (iss, dest)):
        raise SessionTokenError("iss and dest must name the shop's host alone (no port, no user)")
    if not is_shop_domain(dest.hostname) or iss.hostname != dest.hostname:
        raise SessionTokenError("iss and dest must name the same *.myshopify.com shop")
    if iss.path.rstrip("/") != "/admin":
        raise SessionTokenError("iss must be the shop's /admin URL")
    claims["shop"] = dest.hostname.lower()
    return claims


def mint(shop: str, api_key: str, api_secret: str, *, now: int | None = None, ttl: int = 60, **overrides) -> str:
    """Make a session token as App Bridge would (for tests and scripted end-to-end runs)."""
    import time
    import uuid
    now = int(time.time()) if now is None else now
    claims = {
        "iss": f"https://{shop}/admin", "dest": f"https://{shop}", "aud": api_key, "sub": "42",
        "exp": now + ttl, "nbf": now, "iat": now, "jti": str(uuid.uuid4()), "sid": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return jwt.encode(claims, api_secret, algorithm="HS256")
