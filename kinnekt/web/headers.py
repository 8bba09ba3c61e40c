"""Headers on every response: the Content-Security-Policy, HSTS over https, and no-store for what is not an asset.

- **CSP**: scripts only from the app itself and Shopify's CDN (App Bridge, `https://cdn.shopify.com`), no
  plugins, no `<base>` elsewhere, and `frame-ancestors` (the shop's admin and admin.shopify.com). Pages carry
  no inline script and htmx runs with `allowEval: false`, so nothing needs `'unsafe-inline'` or `'unsafe-eval'`.
- **HSTS** when the request came over https, or the app's public URL (SHOPIFY_APP_URL) is https: behind a
  TLS-terminating proxy the app itself sees http, and a browser ignores HSTS received over plain http.
- **Cache-Control: no-store** on every response that does not say how to cache itself: pages, partials,
  CSV and JSON can all hold subscribers' phone numbers and names, and must not stay in a browser's or a
  proxy's cache. Static assets (and the storefront's popup script) keep their own caching.
"""
from __future__ import annotations

from flask import current_app, request

from kinnekt.web.auth import frame_ancestors

SHOPIFY_CDN = "https://cdn.shopify.com"
"""Where App Bridge (and anything it loads) comes from in the embedded admin."""

HSTS = "max-age=31536000"
"""A year; without includeSubDomains, since the app's host may share a parent domain with other sites."""


def content_security_policy() -> str:
    """The CSP of this response: allowed script origins beside the frame ancestors."""
    return (f"script-src 'self' {SHOPIFY_CDN}; object-src 'none'; base-uri 'self'; "
            f"{frame_ancestors()}")


def served_over_https() -> bool:
    """True when the browser reached the app over https (directly, or through the proxy of the public URL)."""
    return request.is_secure or str(current_app.config.get("SHOPIFY_APP_URL", "")).startswith("https://")


def apply(response):
    """Add the security and caching headers (a header a view set itself is kept)."""
    response.headers.setdefault("Content-Security-Policy", content_security_policy())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    if served_over_https():
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response
