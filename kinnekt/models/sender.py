"""A shop's own senders: the numbers (or alphanumeric sender ids) it sends from, and the US carrier registration
each US number needs before marketing traffic may go out on it.

`SenderNumber` is one sender of one shop, bought through Vonage's Numbers API or brought by the merchant. A phone
number belongs to one shop at a time (inbound texts are routed to the shop by the number they were sent to), so
its `msisdn` is unique among numbers that are not released; an alphanumeric sender cannot receive texts and may be
shared. `SenderRegistration` is the registration the US carriers require for a US number: a toll-free
verification, or a 10DLC brand and campaign; one per number, its status tracked until approved or rejected.
"""
from __future__ import annotations

import datetime as dt
from enum import StrEnum, nonmember

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class SenderKind(StrEnum):
    """What a sender is: a toll-free number, a 10DLC (or other) long code, a mobile number, or an alphanumeric
    sender id (one-way, where the destination country allows it)."""

    TOLL_FREE = "toll_free"
    LONG_CODE = "long_code"
    MOBILE = "mobile"
    ALPHANUMERIC = "alphanumeric"


class SenderStatus(StrEnum):
    """A sender of a shop: `active` (it sends), or `released` (given back to Vonage or removed by the merchant;
    kept for the messages that name it)."""

    ACTIVE = "active"
    RELEASED = "released"


class RegistrationKind(StrEnum):
    """The US registration a number needs: toll-free verification, or a 10DLC brand with a campaign."""

    TOLL_FREE_VERIFICATION = "toll_free_verification"
    TEN_DLC = "10dlc"


class RegistrationStatus(StrEnum):
    """A registration's state: being filled in (`draft`), sent to the carriers (`pending`), `approved`, or
    `rejected` (with the reason in `rejection_reason`)."""

    DRAFT = "draft"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"

    SENDABLE = nonmember(frozenset({APPROVED}))
    """Marketing traffic may go out on the number."""


class SenderNumber(TenantMixin, Timestamps, Base):
    """One sender of one shop: a number bought or brought, or an alphanumeric sender id."""

    __tablename__ = "sender_numbers"
    __table_args__ = (
        # One shop per live number: the inbound router finds the shop by the number a text was sent to.
        Index(
            "uq_sender_numbers_live_msisdn", "msisdn", unique=True,
            postgresql_where=text("status = 'active' AND kind <> 'alphanumeric'"),
            sqlite_where=text("status = 'active' AND kind <> 'alphanumeric'"),
        ),
        # One default sender per shop and country: the sender a text to that country goes out from.
        Index("uq_sender_numbers_default", "shop_id", "country", unique=True,
              postgresql_where=text("status = 'active' AND is_default"),
              sqlite_where=text("status = 'active' AND is_default")),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    msisdn: Mapped[str] = mapped_column(String(20), nullable=False)  # E.164 digits without "+", or the alpha id
    country: Mapped[str] = mapped_column(String(2), nullable=False)  # ISO 3166 alpha-2, upper case
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # SenderKind
    origin: Mapped[str] = mapped_column(String(16), default="bought", nullable=False)  # "bought" | "brought"
    status: Mapped[str] = mapped_column(String(16), default=SenderStatus.ACTIVE, nullable=False)
    features: Mapped[list] = mapped_column(JSON, default=list, nullable=False)  # Vonage's ["SMS", "VOICE", …]
    messages_per_second: Mapped[int | None] = mapped_column(Integer)  # None: the default for its kind
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # the sender for its country
    linked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # inbound/status webhooks point at us
    released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SenderRegistration(TenantMixin, Timestamps, Base):
    """The US carrier registration of one number: its kind, what was submitted, and its status at Vonage."""

    __tablename__ = "sender_registrations"
    __table_args__ = (UniqueConstraint("sender_number_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    sender_number_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("sender_numbers.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # RegistrationKind
    status: Mapped[str] = mapped_column(String(16), default=RegistrationStatus.DRAFT, nullable=False)
    details: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)  # the form as submitted
    external_id: Mapped[str | None] = mapped_column(String(128))  # the verification's (or 10DLC campaign's) id
    brand_id: Mapped[str | None] = mapped_column(String(128))  # 10DLC only: the brand's id at Vonage
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the last status poll
