"""Shopify orders, their line items, and checkouts (for the started-checkout event)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (BigInteger, Boolean, ForeignKey, Index, Integer, JSON, String, UniqueConstraint, event, select,
                        text, update)
from sqlalchemy.orm import Mapped, attributes, mapped_column, relationship

from kinnekt.db import Base, Money, UTCDateTime
from kinnekt.casefold import folded_column, keep_folded
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
        # Counted orders by customer, covering: segment rules on orders placed (counts in a window, line items
        # of counted orders) read it alone, in customer order, instead of the whole table (PostgreSQL only).
        Index("ix_orders_counted", "shop_id", "customer_id", "created_at", postgresql_include=["id"],
              postgresql_where=text("test IS false AND cancelled_at IS NULL")).ddl_if(dialect="postgresql"),
        # Segment rules' sets of customers (issue 22, PostgreSQL only): each reads the index alone (the customer is
        # included), only the entries its condition selects, instead of every order. The partial conditions are
        # the compiler's own words (`test IS false`, `cancelled_at IS NULL`), which is what lets the planner use
        # them (tests/test_segment_indexes.py). Counted orders placed in a window ("2 orders in the last 90
        # days"), orders by payment status, cancelled orders.
        Index("ix_orders_counted_created", "shop_id", "created_at", postgresql_include=["customer_id"],
              postgresql_where=text("test IS false AND cancelled_at IS NULL")).ddl_if(dialect="postgresql"),
        Index("ix_orders_financial_status", "shop_id", "financial_status", postgresql_include=["customer_id"],
              postgresql_where=text("test IS false")).ddl_if(dialect="postgresql"),
        Index("ix_orders_cancelled", "shop_id", "customer_id",
              postgresql_where=text("test IS false AND cancelled_at IS NOT NULL")).ddl_if(dialect="postgresql"),
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
        return counts(self.test, self.cancelled_at)

    @property
    def revenue(self) -> Decimal:
        """current_total_price, or total_price where Shopify gave none."""
        return self.current_total_price if self.current_total_price is not None else self.total_price


def counts(test: bool, cancelled_at: dt.datetime | None) -> bool:
    """Whether an order with these values is counted (segment-rules.md "Which orders count": not test, not
    cancelled)."""
    return not test and cancelled_at is None


class LineItem(TenantMixin, Base):
    """One line of an order; product and variant are Shopify ids.

    `customer_id` and `counted` repeat the order's customer and `Order.counted`, so that segment rules on
    line items read this table alone. They are kept equal to the order's: the ingest writes them with
    the line items (an order's line items are rewritten whenever the order is), the ORM events below
    cover any other insert of a line item or change of an order through the ORM, and the database sets
    `customer_id` to NULL when the customer is deleted (as it does for the order). A Core UPDATE of
    `orders.customer_id`, `test` or `cancelled_at` must update the line items too.
    """

    __tablename__ = "line_items"
    __table_args__ = (
        UniqueConstraint("order_id", "shopify_id"),
        # Covering on PostgreSQL (order_id included): "bought product X" reads the index alone, not the rows.
        Index("ix_line_items_shop_product", "shop_id", "product_id", postgresql_include=["order_id"]),
        # A customer's line items: the re-check's probes, and the SET NULL when a customer is deleted.
        Index("ix_line_items_customer", "customer_id"),
        # Segment rules' sets of customers (issue 22, PostgreSQL only): line items of counted orders by product
        # ("bought product X", "… from collection Y") and by price, the customer included, so a preview reads
        # the matching index entries alone. `counted IS true` is the compiler's own condition.
        Index("ix_line_items_counted_product", "shop_id", "product_id", postgresql_include=["customer_id"],
              postgresql_where=text("counted IS true")).ddl_if(dialect="postgresql"),
        Index("ix_line_items_counted_price", "shop_id", "price", postgresql_include=["customer_id"],
              postgresql_where=text("counted IS true")).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(IdType, ForeignKey("orders.id", ondelete="CASCADE"), index=True,
                                          nullable=False)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    product_id: Mapped[int | None] = mapped_column(BigInteger)
    variant_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(512), default="", nullable=False)
    title_folded: Mapped[str | None] = folded_column("title")  # fold(title): what segments compare
    variant_title: Mapped[str | None] = mapped_column(String(512))
    variant_title_folded: Mapped[str | None] = folded_column("variant_title")  # what segments compare
    quantity: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    price: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)
    customer_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("customers.id", ondelete="SET NULL"))
    counted: Mapped[bool] = mapped_column(Boolean, nullable=False)  # its order is counted (not test, not cancelled)

    order: Mapped[Order] = relationship(back_populates="line_items")


_ORDER_FACTS = ("customer_id", "test", "cancelled_at")
"""The order's columns that its line items repeat (as customer_id and counted)."""


@event.listens_for(LineItem, "before_insert")
def _line_item_from_order(mapper, connection, target: LineItem) -> None:
    """A line item inserted through the ORM takes its customer and `counted` from its (already flushed) order."""
    orders = Order.__table__
    customer_id, test, cancelled_at = connection.execute(
        select(orders.c.customer_id, orders.c.test, orders.c.cancelled_at).where(orders.c.id == target.order_id)).one()
    target.customer_id, target.counted = customer_id, counts(test, cancelled_at)


@event.listens_for(Order, "after_update")
def _order_facts_to_line_items(mapper, connection, target: Order) -> None:
    """An order changed through the ORM (customer, test, cancelled): its line items follow."""
    if any(attributes.get_history(target, name).has_changes() for name in _ORDER_FACTS):
        connection.execute(update(LineItem.__table__).where(LineItem.__table__.c.order_id == target.id)
                           .values(customer_id=target.customer_id, counted=counts(target.test, target.cancelled_at)))


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
    recovery_url: Mapped[str | None] = mapped_column(String(2048))  # abandoned_checkout_url: flows' {checkout_url}


keep_folded(LineItem, ('title', 'title_folded'), ('variant_title', 'variant_title_folded'))
