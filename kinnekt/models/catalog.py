"""The synced catalog: products and their variants, collections, and which products each collection holds."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, Money, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class Product(TenantMixin, Timestamps, Base):
    """A Shopify product (for the picker and titles)."""

    __tablename__ = "products"
    __table_args__ = (UniqueConstraint("shop_id", "shopify_id"), Index("ix_products_shop_title", "shop_id", "title"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    title: Mapped[str] = mapped_column(String(512), nullable=False)
    handle: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="active", nullable=False)
    image_url: Mapped[str | None] = mapped_column(String(2048))
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ProductVariant(TenantMixin, Timestamps, Base):
    """One variant of a synced product (size, colour...), for the picker; deleted with its product."""

    __tablename__ = "product_variants"
    __table_args__ = (UniqueConstraint("shop_id", "shopify_id"),
                      Index("ix_product_variants_product", "product_id", "position"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    product_id: Mapped[int] = mapped_column(IdType, ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    title: Mapped[str] = mapped_column(String(512), default="", nullable=False)
    sku: Mapped[str | None] = mapped_column(String(255))
    price: Mapped[Decimal | None] = mapped_column(Money)
    position: Mapped[int] = mapped_column(Integer, default=1, nullable=False)


class Collection(TenantMixin, Timestamps, Base):
    """A Shopify collection (custom or smart)."""

    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("shop_id", "shopify_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    title: Mapped[str] = mapped_column(String(512), nullable=False)
    handle: Mapped[str | None] = mapped_column(String(255))
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class CollectionProduct(TenantMixin, Base):
    """Membership of a product in a collection, by Shopify ids (as segment rules name them)."""

    __tablename__ = "collection_products"
    __table_args__ = (
        UniqueConstraint("shop_id", "collection_id", "product_id"),
        Index("ix_collection_products_product", "shop_id", "product_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    collection_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # Shopify collection id
    product_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # Shopify product id
