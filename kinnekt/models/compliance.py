"""Privacy-law requests from Shopify: a customer's data export the merchant downloads."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin


class DataRequest(TenantMixin, Base):
    """One customers/data_request: who asked, and everything we held for that customer when it arrived."""

    __tablename__ = "data_requests"
    # A repeated delivery of the same Shopify request (another subscription, a retry) is stored once.
    __table_args__ = (UniqueConstraint("shop_id", "shopify_request_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shopify_request_id: Mapped[int | None] = mapped_column(BigInteger)
    customer_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(64))
    orders_requested: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    report: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)
