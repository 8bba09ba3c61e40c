"""A Shopify store that installed Kinnekt: identity, encrypted tokens, install state and settings."""
from __future__ import annotations

import datetime as dt
from enum import StrEnum, nonmember

from sqlalchemy import Boolean, Integer, String, Text, JSON
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, Timestamps


class SyncStatus(StrEnum):
    """A shop's data sync: `never` run (or to run again), `queued`, `running`, `done`, or `failed`."""

    NEVER = "never"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    ACTIVE = nonmember(frozenset({QUEUED, RUNNING}))
    """A sync is under way: another one cannot start."""


class Shop(Timestamps, Base):
    """One merchant store. Tokens are stored encrypted (see kinnekt.crypto)."""

    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    email: Mapped[str | None] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", nullable=False)
    currency: Mapped[str] = mapped_column(String(3), default="USD", nullable=False)
    primary_domain: Mapped[str | None] = mapped_column(String(255))

    # Install state and tokens (offline, expiring; or a custom app's static token).
    token_kind: Mapped[str] = mapped_column(String(16), default="expiring", nullable=False)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    access_token_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    scopes: Mapped[str] = mapped_column(Text, default="", nullable=False)
    installed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    uninstalled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    needs_reauth: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)

    # Sync progress, rendered in Settings.
    sync_status: Mapped[str] = mapped_column(String(16), default=SyncStatus.NEVER, nullable=False)
    sync_progress: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # High-water mark of the periodic reconciliation (changes fetched up to here).
    reconciled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    # SMS settings.
    sender: Mapped[str | None] = mapped_column(String(32))
    quiet_hours_enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    quiet_hours_start: Mapped[int] = mapped_column(Integer, default=21 * 60, nullable=False)  # minutes after midnight
    quiet_hours_end: Mapped[int] = mapped_column(Integer, default=8 * 60, nullable=False)
    compliance_footer: Mapped[str] = mapped_column(String(160), default="Reply STOP to unsubscribe", nullable=False)
    help_text: Mapped[str] = mapped_column(
        Text, default="Reply STOP to unsubscribe. Msg & data rates may apply.", nullable=False)
    double_opt_in: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    smart_sending_hours: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # 0 = off
    suppression_threshold: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # 0 = off
    attribution_window_days: Mapped[int] = mapped_column(Integer, default=5, nullable=False)
    checkout_collection: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    popup_settings: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)

    # Storefront signup
    # The keyword the shareable link pre-fills; texting it in gives source Shareable Link (None: link off).
    share_keyword: Mapped[str | None] = mapped_column(String(32))

    # Storefront events (the web pixel)
    # The key the shop's pixel sends with every batch (set in the pixel's settings); None until first needed.
    pixel_key: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    web_pixel_id: Mapped[str | None] = mapped_column(String(128))  # the WebPixel gid Shopify gave on creation
    storefront_retention_days: Mapped[int] = mapped_column(Integer, default=90, nullable=False)

    @property
    def installed(self) -> bool:
        """True while the app is installed on this shop."""
        return self.installed_at is not None and self.uninstalled_at is None

    def __repr__(self) -> str:
        return f"<Shop {self.id} {self.domain}>"
