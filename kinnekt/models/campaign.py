"""Campaigns: one message to one or more segments, now or at a time, with their audience choice."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum, nonmember

from sqlalchemy import Boolean, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kinnekt.db import Base, Money, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class CampaignStatus(StrEnum):
    """A campaign's lifecycle: `draft`, `scheduled` (to start at `send_at`), `in_progress` (sending),
    `completed` (every message handled), `ended` (stopped by the merchant), `failed`."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    ENDED = "ended"
    FAILED = "failed"

    ACTIVE = nonmember(frozenset({SCHEDULED, IN_PROGRESS}))
    """Going to send or sending."""
    FINISHED = nonmember(frozenset({COMPLETED, ENDED, FAILED}))
    """Over: nothing more is sent."""
    STOPPED = nonmember(frozenset({ENDED, FAILED}))
    """Over before every message was handled."""


STATUSES = tuple(CampaignStatus)
STATUS_LABELS = {
    "draft": "Draft",
    "scheduled": "Scheduled",
    "in_progress": "In Progress",
    "completed": "Completed",
    "ended": "Ended",
    "failed": "Failed",
}
DISCOUNT_MODES = ("none", "shared", "unique")
KINDS = ("campaign", "run", "automation", "flow")
"""`campaign`: one the merchant composed (one-off or recurring); `run`: one run of a recurring campaign
(`parent_id`), with its own snapshot and statistics; `automation`: the message of an automation
(kinnekt/models/automation.py), which sends for as long as the automation is on; `flow`: the message of a flow's
send step (kinnekt/models/flow.py), likewise."""
TRIGGERED_KINDS = ("automation", "flow")
"""Kinds whose rows are queued by a trigger one at a time (never snapshotted): they never complete, their
messages are checked for smart sending as they go out, and their answers are written by the sender itself."""
REPEATS = ("none", "weekly", "monthly")


class Campaign(TenantMixin, Timestamps, Base):
    """A campaign and its lifecycle state; per-recipient truth lives in `messages`."""

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_status_send_at", "status", "send_at"),
        UniqueConstraint("parent_id", "send_at"),  # one run of a recurring campaign per due time
        # The target of messages' (campaign, shop) key. On PostgreSQL it also makes a change of shop_id take
        # the row lock that waits for a snapshot's FOR KEY SHARE (models/campaign_key.py).
        UniqueConstraint("id", "shop_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    body: Mapped[str] = mapped_column(Text, default="", nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)  # the on/off switcher
    send_now: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    send_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    recipient_local_time: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    discount_mode: Mapped[str] = mapped_column(String(8), default="none", nullable=False)
    discount_code: Mapped[str | None] = mapped_column(String(64))  # the shared code, or the unique codes' prefix
    discount_kind: Mapped[str | None] = mapped_column(String(8))  # percent | amount
    discount_value: Mapped[Decimal | None] = mapped_column(Money)  # percent (0-100) or amount in shop currency
    discount_shopify_id: Mapped[str | None] = mapped_column(String(64))  # gid of the Shopify discount we created
    snapshot_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # audience frozen into messages rows
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last batch claimed by a sender
    kind: Mapped[str] = mapped_column(String(16), default="campaign", server_default="campaign", nullable=False)
    parent_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"),
                                                  index=True)  # a run's recurring campaign
    repeat: Mapped[str] = mapped_column(String(8), default="none", server_default="none", nullable=False)
    repeat_until: Mapped[dt.date | None] = mapped_column(Date)  # last day a recurring campaign may run (shop's zone)
    repeat_anchor: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # first run as chosen: its day and time rule
    # "up_to_cap": the merchant chose to send only as far as the plan's cap allows (kinnekt/billing/allowance.py)
    cap_choice: Mapped[str | None] = mapped_column(String(16))

    audience: Mapped[list["CampaignSegment"]] = relationship(
        back_populates="campaign", cascade="all, delete-orphan", passive_deletes=True)

    @property
    def status_label(self) -> str:
        """The status in the merchant's words."""
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def switched_off(self) -> bool:
        """True for a scheduled campaign the merchant switched off: it waits, and sends nothing until switched on."""
        return self.status == CampaignStatus.SCHEDULED and not self.enabled


class CampaignSegment(TenantMixin, Base):
    """A segment a campaign includes or excludes."""

    __tablename__ = "campaign_segments"
    __table_args__ = (UniqueConstraint("campaign_id", "segment_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False)
    segment_id: Mapped[int] = mapped_column(IdType, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False,
                                            index=True)
    mode: Mapped[str] = mapped_column(String(8), default="include", nullable=False)  # include | exclude

    campaign: Mapped[Campaign] = relationship(back_populates="audience")
