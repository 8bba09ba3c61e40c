"""Template globals and filters (money, dates in the shop's time zone), and per-response headers."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from flask import current_app, g

from kinnekt.web import hx
from kinnekt.web.auth import frame_ancestors

NAV = [
    ("segments.index", "Segments"),
    ("campaigns.index", "Campaigns"),
    ("subscribers.index", "Subscribers"),
    ("keywords.index", "Keywords"),
    ("settings.index", "Settings"),
]


def init_app(app) -> None:
    """Register the context processor, filters and after-request headers."""

    @app.context_processor
    def _globals():
        config = current_app.config
        nav = list(NAV)
        if config.get("DEMO_MODE"):
            nav.append(("outbox.index", "Outbox"))
        return {
            "shop": getattr(g, "shop", None),
            "demo_mode": config.get("DEMO_MODE", False),
            "app_bridge_enabled": config.get("APP_BRIDGE_ENABLED", True) and not config.get("DEMO_MODE"),
            "api_key": config.get("SHOPIFY_API_KEY", ""),
            "nav": nav,
        }

    app.add_template_filter(money)
    app.add_template_filter(local_time)
    app.add_template_filter(number)

    @app.after_request
    def _headers(response):
        hx.add_vary(response)
        response.headers.setdefault("Content-Security-Policy", frame_ancestors())
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        return response


def money(value, currency: str | None = None) -> str:
    """Format an amount in the shop's currency: `$1,234.50`, `1,234.50 EUR`."""
    if value is None:
        return "—"
    shop = getattr(g, "shop", None)
    currency = currency or (shop.currency if shop is not None else "USD")
    amount = Decimal(value).quantize(Decimal("0.01"))
    symbols = {"USD": "$", "CAD": "CA$", "AUD": "A$", "GBP": "£", "EUR": "€"}
    if currency in symbols:
        return f"{symbols[currency]}{amount:,}"
    return f"{amount:,} {currency}"


def local_time(value: dt.datetime | None, fmt: str = "%b %d, %Y %I:%M %p") -> str:
    """Show an instant in the shop's time zone."""
    if value is None:
        return "—"
    shop = getattr(g, "shop", None)
    zone = ZoneInfo(shop.timezone if shop is not None and shop.timezone else "UTC")
    return value.astimezone(zone).strftime(fmt)


def number(value) -> str:
    """Thousands separators."""
    return f"{value or 0:,}"
