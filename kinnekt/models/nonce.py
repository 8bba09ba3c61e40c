"""Nonces of signed Vonage webhooks already accepted, so a captured request cannot be replayed."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.models.base import IdType


class SignatureNonce(Base):
    """One accepted nonce (used when there is no Redis); unique, pruned after the timestamp window."""

    __tablename__ = "signature_nonces"
    __table_args__ = (UniqueConstraint("nonce"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), nullable=False)
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False, index=True)
