"""Template globals and filters (money, dates in the shop's time zone), list pages, and per-response headers."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app, g
from sqlalchemy import Select, func, select

from kinnekt.db import Session
from kinnekt.numbers import record_id
from kinnekt.sms import failures
from kinnekt.web import headers, hx

NAV = [
    ("home.index", "Home"),
    ("segments.index", "Segments"),
    ("campaigns.index", "Campaigns"),
    ("flows.index", "Flows"),
    ("subscribers.index", "Subscribers"),
    ("keywords.index", "Keywords"),
    ("settings.index", "Settings"),
]

# Pinned assets written by scripts/vendor_assets.sh; bump the versions there and here together.
VENDOR = {
    "htmx": "vendor/htmx-2.0.11.min.js",
    "response_targets": "vendor/htmx-ext-response-targets-2.0.4.min.js",
    "polaris_tokens": "vendor/polaris-tokens-9.4.2.css",
    "uplot": "vendor/uplot-1.6.32.min.js",
    "uplot_css": "vendor/uplot-1.6.32.min.css",
}

# The Polaris icon (a class in app.css) shown next to each navigation entry.
NAV_ICONS = {
    "home.index": "home",
    "segments.index": "segments",
    "campaigns.index": "campaigns",
    "flows.index": "automations",
    "subscribers.index": "subscribers",
    "keywords.index": "keywords",
    "settings.index": "settings",
    "outbox.index": "outbox",
}


def embedded() -> bool:
    """True when pages are served inside the Shopify admin (App Bridge draws the navigation, title bar, save bar
    and toasts); False in the demo and wherever App Bridge is switched off, where the page draws its own."""
    config = current_app.config
    return bool(config.get("APP_BRIDGE_ENABLED", True) and not config.get("DEMO_MODE"))


def init_app(app) -> None:
    """Register the context processor, filters and after-request headers."""
    # A global (not a context variable), so that imported macros such as ui.page_header see it too.
    app.jinja_env.globals["embedded"] = embedded

    @app.context_processor
    def _globals():
        config = current_app.config
        nav = list(NAV)
        if config.get("DEMO_MODE"):
            nav.append(("outbox.index", "Outbox"))
        return {
            "shop": getattr(g, "shop", None),
            "demo_mode": config.get("DEMO_MODE", False),
            "app_bridge_enabled": embedded(),
            "api_key": config.get("SHOPIFY_API_KEY", ""),
            "nav": nav,
            "nav_icons": NAV_ICONS,
            "vendor": VENDOR,
        }

    app.add_template_filter(money)
    # A failed text in the merchant's words, with the provider's code kept for a tooltip (kinnekt/sms/failures.py).
    app.add_template_global(failures.describe, "failure_sentence")
    app.add_template_global(failures.detail, "failure_detail")
    app.add_template_filter(local_time)
    app.add_template_filter(local_date)
    app.add_template_filter(number)
    app.add_template_filter(clock)

    @app.after_request
    def _headers(response):
        hx.add_vary(response)
        return headers.apply(response)


def money(value, currency: str | None = None, places: int = 2) -> str:
    """Format an amount in the shop's currency: `$1,234.50`, `1,234.50 EUR`; `places` 4 for a per-SMS price."""
    if value is None:
        return "—"
    shop = getattr(g, "shop", None)
    currency = currency or (shop.currency if shop is not None else "USD")
    amount = Decimal(value).quantize(Decimal(1).scaleb(-places))
    symbols = {"USD": "$", "CAD": "CA$", "AUD": "A$", "GBP": "£", "EUR": "€"}
    if currency in symbols:
        sign = "-" if amount < 0 else ""
        return f"{sign}{symbols[currency]}{abs(amount):,}"
    return f"{amount:,} {currency}"


def shop_zone() -> ZoneInfo:
    """The request's shop time zone; UTC when there is no shop or its zone is unknown."""
    shop = getattr(g, "shop", None)
    try:
        return ZoneInfo(shop.timezone if shop is not None and shop.timezone else "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(value: dt.datetime | None, fmt: str | None = None) -> str:
    """Show an instant in the shop's time zone: `Mar 5, 2026, 9:05 PM` (or a strftime `fmt`)."""
    if value is None:
        return "—"
    local = value.astimezone(shop_zone())
    if fmt:
        return local.strftime(fmt)
    return f"{local:%b} {local.day}, {local.year}, {_twelve_hour(local.hour, local.minute)}"


def local_date(value: dt.datetime | None) -> str:
    """The day of an instant in the shop's time zone: `Mar 5, 2026`."""
    if value is None:
        return "—"
    local = value.astimezone(shop_zone())
    return f"{local:%b} {local.day}, {local.year}"


def clock(minutes: int | None) -> str:
    """Minutes after midnight as a time of day: 1260 -> `9:00 PM`."""
    if minutes is None:
        return "—"
    minutes = int(minutes) % (24 * 60)
    return _twelve_hour(minutes // 60, minutes % 60)


def _twelve_hour(hour: int, minute: int) -> str:
    suffix = "AM" if hour < 12 else "PM"
    return f"{(hour % 12) or 12}:{minute:02d} {suffix}"


def number(value) -> str:
    """Thousands separators."""
    return f"{value or 0:,}"


def page_number(raw: str | None) -> int:
    """The `?page=` argument as a page number; anything that is not a positive integer is page 1."""
    return record_id(raw) or 1


@dataclass
class Page:
    """One page of a list: its rows, where it is, and the query arguments that produced it (for links)."""

    items: list
    number: int
    size: int
    total: int
    params: dict = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """How many pages there are (at least one, so an empty list is "page 1 of 1")."""
        return max(1, math.ceil(self.total / self.size))

    @property
    def has_prev(self) -> bool:
        """True when there is a page before this one."""
        return self.number > 1

    @property
    def has_next(self) -> bool:
        """True when there is a page after this one."""
        return self.number < self.pages

    @property
    def first_index(self) -> int:
        """1-based position of the first row shown (0 for an empty list)."""
        return 0 if self.total == 0 else (self.number - 1) * self.size + 1

    @property
    def last_index(self) -> int:
        """1-based position of the last row shown."""
        return self.first_index + len(self.items) - 1 if self.items else 0

    def args(self, number: int) -> dict:
        """Query arguments for a link to page `number`, keeping the filters."""
        return {**self.params, "page": number}


def paginate(statement: Select, page: int, size: int, params: dict | None = None) -> Page:
    """Run an ordered ORM `select` for one page (offset), with the total count; a page past the end shows the last."""
    total = Session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
    last = max(1, math.ceil(total / size))
    page = min(max(1, page), last)
    items = list(Session.scalars(statement.limit(size).offset((page - 1) * size)))
    return Page(items=items, number=page, size=size, total=total, params=params or {})
