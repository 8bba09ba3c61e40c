"""Outbound messages (one row per campaign recipient, plus replies and tests), inbound messages, the demo outbox."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from enum import StrEnum, nonmember

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Index, Integer, String, Text, UniqueConstraint, column
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, Money, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class MessageStatus(StrEnum):
    """Where an outbound message is: queued (`pending`), held by a sender's batch (`claimed`), left out of the
    audience (`skipped`), at the provider's door (`sending`), taken by the provider (`sent`), confirmed by a
    receipt (`delivered`), refused (`failed`), lost on the way with no answer (`unknown`), or never sent because
    its campaign ended (`ended`)."""

    PENDING = "pending"
    CLAIMED = "claimed"
    SKIPPED = "skipped"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    ENDED = "ended"

    WAITING = nonmember(frozenset({PENDING, CLAIMED}))
    """Not handed to the provider yet: ending a campaign ends these."""
    OPEN = nonmember(frozenset({PENDING, CLAIMED, SENDING}))
    """Not over yet: a sender may still hand these to the provider."""
    FINAL = nonmember(frozenset({SKIPPED, SENT, DELIVERED, FAILED, UNKNOWN, ENDED}))
    """Over for the senders (a receipt may still turn `sent` or `unknown` into `delivered` or `failed`)."""
    ACCEPTED = nonmember(frozenset({SENT, DELIVERED}))
    """Taken by the provider: what counts as a text the subscriber received."""


MESSAGE_STATUSES = tuple(MessageStatus)
_ROW_REF = re.compile(r"m([1-9][0-9]{0,17})")


HOLD = "hold"
"""The claim token of a pending row held back until its discount code exists at Shopify (automations): no
sender claims it (a claim's own token is 32 hex digits); releasing it sets the token back to NULL."""


def row_ref(message_id: int) -> str:
    """The client-ref sent for a row that stores none of its own ("m<id>"); the provider echoes it on receipts."""
    return f"m{message_id}"


def row_ref_id(ref: str) -> int | None:
    """The message id a client-ref made by `row_ref` names, else None."""
    match = _ROW_REF.fullmatch(ref)
    return int(match.group(1)) if match else None


class Message(TenantMixin, Timestamps, Base):
    """An outbound SMS. Inserted before sending, so the row (not a counter) is the truth."""

    __tablename__ = "messages"
    __table_args__ = (
        # One message per recipient of a campaign (occurrence 0); an automation's message once per entry into
        # its segment (occurrence = the segment_events id of the entry). NULL campaign (replies, tests) is free.
        UniqueConstraint("campaign_id", "subscriber_id", "occurrence", name="uq_messages_campaign_recipient"),
        # A campaign's message belongs to the campaign's shop: one key checks both, and deleting either
        # deletes the message. Messages without a campaign (replies, tests) are deleted with their shop by
        # compliance.redact_shop. Declared on SQLite only: PostgreSQL checks the same rule once per
        # statement instead of once per row (models/campaign_key.py; a snapshot inserts 100k rows at once).
        ForeignKeyConstraint(["campaign_id", "shop_id"], ["campaigns.id", "campaigns.shop_id"],
                             ondelete="CASCADE").ddl_if(dialect="sqlite"),
        # A message's subscriber, if any, is one of its shop's; deleting the subscriber leaves the message without
        # one. Declared on SQLite only, like the campaign key: PostgreSQL checks it per statement, holding off a
        # deletion with a lock per shop rather than one per subscriber (models/subscriber_key.py).
        ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="SET NULL").ddl_if(dialect="sqlite"),
        Index("ix_messages_campaign_status", "campaign_id", "status", "id"),
        Index("ix_messages_subscriber_sent", "subscriber_id", "sent_at"),
        # Both are NULL until the message is sent (a snapshot row has neither): partial indexes skip those rows.
        Index("ux_messages_provider_id", "provider_id", unique=True,
              postgresql_where=column("provider_id").is_not(None), sqlite_where=column("provider_id").is_not(None)),
        Index("ix_messages_client_ref", "client_ref",  # receipts find a reply or test by it (campaign rows: m<id>)
              postgresql_where=column("client_ref").is_not(None), sqlite_where=column("client_ref").is_not(None)),
        # No index on shop_id alone (a snapshot would write 100k entries to it): a shop's messages are found
        # through its campaigns or its subscribers, and those with neither (tests, replies to strangers,
        # messages of erased subscribers) through this one.
        Index("ix_messages_shop_unlinked", "shop_id", postgresql_where=column("subscriber_id").is_(None),
              sqlite_where=column("subscriber_id").is_(None)),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shop_id: Mapped[int] = mapped_column(IdType, nullable=False)  # keyed with campaign_id (above)
    campaign_id: Mapped[int | None] = mapped_column(IdType)
    subscriber_id: Mapped[int | None] = mapped_column(IdType)  # keyed to subscribers (above)
    kind: Mapped[str] = mapped_column(String(16), default="campaign", nullable=False)  # campaign|automation|reply|..
    occurrence: Mapped[int] = mapped_column(IdType, default=0, server_default="0", nullable=False)
    to_phone: Mapped[str] = mapped_column(String(20), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.PENDING, nullable=False)
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # quiet hours defer to here
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    claim_token: Mapped[str | None] = mapped_column(String(32))  # which sender's batch holds a "claimed" row
    client_ref: Mapped[str | None] = mapped_column(String(40))
    discount_code: Mapped[str | None] = mapped_column(String(64))  # the code this recipient got (unique mode)
    provider_id: Mapped[str | None] = mapped_column(String(64))
    sender: Mapped[str | None] = mapped_column(String(32))  # the number ("+<digits>") or id it went out from
    encoding: Mapped[str | None] = mapped_column(String(8))  # gsm7 | ucs2
    segments: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Money)
    error_code: Mapped[str | None] = mapped_column(String(16))
    error_reason: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class InboundMessage(TenantMixin, Base):
    """An SMS received from a subscriber; unique on the provider's message id so a retry is a no-op."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("provider_id"),
        Index("ix_inbound_messages_subscriber", "subscriber_id"),
        Index("ix_inbound_messages_concat", "from_phone", "concat_ref"),
        Index("ix_inbound_messages_unprocessed", "processed_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64), nullable=False)
    subscriber_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="SET NULL"))
    from_phone: Mapped[str] = mapped_column(String(20), nullable=False)
    to_number: Mapped[str | None] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text, default="", nullable=False)
    intent: Mapped[str | None] = mapped_column(String(16))  # stop | help | start | keyword | other | part
    # A long SMS arrives as several webhooks; the parts share concat_ref and are handled once, together.
    concat_ref: Mapped[str | None] = mapped_column(String(32))
    concat_total: Mapped[int | None] = mapped_column(Integer)
    concat_part: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OutboxMessage(TenantMixin, Base):
    """What the demo's Outbox sink "sent": shown on the Outbox page, never handed to a provider."""

    __tablename__ = "outbox_messages"
    __table_args__ = (UniqueConstraint("client_ref"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    to_phone: Mapped[str] = mapped_column(String(20), nullable=False)
    sender: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, nullable=False)
    client_ref: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
