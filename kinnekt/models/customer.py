"""Shopify customers mirrored locally, with the purchase facts that segment rules read."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kinnekt.db import Base, Money, UTCDateTime
from kinnekt.casefold import folded_column, keep_folded
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class Customer(TenantMixin, Timestamps, Base):
    """A Shopify customer. Facts (money spent, order counts, order dates) are kept current by ingestion."""

    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("shop_id", "shopify_id"),
        Index("ix_customers_shop_phone", "shop_id", "phone"),
        Index("ix_customers_shop_money", "shop_id", "money_spent"),
        Index("ix_customers_shop_last_order", "shop_id", "last_order_at"),
        Index("ix_customers_shop_lifecycle", "shop_id", "lifecycle_stage"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    city: Mapped[str | None] = mapped_column(String(255))  # default address, trimmed
    city_folded: Mapped[str | None] = folded_column("city")  # fold(city): what segments compare
    country_code: Mapped[str | None] = mapped_column(String(2))
    sms_consent_state: Mapped[str | None] = mapped_column(String(32))
    sms_consent_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    shopify_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Facts over counted orders (non-test, not cancelled); see segment-rules.md "Which orders count".
    money_spent: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    total_discounts: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    orders_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    first_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # last order + the median of the customer's intervals between counted orders; None with fewer than 2
    # (kinnekt/segments/lifecycle.py, kept current at order ingest and by the daily lifecycle job).
    expected_next_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # Lifecycle stage from recency, frequency and money, relative to the shop's customers; set by the daily
    # lifecycle job (kinnekt/segments/lifecycle.py). None: no counted order. `lifecycle_previous_stage` is the
    # stage before the latest change, `lifecycle_changed_at` when that change was seen.
    lifecycle_stage: Mapped[str | None] = mapped_column(String(16))
    lifecycle_previous_stage: Mapped[str | None] = mapped_column(String(16))
    lifecycle_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    tags: Mapped[list["CustomerTag"]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", passive_deletes=True)

    @property
    def display_name(self) -> str:
        """First and last name, or the email, for lists."""
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or self.email or f"Customer {self.shopify_id}"


class CustomerTag(TenantMixin, Base):
    """One tag of a customer, lower-cased, so `tags contains` is an indexed EXISTS."""

    __tablename__ = "customer_tags"
    __table_args__ = (UniqueConstraint("customer_id", "tag"), Index("ix_customer_tags_shop_tag", "shop_id", "tag"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    customer_id: Mapped[int] = mapped_column(IdType, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    tag: Mapped[str] = mapped_column(String(255), nullable=False)

    customer: Mapped[Customer] = relationship(back_populates="tags")


keep_folded(Customer, ('city', 'city_folded'))
