"""SMS subscribers (the audience), their consent history, and opt-in keywords."""
from __future__ import annotations

import datetime as dt
from enum import StrEnum, nonmember

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.casefold import folded_column, keep_folded
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class SubscriberStatus(StrEnum):
    """A subscriber's consent: signed up and waiting to confirm (`pending`), `subscribed`, or `unsubscribed`."""

    PENDING = "pending"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"

    NOT_SUBSCRIBED = nonmember(frozenset({PENDING, UNSUBSCRIBED}))
    """Not (or no longer) receiving marketing texts."""


STATUSES = tuple(SubscriberStatus)
STATUS_LABELS = {"pending": "Pending", "subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}
"""Each status in the merchant's words (the subscribers list and detail, a keyword's members)."""
SOURCES = ("keyword", "mobile_popup", "shareable_link", "checkout", "import", "manual")
SOURCE_LABELS = {
    "keyword": "Keyword",
    "mobile_popup": "Mobile Popup",
    "shareable_link": "Shareable Link",
    "checkout": "Checkout",
    "import": "Import",
    "manual": "Manual",
}


class Keyword(TenantMixin, Timestamps, Base):
    """A word customers text in to subscribe; stored upper-case, unique per shop."""

    __tablename__ = "keywords"
    __table_args__ = (UniqueConstraint("shop_id", "word"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    word: Mapped[str] = mapped_column(String(32), nullable=False)
    reply_text: Mapped[str] = mapped_column(Text, default="", nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class Subscriber(TenantMixin, Timestamps, Base):
    """A phone number (E.164) with its consent status, source and engagement facts."""

    __tablename__ = "subscribers"
    __table_args__ = (
        UniqueConstraint("shop_id", "phone"),
        Index("ix_subscribers_shop_status", "shop_id", "status"),
        Index("ix_subscribers_shop_source", "shop_id", "source"),
        Index("ix_subscribers_customer", "customer_id"),
        # The subscribers a segment can hold (subscribed, not suppressed), by customer, with the id (issue 22,
        # PostgreSQL only): a preview or build whose rules are on the customer's rows reads them from this index
        # alone, not the table. The condition is the compiler's own, with the status written literally.
        Index("ix_subscribers_segment_candidates", "shop_id", "customer_id", postgresql_include=["id"],
              postgresql_where=text("status = 'subscribed' AND suppressed_at IS NULL")).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    keyword_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("keywords.id", ondelete="SET NULL"))
    keyword: Mapped[str | None] = mapped_column(String(32))  # the word as texted, upper-case, kept if deleted
    keyword_folded: Mapped[str | None] = folded_column("keyword")  # fold(keyword): what segments compare
    customer_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("customers.id", ondelete="SET NULL"))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))  # from a CSV import
    email: Mapped[str | None] = mapped_column(String(255))  # from a CSV import
    country: Mapped[str | None] = mapped_column(String(2))
    carrier: Mapped[str | None] = mapped_column(String(128))
    carrier_folded: Mapped[str | None] = folded_column("carrier")  # fold(carrier): what segments compare
    timezone: Mapped[str | None] = mapped_column(String(64))

    # Consent record, for compliance.
    consent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_ip: Mapped[str | None] = mapped_column(String(64))
    consent_message_id: Mapped[str | None] = mapped_column(String(64))
    # When a web sign-up last texted this opted-out number a confirmation request (at most one per
    # defaults.POPUP_REOPTIN_INTERVAL_DAYS); the opt-out itself stands until the number replies.
    reoptin_asked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    subscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    unsubscribe_reason: Mapped[str | None] = mapped_column(String(255))
    suppressed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # permanently failing number
    suppressed_reason: Mapped[str | None] = mapped_column(String(255))

    # Engagement facts, kept current by sending and click tracking.
    sent_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    clicks_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_received_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_clicked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    customer = relationship("Customer", lazy="joined")
    events: Mapped[list["SubscriptionEvent"]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True,
        order_by="SubscriptionEvent.at")

    @property
    def marketable(self) -> bool:
        """True when campaigns may text this number: subscribed and not suppressed."""
        return self.status == SubscriberStatus.SUBSCRIBED and self.suppressed_at is None

    @property
    def source_label(self) -> str:
        """The source in the merchant's words."""
        return SOURCE_LABELS.get(self.source, self.source)


class SubscriptionEvent(TenantMixin, Base):
    """Append-only history of a subscriber's consent: subscribed, unsubscribed, confirmed, suppressed."""

    __tablename__ = "subscription_events"
    __table_args__ = (Index("ix_subscription_events_subscriber_at", "subscriber_id", "at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="CASCADE"),
                                               nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # subscribed | unsubscribed | pending | suppressed
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    source: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)  # reason, text shown, message id

    subscriber: Mapped[Subscriber] = relationship(back_populates="events")


keep_folded(Subscriber, ('keyword', 'keyword_folded'), ('carrier', 'carrier_folded'))
