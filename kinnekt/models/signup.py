"""Web sign-up attempts (the popup), kept a day so sign-ups can be limited per IP address and per number."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin


class SignupAttempt(TenantMixin, Base):
    """One accepted sign-up attempt: the shopper's IP (None when it could not be told) and the number, E.164."""

    __tablename__ = "signup_attempts"
    __table_args__ = (
        Index("ix_signup_attempts_shop_ip_at", "shop_id", "ip", "at"),
        Index("ix_signup_attempts_shop_phone_at", "shop_id", "phone", "at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
