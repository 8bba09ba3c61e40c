"""Automations: a message sent when a subscriber enters or leaves a segment, after an optional delay."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps
from kinnekt.models.campaign import Campaign

TRIGGERS = ("enter", "leave")


class Automation(TenantMixin, Timestamps, Base):
    """A trigger on a segment's enter/leave log; its message, discount, messages and statistics live on `campaign`.

    `campaign` is a Campaign of kind "automation", so sending, links, attribution and statistics are the
    campaigns' own. `last_event_id` is how far the segment_events log has been read: events at or below it
    never fire (switching an automation on does not text everyone who entered before).
    """

    __tablename__ = "automations"
    __table_args__ = (
        UniqueConstraint("campaign_id"),
        UniqueConstraint("shop_id", "builtin"),  # one of each built-in per shop; NULLs (merchant-made) are free
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    trigger: Mapped[str] = mapped_column(String(8), default="enter", nullable=False)  # enter | leave
    segment_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("segments.id", ondelete="SET NULL"),
                                                   index=True)
    delay_seconds: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    builtin: Mapped[str | None] = mapped_column(String(48))  # welcome | keyword:<id> | winback
    last_event_id: Mapped[int] = mapped_column(IdType, default=0, nullable=False)
    enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    campaign: Mapped[Campaign] = relationship()
