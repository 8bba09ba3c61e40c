"""Received Shopify webhook deliveries, stored before processing; unique on the delivery id."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.models.base import IdType


class WebhookEvent(Base):
    """One webhook delivery. Not tenant-filtered: it may arrive for a shop we no longer know."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("webhook_id"), Index("ix_webhook_events_unprocessed", "processed_at"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_id: Mapped[str | None] = mapped_column(String(64))
    shop_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    shop_domain: Mapped[str] = mapped_column(String(255), nullable=False)
    topic: Mapped[str] = mapped_column(String(64), nullable=False)
    api_version: Mapped[str | None] = mapped_column(String(16))
    triggered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)  # what processing did, e.g. "older than stored: ignored"
