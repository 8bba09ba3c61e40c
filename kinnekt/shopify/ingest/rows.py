"""Source-neutral rows that webhook REST payloads and bulk GraphQL JSONL both map onto before storing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass
class CustomerRow:
    """One Shopify customer as we store it; phone is raw (normalised on ingest)."""

    shopify_id: int
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    country_code: str | None = None
    tags: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # None means "this source said nothing about SMS consent": ingest leaves stored consent alone.
    sms_consent_state: str | None = None
    sms_consent_updated_at: datetime | None = None
    sms_consent_opt_in_level: str | None = None  # single_opt_in, confirmed_opt_in, unknown


@dataclass
class LineItemRow:
    """One order line; price is the unit price in the shop currency."""

    shopify_id: int
    product_id: int | None = None
    variant_id: int | None = None
    title: str | None = None
    variant_title: str | None = None
    quantity: int = 1
    price: Decimal = Decimal("0")


@dataclass
class OrderRow:
    """One Shopify order; fulfillment_status is Shopify's raw value (None, "partial", "fulfilled", ...)."""

    shopify_id: int
    customer_shopify_id: int | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    cancelled_at: datetime | None = None
    test: bool = False
    financial_status: str | None = None
    fulfillment_status: str | None = None
    currency: str | None = None
    total_price: Decimal = Decimal("0")
    current_total_price: Decimal | None = None
    total_discounts: Decimal = Decimal("0")
    discount_codes: list[dict] = field(default_factory=list)
    landing_site: str | None = None
    source_name: str | None = None
    line_items: list[LineItemRow] = field(default_factory=list)


@dataclass
class VariantRow:
    """One variant of a product; price None when the source gave none (or none a shop could charge)."""

    shopify_id: int
    title: str | None = None
    sku: str | None = None
    price: Decimal | None = None
    position: int | None = None


@dataclass
class ProductRow:
    """One Shopify product; variants None means the source did not say which variants it has."""

    shopify_id: int
    title: str | None = None
    handle: str | None = None
    status: str | None = None
    image_url: str | None = None
    updated_at: datetime | None = None
    variants: list[VariantRow] | None = None


@dataclass
class CollectionRow:
    """One Shopify collection; product_ids None means the source did not say which products it holds."""

    shopify_id: int
    title: str | None = None
    handle: str | None = None
    updated_at: datetime | None = None
    product_ids: list[int] | None = None


@dataclass
class CheckoutRow:
    """One Shopify checkout (abandoned until completed_at is set)."""

    token: str
    customer_shopify_id: int | None = None
    phone: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    accepts_sms_marketing: bool = False  # buyer_accepts_sms_marketing: the SMS consent box was ticked
    sms_marketing_phone: str | None = None
    recovery_url: str | None = None  # abandoned_checkout_url: where the buyer picks the checkout up again
