"""Tracked short links, their clicks, and orders attributed to campaigns."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, Money, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin


class Link(TenantMixin, Base):
    """One short code (`/r/<code>`) per recipient per target URL."""

    __tablename__ = "links"
    __table_args__ = (UniqueConstraint("code"), UniqueConstraint("message_id", "url"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    campaign_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"),
                                                    index=True)
    subscriber_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="SET NULL"))
    message_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("messages.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class Click(TenantMixin, Base):
    """A recorded click on a tracked link."""

    __tablename__ = "clicks"
    __table_args__ = (Index("ix_clicks_subscriber_at", "subscriber_id", "at"),
                      Index("ix_clicks_campaign", "campaign_id"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    link_id: Mapped[int] = mapped_column(IdType, ForeignKey("links.id", ondelete="CASCADE"), nullable=False)
    campaign_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="SET NULL"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    user_agent: Mapped[str | None] = mapped_column(String(512))


class Attribution(TenantMixin, Base):
    """An order credited to a campaign, by a click inside the window or by its discount code."""

    __tablename__ = "attributions"
    __table_args__ = (UniqueConstraint("order_id"), Index("ix_attributions_campaign", "campaign_id"),
                      Index("ix_attributions_subscriber", "subscriber_id"))  # used_discount events; erasure

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    order_id: Mapped[int] = mapped_column(IdType, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False)
    campaign_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="SET NULL"))
    method: Mapped[str] = mapped_column(String(16), nullable=False)  # click | discount_code
    revenue: Mapped[Decimal] = mapped_column(Money, nullable=False)
    attributed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
