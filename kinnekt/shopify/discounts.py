"""Discount codes for campaigns through the Admin API: one shared code, or unique codes per recipient.

A shared code is one `discountCodeBasicCreate` (eligibility `context: {all: ALL}`, API 2025-10+). Unique codes
are one discount created with the first code, then `discountRedeemCodeBulkAdd` in calls of at most 250
codes; each call is asynchronous and is polled through `discountRedeemCodeBulkCreation(id:)`.
Needs the write_discounts scope. Call from jobs, not from web requests.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterable

from kinnekt import defaults
from kinnekt.shopify.graphql import AdminClient, ShopifyError, client_for, gid, raise_user_errors

log = logging.getLogger(__name__)

CREATE_DISCOUNT = """
mutation KinnektCreateDiscount($discount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $discount) {
    codeDiscountNode { id codeDiscount { ... on DiscountCodeBasic { title codes(first: 1) { nodes { code } } } } }
    userErrors { field code message }
  }
}
"""

ADD_CODES = """
mutation KinnektAddDiscountCodes($discountId: ID!, $codes: [DiscountRedeemCodeInput!]!) {
  discountRedeemCodeBulkAdd(discountId: $discountId, codes: $codes) {
    bulkCreation { id }
    userErrors { field code message }
  }
}
"""

CODE_IMPORT = """
query KinnektDiscountCodeImport($id: ID!) {
  discountRedeemCodeBulkCreation(id: $id) {
    id done codesCount importedCount failedCount
    codes(first: 250) { nodes { code errors { field code message } } }
  }
}
"""

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: codes are typed from a text message


class DiscountInputError(ValueError):
    """The discount asked for cannot be created (the message says why, for the merchant)."""


@dataclass(frozen=True)
class DiscountValue:
    """What the code takes off: a percentage (10 = 10 %) or a fixed amount in the shop's currency."""

    percent: Decimal | None = None
    amount: Decimal | None = None

    @classmethod
    def percent_off(cls, percent) -> "DiscountValue":
        """`percent_off(10)`: 10 % off."""
        value = Decimal(str(percent))
        if not Decimal(0) < value <= Decimal(100):
            raise DiscountInputError("A percentage discount must be more than 0 and at most 100.")
        return cls(percent=value)

    @classmethod
    def amount_off(cls, amount) -> "DiscountValue":
        """`amount_off("5.00")`: 5.00 off the order."""
        value = Decimal(str(amount))
        if value <= 0:
            raise DiscountInputError("A fixed discount must be more than 0.")
        return cls(amount=value)

    def as_input(self) -> dict:
        """The DiscountCustomerGetsValueInput."""
        if self.percent is not None:
            return {"percentage": float(self.percent / Decimal(100))}
        if self.amount is not None:
            return {"discountAmount": {"amount": str(self.amount), "appliesOnEachItem": False}}
        raise DiscountInputError("Choose a percentage or an amount.")


@dataclass(frozen=True)
class CreatedDiscount:
    """A code discount at Shopify: its id (gid://shopify/DiscountCodeNode/...) and the codes it holds."""

    discount_id: str
    codes: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (code, Shopify's reason)


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise DiscountInputError("Start and end times need a time zone.")
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_code(code: str) -> str:
    """A code as Shopify takes it: 1–255 characters, no line breaks, no spaces at the ends."""
    code = (code or "").strip()
    if not code or len(code) > 255 or any(ch in code for ch in "\r\n\t"):
        raise DiscountInputError(f"{code!r} is not a usable discount code (1–255 characters, one line).")
    return code


def generate_codes(count: int, prefix: str = "") -> list[str]:
    """`count` distinct random codes like `PREFIX-7KQ2-XM4P`, easy to type from a text message."""
    codes: set[str] = set()
    while len(codes) < count:
        body = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        codes.add(f"{prefix + '-' if prefix else ''}{body[:4]}-{body[4:]}")
    return sorted(codes)


def discount_input(*, title: str, code: str, value: DiscountValue, starts_at: dt.datetime,
                   ends_at: dt.datetime | None = None, minimum_subtotal: Decimal | None = None,
                   usage_limit: int | None = None, once_per_customer: bool = False,
                   product_ids: Iterable[int] = (), collection_ids: Iterable[int] = (),
                   combines_with_shipping: bool = True) -> dict:
    """The DiscountCodeBasicInput for these terms (validated before anything is sent)."""
    title = (title or "").strip()
    if not title:
        raise DiscountInputError("The discount needs a title.")
    if ends_at is not None and ends_at <= starts_at:
        raise DiscountInputError("The discount must end after it starts.")
    if usage_limit is not None and usage_limit < 1:
        raise DiscountInputError("The usage limit must be at least 1.")
    product_ids, collection_ids = list(product_ids), list(collection_ids)
    if product_ids and collection_ids:
        raise DiscountInputError("Limit the discount to products or to collections, not both.")
    if product_ids:
        items = {"products": {"productsToAdd": [gid("Product", pid) for pid in product_ids]}}
    elif collection_ids:
        items = {"collections": {"add": [gid("Collection", cid) for cid in collection_ids]}}
    else:
        items = {"all": True}
    discount = {
        "title": title[:255],
        "code": check_code(code),
        "startsAt": _iso(starts_at),
        "endsAt": _iso(ends_at),
        "context": {"all": "ALL"},
        "customerGets": {"value": value.as_input(), "items": items},
        "appliesOncePerCustomer": bool(once_per_customer),
        "combinesWith": {"orderDiscounts": False, "productDiscounts": False,
                         "shippingDiscounts": bool(combines_with_shipping)},
    }
    if usage_limit is not None:
        discount["usageLimit"] = int(usage_limit)
    if minimum_subtotal is not None:
        if Decimal(str(minimum_subtotal)) <= 0:
            raise DiscountInputError("The minimum order subtotal must be more than 0.")
        discount["minimumRequirement"] = {"subtotal": {"greaterThanOrEqualToSubtotal": str(minimum_subtotal)}}
    return discount


def create_shared_code(shop, *, client: AdminClient | None = None, **terms) -> CreatedDiscount:
    """Create one code everyone can use (terms as `discount_input`); raises UserErrors when Shopify refuses."""
    discount = discount_input(**terms)
    client = client or client_for(shop)
    result = raise_user_errors(client.query(CREATE_DISCOUNT, {"discount": discount}).get("discountCodeBasicCreate"))
    node = result.get("codeDiscountNode") or {}
    if not node.get("id"):
        raise ShopifyError("Shopify created no discount")
    return CreatedDiscount(node["id"], [discount["code"]])


def create_unique_codes(shop, codes: list[str], *, client: AdminClient | None = None,
                        sleep: Callable[[float], None] = time.sleep, **terms) -> CreatedDiscount:
    """One discount holding a distinct code per recipient: created with the first code, the rest bulk-added."""
    codes = [check_code(code) for code in codes]
    if not codes:
        raise DiscountInputError("No codes to create.")
    if len(set(c.upper() for c in codes)) != len(codes):
        raise DiscountInputError("The codes must be distinct (Shopify ignores letter case).")
    client = client or client_for(shop)
    created = create_shared_code(shop, client=client, code=codes[0], **terms)
    added, failed = add_codes(shop, created.discount_id, codes[1:], client=client, sleep=sleep)
    return CreatedDiscount(created.discount_id, [codes[0]] + added, failed)


def add_codes(shop, discount_id: str, codes: list[str], *, client: AdminClient | None = None,
              sleep: Callable[[float], None] = time.sleep) -> tuple[list[str], list[tuple[str, str]]]:
    """Add codes to a discount, 250 per call, waiting for each asynchronous import; (added, failed)."""
    client = client or client_for(shop)
    added: list[str] = []
    failed: list[tuple[str, str]] = []
    size = defaults.DISCOUNT_CODES_PER_CALL
    for start in range(0, len(codes), size):
        chunk = codes[start:start + size]
        result = raise_user_errors(client.query(ADD_CODES, {
            "discountId": discount_id, "codes": [{"code": code} for code in chunk]}).get("discountRedeemCodeBulkAdd"))
        creation_id = (result.get("bulkCreation") or {}).get("id")
        if not creation_id:
            raise ShopifyError("Shopify started no code import")
        status = _wait_for_import(client, creation_id, sleep)
        refused = {}
        for node in ((status.get("codes") or {}).get("nodes") or []):
            errors = node.get("errors") or []
            if errors:
                refused[node.get("code")] = "; ".join(str(e.get("message")) for e in errors)
        failed.extend((code, refused[code]) for code in chunk if code in refused)
        added.extend(code for code in chunk if code not in refused)
    return added, failed


def _wait_for_import(client: AdminClient, creation_id: str, sleep: Callable[[float], None]) -> dict:
    for _ in range(defaults.DISCOUNT_BULK_MAX_POLLS):
        status = client.query(CODE_IMPORT, {"id": creation_id}).get("discountRedeemCodeBulkCreation") or {}
        if status.get("done"):
            return status
        sleep(defaults.DISCOUNT_BULK_POLL_SECONDS)
    raise ShopifyError(f"the discount code import {creation_id} did not finish in time")
