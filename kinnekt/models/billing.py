"""Billing through Shopify: a shop's plan (an app subscription with a capped usage line item) and the usage
records that charge its accepted messages, each message at most once.

`BillingPlan` mirrors the shop's app subscription at Shopify: its ids, status, capped amount and what was used
in the current period. `UsageRecord` is one `appUsageRecordCreate` charge, stored before it is asked for, with
the idempotency key derived from the messages it covers, so a retry asks for the same charge again and Shopify
answers it once. `UsageRecordMessage` says which record charged a message: its primary key is the message id,
so two workers can never charge one message twice.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum, nonmember

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, Money, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class PlanStatus(StrEnum):
    """An app subscription's status at Shopify (AppSubscriptionStatus), lower-cased: waiting for the merchant's
    approval (`pending`), `active`, refused by the merchant (`declined`), not approved in time (`expired`),
    `frozen` (the store's own bill is unpaid), `cancelled`."""

    PENDING = "pending"
    ACTIVE = "active"
    DECLINED = "declined"
    EXPIRED = "expired"
    FROZEN = "frozen"
    CANCELLED = "cancelled"

    BILLABLE = nonmember(frozenset({ACTIVE}))
    """Usage can be charged: the only status in which messages may be sent."""


class UsageStatus(StrEnum):
    """A usage record: stored and not yet answered by Shopify (`pending`), charged (`recorded`), or refused
    (`refused`: above the capped amount, to be asked again once the cap is raised)."""

    PENDING = "pending"
    RECORDED = "recorded"
    REFUSED = "refused"


class BillingPlan(TenantMixin, Timestamps, Base):
    """A shop's plan: its app subscription at Shopify with one capped usage line item (one row per shop)."""

    __tablename__ = "billing_plans"
    __table_args__ = (UniqueConstraint("shop_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    subscription_id: Mapped[str | None] = mapped_column(String(128), unique=True)  # gid://shopify/AppSubscription/…
    line_item_id: Mapped[str | None] = mapped_column(String(128))  # gid of the usage line item (charged against)
    status: Mapped[str] = mapped_column(String(16), default=PlanStatus.PENDING, nullable=False)
    terms: Mapped[str] = mapped_column(Text, default="", nullable=False)
    capped_amount: Mapped[Decimal] = mapped_column(Money, nullable=False)  # US dollars per 30-day period
    balance_used: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), nullable=False)  # this period
    requested_cap: Mapped[Decimal | None] = mapped_column(Money)  # a raise waiting for the merchant's approval
    confirmation_url: Mapped[str | None] = mapped_column(Text)  # where the merchant approves (plan or raise)
    test: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # a test charge (never billed)
    cap_reached_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # Shopify refused a record: stop
    approaching_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # Shopify warned: 90 % of the cap
    period_ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # currentPeriodEnd


class UsageRecord(TenantMixin, Base):
    """One usage charge at Shopify for a batch of accepted messages; unique on its idempotency key."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("idempotency_key"),
        Index("ix_usage_records_status", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), nullable=False)  # from the messages it covers
    status: Mapped[str] = mapped_column(String(16), default=UsageStatus.PENDING, nullable=False)
    messages: Mapped[int] = mapped_column(Integer, nullable=False)
    parts: Mapped[int] = mapped_column(Integer, nullable=False)
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)  # US dollars, by kinnekt.sms.prices
    description: Mapped[str] = mapped_column(Text, nullable=False)
    shopify_id: Mapped[str | None] = mapped_column(String(128))  # gid://shopify/AppUsageRecord/…
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    recorded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class UsageRecordMessage(Base):
    """Which usage record charged a message: one row per message, ever (the primary key)."""

    __tablename__ = "usage_record_messages"

    message_id: Mapped[int] = mapped_column(IdType, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    usage_record_id: Mapped[int] = mapped_column(IdType, ForeignKey("usage_records.id", ondelete="CASCADE"),
                                                 nullable=False, index=True)
