"""Map Shopify's REST-shaped webhook payloads onto the source-neutral ingestion rows."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from kinnekt.shopify.ingest.rows import (
    CheckoutRow, CollectionRow, CustomerRow, LineItemRow, OrderRow, ProductRow, VariantRow,
)
from kinnekt.numbers import whole_number
from kinnekt.shopify.values import money, text, timestamp


class BadPayload(ValueError):
    """A payload that lacks what its topic must carry (an id, a token)."""


@dataclass(frozen=True)
class ConsentChange:
    """The body of customers_marketing_consent/update: one customer's SMS consent."""

    customer_shopify_id: int
    phone: str | None
    state: str | None
    opt_in_level: str | None
    consent_updated_at: dt.datetime | None
    collected_from: str | None


def shopify_id(value) -> int | None:
    """A numeric Shopify id from an int, a digit string or a GID (gid://shopify/Order/123); None otherwise
    (ASCII digits only, 1 to what a BIGINT holds: "²" or 2**64 in a hostile payload is no id, not a crash)."""
    from kinnekt.numbers import record_id
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return record_id(value)
    return record_id(str(value).strip().rsplit("/", 1)[-1])


def required_id(payload: dict, key: str = "id") -> int:
    """The payload's id, or BadPayload."""
    value = shopify_id(payload.get(key)) if isinstance(payload, dict) else None
    if value is None:
        raise BadPayload(f"payload has no numeric {key!r}")
    return value


def _tags(value) -> list[str]:
    """Shopify sends tags as one comma-separated string (REST) or a list (GraphQL)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [str(t).strip() for t in items if str(t).strip()]


def customer_row(payload: dict) -> CustomerRow:
    """A customers/create|update payload (or an order's embedded customer) as a CustomerRow."""
    address = payload.get("default_address") or {}
    consent = payload.get("sms_marketing_consent")  # absent since API 2025-01; honoured when an old payload has it
    return CustomerRow(
        shopify_id=required_id(payload),
        email=text(payload.get("email"), 255),
        phone=text(payload.get("phone")) or text(address.get("phone")),
        first_name=text(payload.get("first_name"), 255),
        last_name=text(payload.get("last_name"), 255),
        city=text(address.get("city"), 255),
        country_code=(text(address.get("country_code")) or "")[:2].upper() or None,
        tags=_tags(payload.get("tags")),
        created_at=timestamp(payload.get("created_at")),
        updated_at=timestamp(payload.get("updated_at")),
        sms_consent_state=text(consent.get("state")) if isinstance(consent, dict) else None,
        sms_consent_updated_at=(timestamp(consent.get("consent_updated_at"))
                                if isinstance(consent, dict) else None),
        sms_consent_opt_in_level=(text(consent.get("opt_in_level")) or "").lower() or None
        if isinstance(consent, dict) else None,
    )


def has_tags(payload: dict) -> bool:
    """True when the payload says which tags the customer has (2025-01+ customer payloads do not)."""
    return "tags" in payload


def consent_change(payload: dict) -> ConsentChange:
    """A customers_marketing_consent/update payload; accepts `customer_id` (documented) or `id`."""
    key = "customer_id" if payload.get("customer_id") is not None else "id"
    consent = payload.get("sms_marketing_consent") or {}
    if not isinstance(consent, dict):
        raise BadPayload("sms_marketing_consent is not an object")
    return ConsentChange(
        customer_shopify_id=required_id(payload, key),
        phone=text(payload.get("phone_number")) or text(payload.get("phone")),
        state=(text(consent.get("state")) or "").lower() or None,
        opt_in_level=(text(consent.get("opt_in_level")) or "").lower() or None,
        consent_updated_at=timestamp(consent.get("consent_updated_at")),
        collected_from=text(consent.get("consent_collected_from")),
    )


def line_item_row(payload: dict) -> LineItemRow:
    """One entry of an order's line_items."""
    # The ordered quantity (GraphQL LineItem.quantity), not current_quantity after edits and refunds.
    quantity = payload.get("quantity")
    try:
        quantity = int(quantity)
    except (TypeError, ValueError):
        quantity = 0
    return LineItemRow(
        shopify_id=required_id(payload),
        product_id=shopify_id(payload.get("product_id")),
        variant_id=shopify_id(payload.get("variant_id")),
        title=text(payload.get("title"), 512) or text(payload.get("name"), 512),
        variant_title=text(payload.get("variant_title"), 512),
        quantity=quantity if quantity >= 0 else 0,
        price=money(payload.get("price")),
    )


def _discount_codes(value) -> list[dict]:
    codes = []
    for entry in value or []:
        if isinstance(entry, dict) and entry.get("code"):
            codes.append({"code": str(entry["code"]), "amount": str(entry.get("amount") or "0"),
                          "type": entry.get("type")})
    return codes


def order_row(payload: dict) -> OrderRow:
    """An orders/* payload as an OrderRow (raw fulfillment_status; ingest normalises it)."""
    customer = payload.get("customer") or {}
    created_at = timestamp(payload.get("created_at")) or timestamp(payload.get("processed_at"))
    return OrderRow(
        shopify_id=required_id(payload),
        customer_shopify_id=shopify_id(customer.get("id")) if isinstance(customer, dict) else None,
        name=text(payload.get("name"), 64),
        email=text(payload.get("email") or payload.get("contact_email"), 255),
        phone=text(payload.get("phone")),
        created_at=created_at,
        updated_at=timestamp(payload.get("updated_at")),
        cancelled_at=timestamp(payload.get("cancelled_at")),
        test=bool(payload.get("test")),
        financial_status=text(payload.get("financial_status"), 32),
        fulfillment_status=text(payload.get("fulfillment_status"), 32),
        currency=text(payload.get("currency"), 3),
        total_price=money(payload.get("total_price")),
        current_total_price=money(payload.get("current_total_price"), default=None),
        total_discounts=money(payload.get("total_discounts")),
        discount_codes=_discount_codes(payload.get("discount_codes")),
        landing_site=text(payload.get("landing_site"), 2048),
        source_name=text(payload.get("source_name"), 64),
        line_items=[line_item_row(item) for item in payload.get("line_items") or [] if isinstance(item, dict)],
    )


def embedded_customer(payload: dict) -> dict | None:
    """The customer object an order or checkout carries, when it has an id."""
    customer = payload.get("customer")
    if isinstance(customer, dict) and shopify_id(customer.get("id")) is not None:
        return customer
    return None


def product_row(payload: dict) -> ProductRow:
    """A products/create|update payload as a ProductRow."""
    image = payload.get("image") or {}
    if not image and payload.get("images"):
        image = payload["images"][0] or {}
    return ProductRow(
        shopify_id=required_id(payload),
        title=text(payload.get("title"), 512) or "",
        handle=text(payload.get("handle"), 255),
        status=(text(payload.get("status"), 16) or "active").lower(),
        image_url=text(image.get("src"), 2048) if isinstance(image, dict) else None,
        updated_at=timestamp(payload.get("updated_at")),
        variants=_variants(payload.get("variants")),
    )


def _variants(value) -> list[VariantRow] | None:
    """A product payload's `variants` (None when it has no such list); a variant without a numeric id is left out."""
    if not isinstance(value, list):
        return None
    rows = []
    for entry in value:
        variant_id = shopify_id(entry.get("id")) if isinstance(entry, dict) else None
        if variant_id is None:
            continue
        rows.append(VariantRow(shopify_id=variant_id, title=text(entry.get("title"), 512),
                               sku=text(entry.get("sku"), 255), price=money(entry.get("price"), default=None),
                               position=whole_number(entry.get("position"), 2**31 - 1)))
    return rows


def collection_row(payload: dict) -> CollectionRow:
    """A collections/create|update payload; product ids only when the payload lists them."""
    product_ids = None
    if isinstance(payload.get("products"), list):
        product_ids = [pid for pid in (shopify_id(p.get("id") if isinstance(p, dict) else p)
                                       for p in payload["products"]) if pid is not None]
    elif isinstance(payload.get("product_ids"), list):
        product_ids = [pid for pid in map(shopify_id, payload["product_ids"]) if pid is not None]
    return CollectionRow(
        shopify_id=required_id(payload),
        title=text(payload.get("title"), 512) or "",
        handle=text(payload.get("handle"), 255),
        updated_at=timestamp(payload.get("updated_at")),
        product_ids=product_ids,
    )


def checkout_row(payload: dict) -> CheckoutRow:
    """A checkouts/create|update payload as a CheckoutRow (keyed by token)."""
    token = text(payload.get("token"), 64)
    if token is None:
        raise BadPayload("checkout payload has no token")
    customer = embedded_customer(payload)
    return CheckoutRow(
        token=token,
        customer_shopify_id=shopify_id(customer["id"]) if customer else None,
        phone=text(payload.get("phone")) or text(payload.get("sms_marketing_phone")),
        created_at=timestamp(payload.get("created_at")),
        completed_at=timestamp(payload.get("completed_at")),
        updated_at=timestamp(payload.get("updated_at")),
        accepts_sms_marketing=payload.get("buyer_accepts_sms_marketing") is True,
        sms_marketing_phone=text(payload.get("sms_marketing_phone")),
        recovery_url=_recovery_url(payload.get("abandoned_checkout_url")),
    )


def _recovery_url(raw) -> str | None:
    """The checkout's recovery link when it is an http(s) URL of sane length, else None (never trusted further)."""
    url = text(raw)
    if not url or len(url) > 2048 or not url.lower().startswith(("https://", "http://")):
        return None
    return url
