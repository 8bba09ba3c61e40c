"""Field values from Shopify (REST webhook payloads, GraphQL nodes, webhook headers) read into Python values.

One parser per kind of value, shared by `shopify/mapping.py` (GraphQL) and `shopify/ingest/rest.py` (REST):
text, money and timestamps. A parser never raises on what a payload holds (missing, the wrong type, malformed,
out of range): it returns None (or the caller's default), so one bad field cannot fail a whole ingest.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation


def text(value, limit: int | None = None) -> str | None:
    """A value as text without surrounding whitespace, cut to `limit` characters; None when absent or blank."""
    if value is None:
        return None
    stripped = str(value).strip()
    if not stripped:
        return None
    return stripped[:limit] if limit else stripped


def money(value, default: Decimal | None = Decimal("0")) -> Decimal | None:
    """A Shopify money string ("598.94") as an exact Decimal; `default` when absent, malformed or not finite
    (NaN, Infinity)."""
    if value is None or value == "":
        return default
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return default
    return amount if amount.is_finite() else default


def shop_money(money_bag, default: Decimal | None = Decimal("0")) -> Decimal | None:
    """The shop-currency amount of a GraphQL MoneyBag (`{shopMoney: {amount: "12.50"}}` -> Decimal("12.50")),
    read by `money`; `default` when the bag or its amount is missing or not of that shape."""
    shop = money_bag.get("shopMoney") if isinstance(money_bag, dict) else None
    return money(shop.get("amount") if isinstance(shop, dict) else None, default)


def timestamp(value) -> dt.datetime | None:
    """An ISO 8601 timestamp string (Shopify's, with an offset or Z) as an aware UTC datetime; None when absent,
    not a string, unreadable or out of range once in UTC. A time without an offset is taken as UTC (Shopify always
    sends one)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None
