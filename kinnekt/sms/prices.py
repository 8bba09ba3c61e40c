"""The price of one SMS part by destination country: the one table behind every price the app shows.

The composer's cost estimate, the demo store's seeded message prices and the price recorded on a message the
provider gave none for all read it, so they cannot disagree. The provider's own price, when it gives one, is
the truth for a message already sent; this table is what the app expects to pay (US dollars per SMS part,
the shop pays the same per part whether the part is GSM-7 or Unicode).
"""
from __future__ import annotations

import dataclasses
from decimal import Decimal

import phonenumbers

PRICE_PER_PART: dict[str, Decimal] = {
    "US": Decimal("0.0081"),
    "CA": Decimal("0.0081"),
    "GB": Decimal("0.0414"),
    "IE": Decimal("0.0712"),
    "AU": Decimal("0.0501"),
    "NZ": Decimal("0.1094"),
    "DE": Decimal("0.0925"),
    "FR": Decimal("0.0806"),
    "NL": Decimal("0.1016"),
}
"""Price of one SMS part, in US dollars, by the recipient's country (ISO 3166 alpha-2)."""

OTHER_COUNTRIES = Decimal("0.0800")
"""Price of one SMS part to a country the table does not list."""

COUNTRY_NAMES = {"US": "United States", "CA": "Canada", "GB": "United Kingdom", "IE": "Ireland",
                 "AU": "Australia", "NZ": "New Zealand", "DE": "Germany", "FR": "France", "NL": "Netherlands"}
"""The table's countries in the merchant's words (for the Settings page)."""


def price_per_part(country: str | None) -> Decimal:
    """The price of one SMS part to a recipient in `country` (OTHER_COUNTRIES when it is unknown or unlisted)."""
    return PRICE_PER_PART.get((country or "").upper(), OTHER_COUNTRIES)


def country_of(phone: str | None) -> str | None:
    """The country of an E.164 number, or None when it cannot be told."""
    try:
        number = phonenumbers.parse(phone or "")
    except phonenumbers.NumberParseException:
        return None
    # A number outside any known range still has its country's calling code (+44: the United Kingdom).
    region = (phonenumbers.region_code_for_number(number)
              or phonenumbers.region_code_for_country_code(number.country_code))
    return region if region and region != phonenumbers.UNKNOWN_REGION else None


def message_price(phone: str | None, parts: int) -> Decimal:
    """What a message of `parts` SMS parts to `phone` costs by the table."""
    return price_per_part(country_of(phone)) * max(0, int(parts or 0))


def estimated_cost(parts: int, recipients_by_country: dict[str | None, int]) -> Decimal:
    """A send's cost: every recipient's country price times the message's parts, summed."""
    return sum((price_per_part(country) * max(0, int(parts or 0)) * max(0, int(count or 0))
                for country, count in recipients_by_country.items()), Decimal(0))


def with_price(result, phone: str | None, text: str):
    """A gateway's SendResult with the table's price when the provider gave none for an accepted message."""
    if result.status != "sent" or result.price is not None:
        return result
    from kinnekt.sms.encoding import analyze
    return dataclasses.replace(result, price=message_price(phone, analyze(text or "").segments))


def table() -> list[tuple[str, str, Decimal]]:
    """The table for display: (country code, country name, price per part), cheapest first, then by name."""
    rows = [(code, COUNTRY_NAMES.get(code, code), price) for code, price in PRICE_PER_PART.items()]
    return sorted(rows, key=lambda row: (row[2], row[1]))
