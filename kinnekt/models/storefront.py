"""What shoppers do on the storefront, as the app's web pixel reports it, and which browser is whose.

`StorefrontEvent` is one standard customer event (`page_viewed`, `product_viewed`, `collection_viewed`,
`search_submitted`, `product_added_to_cart`, `cart_viewed`, `checkout_started`), stored append-only and at
most once per shop and pixel event id. Its `subscriber_id` is set when the event's browser (`client_id`) is
known to belong to a subscriber, at ingestion or later, when the browser is identified; events no one is
known for are kept for a bounded time (the shop's retention) and then deleted. Product, variant and
collection ids are Shopify's numeric ids, as segment rules name them.

`StorefrontBrowser` ties one browser (`client_id`, Shopify's per-browser id) to the subscriber it was
identified as: by a signed-in customer, the phone of a started checkout, or a tracked link's `kn` reference
in the landing URL. One subscriber per browser and shop; a later identification replaces an earlier one.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, Money, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin

STOREFRONT_EVENT_NAMES = ("page_viewed", "product_viewed", "collection_viewed", "search_submitted",
                          "product_added_to_cart", "cart_viewed", "checkout_started")
BROWSER_SOURCES = ("customer", "checkout", "link")


class StorefrontEvent(TenantMixin, Base):
    """One storefront event from the web pixel; never updated except to attribute it to a subscriber."""

    __tablename__ = "storefront_events"
    __table_args__ = (
        UniqueConstraint("shop_id", "event_id"),
        Index("ix_storefront_events_subscriber", "subscriber_id", "name", "occurred_at"),
        Index("ix_storefront_events_browser", "shop_id", "client_id"),
        Index("ix_storefront_events_shop_occurred", "shop_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), nullable=False)  # the pixel's event id: idempotency
    name: Mapped[str] = mapped_column(String(32), nullable=False)  # one of STOREFRONT_EVENT_NAMES
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)  # the event's own timestamp
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    client_id: Mapped[str | None] = mapped_column(String(64))  # Shopify's browser id
    subscriber_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="CASCADE"))
    customer_id: Mapped[int | None] = mapped_column(BigInteger)  # Shopify customer id, when signed in
    product_id: Mapped[int | None] = mapped_column(BigInteger)  # Shopify product id
    variant_id: Mapped[int | None] = mapped_column(BigInteger)  # Shopify variant id
    collection_id: Mapped[int | None] = mapped_column(BigInteger)  # Shopify collection id
    quantity: Mapped[int | None] = mapped_column(Integer)  # product_added_to_cart
    value: Mapped[Decimal | None] = mapped_column(Money)  # price × quantity, or the checkout's total
    currency: Mapped[str | None] = mapped_column(String(3))
    checkout_token: Mapped[str | None] = mapped_column(String(64))  # checkout_started
    search_query: Mapped[str | None] = mapped_column(String(255))  # search_submitted
    url: Mapped[str | None] = mapped_column(Text)  # the page's URL, cut to 2,048 characters


class StorefrontBrowser(TenantMixin, Base):
    """A browser identified as a subscriber's, and how (a signed-in customer, a checkout's phone, a link)."""

    __tablename__ = "storefront_browsers"
    __table_args__ = (UniqueConstraint("shop_id", "client_id"),
                      Index("ix_storefront_browsers_subscriber", "subscriber_id"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    subscriber_id: Mapped[int] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="CASCADE"),
                                               nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # one of BROWSER_SOURCES
    identified_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
