"""Tombstones of Shopify objects deleted by webhook, so a late, older update cannot bring one back."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin


class ShopifyDeletion(TenantMixin, Base):
    """One deleted customer, order, product or collection, with when Shopify deleted it."""

    __tablename__ = "shopify_deletions"
    __table_args__ = (UniqueConstraint("shop_id", "resource", "shopify_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    resource: Mapped[str] = mapped_column(String(16), nullable=False)  # customer | order | product | collection
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    deleted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
