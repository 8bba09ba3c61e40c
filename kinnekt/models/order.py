"""Shopify orders, their line items, and checkouts (for the started-checkout event)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kinnekt.db import Base, Money, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps

FULFILLMENT_STATUSES = ("fulfilled", "unfulfilled", "partially_fulfilled")
FINANCIAL_STATUSES = ("authorized", "paid", "partially_refunded", "partially_paid", "pending",
                      "refunded", "voided", "expired")


class Order(TenantMixin, Timestamps, Base):
    """A Shopify order. `fulfillment_status` is normalised (null -> unfulfilled, partial -> partially_fulfilled)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("shop_id", "shopify_id"),
        Index("ix_orders_customer_created", "customer_id", "created_at"),
        Index("ix_orders_shop_created", "shop_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    customer_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("customers.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(64), default="", nullable=False)
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)  # Shopify's created_at
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    test: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    financial_status: Mapped[str | None] = mapped_column(String(32))
    fulfillment_status: Mapped[str] = mapped_column(String(32), default="unfulfilled", nullable=False)
    currency: Mapped[str] = mapped_column(String(3), default="USD", nullable=False)
    total_price: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    current_total_price: Mapped[Decimal | None] = mapped_column(Money)
    total_discounts: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    discount_codes: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    landing_site: Mapped[str | None] = mapped_column(String(2048))
    source_name: Mapped[str | None] = mapped_column(String(64))

    line_items: Mapped[list["LineItem"]] = relationship(
        back_populates="order", cascade="all, delete-orphan", passive_deletes=True)

    @property
    def counted(self) -> bool:
        """True when the order counts towards money spent and order counts (not test, not cancelled)."""
        return not self.test and self.cancelled_at is None

    @property
    def revenue(self) -> Decimal:
        """current_total_price, or total_price where Shopify gave none."""
        return self.current_total_price if self.current_total_price is not None else self.total_price


class LineItem(TenantMixin, Base):
    """One line of an order; product and variant are Shopify ids."""

    __tablename__ = "line_items"
    __table_args__ = (
        UniqueConstraint("order_id", "shopify_id"),
        Index("ix_line_items_shop_product", "shop_id", "product_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(IdType, ForeignKey("orders.id", ondelete="CASCADE"), index=True,
                                          nullable=False)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    product_id: Mapped[int | None] = mapped_column(BigInteger)
    variant_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(512), default="", nullable=False)
    variant_title: Mapped[str | None] = mapped_column(String(512))
    quantity: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    price: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)

    order: Mapped[Order] = relationship(back_populates="line_items")


class Checkout(TenantMixin, Timestamps, Base):
    """A Shopify checkout; one not completed is a `started_checkout` event."""

    __tablename__ = "checkouts"
    __table_args__ = (UniqueConstraint("shop_id", "token"), Index("ix_checkouts_customer", "customer_id"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token: Mapped[str] = mapped_column(String(64), nullable=False)
    customer_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("customers.id", ondelete="SET NULL"))
    phone: Mapped[str | None] = mapped_column(String(20))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
