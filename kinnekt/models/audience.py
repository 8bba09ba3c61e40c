"""Ad platform audiences: a shop's connected ad account per platform, the segments it keeps in sync with a
custom audience there, and what was sent to each audience.

`AdConnection` is one shop's connection to one platform (Meta, Google Ads): the OAuth tokens, encrypted at rest
like shop tokens (kinnekt.crypto), the ad account chosen, and whether emails may be sent besides phones.
`AudienceLink` keeps one Kinnekt segment in sync with one audience of that account: its audience id at the
platform, and the state of its last sync (error, retry, counts). `AudienceMember` is one person as the platform
last got them: the hashed identifiers sent, so that the next sync sends only the difference and a removal sends
exactly what was added. A deleted subscriber (a customers/redact) leaves its row behind with no subscriber, so
that the next sync removes those hashes from the audience; the row is deleted once they are removed.
"""
from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class AdPlatform(StrEnum):
    """The ad platforms Kinnekt keeps audiences in."""

    META = "meta"
    GOOGLE = "google"


class LinkStatus(StrEnum):
    """An audience link: `active` (synced daily and after edits), `retrying` (the last sync failed for a passing
    reason: it runs again at `next_attempt_at`), `failed` (it failed for good or too often: shown, synced again
    only when asked or by the next daily sync), `stopped` (its segment was deleted: never synced again)."""

    ACTIVE = "active"
    RETRYING = "retrying"
    FAILED = "failed"
    STOPPED = "stopped"


class AdConnection(TenantMixin, Timestamps, Base):
    """A shop's connection to one ad platform: tokens (encrypted), the ad account chosen, the email setting."""

    __tablename__ = "ad_connections"
    __table_args__ = (UniqueConstraint("shop_id", "platform"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16), nullable=False)  # AdPlatform
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    access_token_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)  # Google only
    accounts: Mapped[list] = mapped_column(JSON, default=list, nullable=False)  # [{"id", "name"}] to choose from
    account_id: Mapped[str | None] = mapped_column(String(64))  # Meta: digits without "act_"; Google: customer id
    account_name: Mapped[str | None] = mapped_column(String(255))
    allow_emails: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)  # why the connection does not work (a refused token)
    connected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class AudienceLink(TenantMixin, Timestamps, Base):
    """One segment kept in sync with one audience of a connected ad account."""

    __tablename__ = "audience_links"
    __table_args__ = (UniqueConstraint("connection_id", "segment_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("ad_connections.id", ondelete="CASCADE"), nullable=False, index=True)
    # A deleted segment leaves the link stopped (its name kept), not gone: the merchant sees what happened.
    segment_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("segments.id", ondelete="SET NULL"))
    segment_name: Mapped[str] = mapped_column(String(255), nullable=False)
    audience_id: Mapped[str | None] = mapped_column(String(128))  # created by the first sync
    audience_name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=LinkStatus.ACTIVE, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # failed attempts in a row
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sync_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # a sync holds the link
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    member_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # people the audience has from us
    last_added: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_removed: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_invalid: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # refused by the platform
    last_requests: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class AudienceMember(TenantMixin, Base):
    """One person as an audience last got them from us: the hashed identifiers sent (SHA-256 hex)."""

    __tablename__ = "audience_members"
    __table_args__ = (
        # Also the index of a sync's reads: a link's rows in subscriber order, and its detached rows (NULL).
        UniqueConstraint("link_id", "subscriber_id"),
        # Deleting a subscriber (a customers/redact) finds its rows here to detach them.
        Index("ix_audience_members_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    link_id: Mapped[int] = mapped_column(IdType, ForeignKey("audience_links.id", ondelete="CASCADE"),
                                         nullable=False)
    subscriber_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="SET NULL"))
    phone_hash: Mapped[str | None] = mapped_column(String(64))
    email_hash: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
