"""kinnekt/shopify/values.py: text, money and timestamps read from Shopify payloads, good and bad."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from kinnekt.shopify.values import money, shop_money, text, timestamp

UTC = dt.timezone.utc


@pytest.mark.parametrize("value, limit, expected", [
    ("  Ada  ", None, "Ada"),
    ("Lovelace", 4, "Love"),
    (12345, None, "12345"),
    ("ünïcode ☃", 8, "ünïcode "),
    (None, None, None),
    ("", None, None),
    ("   \t\n", 10, None),
])
def test_text(value, limit, expected):
    assert text(value, limit) == expected


def test_text_is_cut_after_stripping():
    assert text("  ab cd  ", 3) == "ab "
    assert text("abc", 0) == "abc"  # no limit


@pytest.mark.parametrize("value, expected", [
    ("598.94", Decimal("598.94")),
    ("0", Decimal("0")),
    (12, Decimal("12")),
    ("-3.50", Decimal("-3.50")),
    (" 7.25 ", Decimal("7.25")),
])
def test_money_reads_exact_decimals(value, expected):
    result = money(value)
    assert result == expected and isinstance(result, Decimal)


@pytest.mark.parametrize("value", [None, "", "abc", "12,50", "NaN", "sNaN", "Infinity", "-inf", [], {"amount": "1"},
                                   True])
def test_money_gives_the_default_for_bad_input(value):
    assert money(value) == Decimal("0")
    assert money(value, default=None) is None
    assert money(value, Decimal("-1")) == Decimal("-1")


def test_shop_money_reads_the_shop_currency_of_a_money_bag():
    bag = {"shopMoney": {"amount": "12.50", "currencyCode": "EUR"}, "presentmentMoney": {"amount": "13.00"}}
    assert shop_money(bag) == Decimal("12.50")


@pytest.mark.parametrize("bag", [None, {}, {"shopMoney": None}, {"shopMoney": {}}, {"shopMoney": {"amount": ""}},
                                 {"shopMoney": {"amount": "NaN"}}, {"shopMoney": {"amount": "x"}},
                                 {"shopMoney": "12.50"}, "12.50", ["12.50"], 12])
def test_shop_money_gives_the_default_for_a_bag_of_another_shape(bag):
    assert shop_money(bag) == Decimal("0")
    assert shop_money(bag, None) is None


@pytest.mark.parametrize("value, expected", [
    ("2026-03-06T05:00:00Z", dt.datetime(2026, 3, 6, 5, 0, tzinfo=UTC)),
    ("2026-03-06T00:00:00-05:00", dt.datetime(2026, 3, 6, 5, 0, tzinfo=UTC)),
    ("2026-03-06T06:00:00.250+01:00", dt.datetime(2026, 3, 6, 5, 0, 0, 250000, tzinfo=UTC)),
    (" 2026-03-06T05:00:00Z\n", dt.datetime(2026, 3, 6, 5, 0, tzinfo=UTC)),
    ("2026-03-06T05:00:00", dt.datetime(2026, 3, 6, 5, 0, tzinfo=UTC)),  # no offset: taken as UTC
])
def test_timestamp_as_aware_utc(value, expected):
    result = timestamp(value)
    assert result == expected
    assert result.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("value", [
    None, "", "   ", "yesterday", "2026-13-01T00:00:00Z", "2026-03-06T25:00:00Z", "2026-03-06T05:00:00+25:00",
    20260306, 1.5, True, ["2026-03-06T05:00:00Z"], {"at": "2026-03-06T05:00:00Z"},
    dt.datetime(2026, 3, 6, tzinfo=UTC),
    "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
])
def test_timestamp_is_none_for_bad_input(value):
    assert timestamp(value) is None
