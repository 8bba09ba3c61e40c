"""Profile properties: what a merchant collects or imports about a subscriber (birthday, language, custom ones).

`ProfileProperty` is a custom property a shop defined (a name, unique per shop case-insensitively, and a type);
the built-ins (`birthday`, `language`) are not rows: they exist in every shop (`kinnekt.subscribers.properties`).
`SubscriberProperty` is one subscriber's value of one property, in the column of its type, so that segment rules
compare numbers as numbers and dates as dates on SQLite and PostgreSQL alike: text with its case-folded copy,
numbers as integer 1/10000 units (`Money`: exact), dates as DATE with their month and day (`anniversary`,
month × 100 + day) for the birthday-style rules.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.casefold import folded_column, keep_folded
from kinnekt.db import Base, Money, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin, Timestamps

PROPERTY_TYPES = ("text", "number", "date")


class ProfileProperty(TenantMixin, Timestamps, Base):
    """A custom property of a shop: its name as the merchant wrote it and its type (text, number, date)."""

    __tablename__ = "profile_properties"
    __table_args__ = (UniqueConstraint("shop_id", "name_key"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    name_key: Mapped[str] = mapped_column(String(64), nullable=False)  # fold(name): what uniqueness and rules use
    type: Mapped[str] = mapped_column(String(8), nullable=False)


class SubscriberProperty(TenantMixin, Base):
    """One subscriber's value of one property (built-in or custom), in the column of the property's type."""

    __tablename__ = "subscriber_properties"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "name_key"),
        Index("ix_subscriber_properties_shop_name", "shop_id", "name_key"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="CASCADE"),
                                               nullable=False)
    name_key: Mapped[str] = mapped_column(String(64), nullable=False)  # the property's folded name
    text_value: Mapped[str | None] = mapped_column(Text)
    text_folded: Mapped[str | None] = folded_column("text_value")
    number_value: Mapped[Decimal | None] = mapped_column(Money)
    date_value: Mapped[dt.date | None] = mapped_column(Date)
    anniversary: Mapped[int | None] = mapped_column(Integer)  # month × 100 + day of date_value
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)


keep_folded(SubscriberProperty, ("text_value", "text_folded"))
