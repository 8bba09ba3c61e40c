"""Discount codes through the Admin API (fake Shopify): one shared code, unique codes bulk-added 250 at a time."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest

from kinnekt.shopify import discounts
from kinnekt.shopify.discounts import DiscountInputError, DiscountValue
from kinnekt.shopify.graphql import UserErrors
from tests.fake_shopify import connect

START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
TERMS = {"title": "Winter campaign", "value": DiscountValue.percent_off(10), "starts_at": START}


def test_a_shared_code_for_everyone(shop, fake_shopify):
    connect(fake_shopify, shop)
    created = discounts.create_shared_code(shop, code="WINTER10", ends_at=START + dt.timedelta(days=7),
                                           minimum_subtotal=Decimal("20.00"), usage_limit=500,
                                           once_per_customer=True, **TERMS)
    assert created.discount_id.startswith("gid://shopify/DiscountCodeNode/") and created.codes == ["WINTER10"]
    [call] = fake_shopify.calls("graphql:KinnektCreateDiscount")
    sent = call["variables"]["discount"]
    assert sent["context"] == {"all": "ALL"} and "customerSelection" not in sent
    assert sent["customerGets"] == {"value": {"percentage": 0.1}, "items": {"all": True}}
    assert sent["startsAt"] == "2026-12-01T09:00:00Z" and sent["endsAt"] == "2026-12-08T09:00:00Z"
    assert sent["minimumRequirement"] == {"subtotal": {"greaterThanOrEqualToSubtotal": "20.00"}}
    assert sent["usageLimit"] == 500 and sent["appliesOncePerCustomer"] is True


def test_a_fixed_amount_on_chosen_products(shop, fake_shopify):
    connect(fake_shopify, shop)
    discounts.create_shared_code(shop, code="FIVE", title="Five off", value=DiscountValue.amount_off("5.00"),
                                 starts_at=START, product_ids=[8123456789])
    sent = fake_shopify.calls("graphql:KinnektCreateDiscount")[0]["variables"]["discount"]
    assert sent["customerGets"] == {"value": {"discountAmount": {"amount": "5.00", "appliesOnEachItem": False}},
                                    "items": {"products": {"productsToAdd": ["gid://shopify/Product/8123456789"]}}}


def test_a_taken_code_is_refused_with_shopify_s_reason(shop, fake_shopify):
    connect(fake_shopify, shop)
    discounts.create_shared_code(shop, code="WINTER10", **TERMS)
    with pytest.raises(UserErrors) as refused:
        discounts.create_shared_code(shop, code="winter10", **TERMS)
    assert "Code must be unique" in str(refused.value)


@pytest.mark.parametrize("terms, message", [
    ({"title": " "}, "needs a title"),
    ({"ends_at": START - dt.timedelta(days=1)}, "end after it starts"),
    ({"starts_at": dt.datetime(2026, 12, 1)}, "time zone"),
    ({"usage_limit": 0}, "at least 1"),
    ({"minimum_subtotal": Decimal("0")}, "more than 0"),
    ({"product_ids": [1], "collection_ids": [2]}, "not both"),
    ({"code": "two\nlines"}, "not a usable discount code"),
])
def test_bad_terms_are_refused_before_calling_shopify(shop, fake_shopify, terms, message):
    connect(fake_shopify, shop)
    with pytest.raises(DiscountInputError, match=message):
        discounts.create_shared_code(shop, **{"code": "OK", **TERMS, **terms})
    assert fake_shopify.calls("graphql:KinnektCreateDiscount") == []


@pytest.mark.parametrize("make", [lambda: DiscountValue.percent_off(0), lambda: DiscountValue.percent_off(150),
                                  lambda: DiscountValue.amount_off("-1")])
def test_impossible_values(make):
    with pytest.raises(DiscountInputError):
        make()


def test_unique_codes_go_in_calls_of_250(shop, fake_shopify):
    connect(fake_shopify, shop)
    discounts.create_shared_code(shop, code="TAKEN-0001", **TERMS)  # an older campaign's code
    codes = discounts.generate_codes(600, prefix="WIN")
    codes[300] = "TAKEN-0001"
    sleeps = []
    created = discounts.create_unique_codes(shop, codes, sleep=sleeps.append, **TERMS)
    adds = fake_shopify.calls("graphql:KinnektAddDiscountCodes")
    assert [len(c["variables"]["codes"]) for c in adds] == [250, 250, 99]
    assert all(c["variables"]["discountId"] == created.discount_id for c in adds)
    assert created.failed == [("TAKEN-0001", "Code must be unique")]
    assert len(created.codes) == 599 and created.codes[0] == codes[0]
    assert len(fake_shopify.calls("graphql:KinnektDiscountCodeImport")) == 6  # each import polled until done
    assert sleeps == [discounts.defaults.DISCOUNT_BULK_POLL_SECONDS] * 3


def test_duplicate_codes_are_refused(shop, fake_shopify):
    with pytest.raises(DiscountInputError, match="distinct"):
        discounts.create_unique_codes(shop, ["ABC", "abc"], **TERMS)


def test_generated_codes_are_distinct_and_easy_to_type():
    codes = discounts.generate_codes(2000, prefix="KN")
    assert len(set(codes)) == 2000
    assert all(re.fullmatch(r"KN-[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", c) for c in codes)
