"""The shop's own Shopify customer segments (ShopifyQL, made in the Shopify admin), their members as last read
from the Admin API, and the Kinnekt segments mirrored into Shopify customer tags.

`shopify_segments` holds one row per Shopify segment the shop has (its name, query, member count, when its members
were last read and the last error); `shopify_segment_members` holds its members by Shopify ids (the segment's and
the customer's), unique per shop, segment and customer: the compiler's `shopify_segment` rule reads this table
only (kinnekt.segments must not call Shopify). `segment_tag_mirrors` is a Kinnekt segment's "mirror into a Shopify
customer tag" setting and sync state, `segment_tagged_customers` the customers Kinnekt has tagged for it (what a
sync compares the segment's members with). Neither of those two has a foreign key to `segments`: they outlive a
deleted segment until its tags are removed at Shopify.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps


class ShopifySegment(TenantMixin, Timestamps, Base):
    """A Shopify customer segment of the shop (Admin API `segments`), as last listed."""

    __tablename__ = "shopify_segments"
    __table_args__ = (UniqueConstraint("shop_id", "shopify_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    shopify_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # the numeric part of gid://shopify/Segment/N
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    query: Mapped[str] = mapped_column(Text, default="", nullable=False)  # its ShopifyQL, shown to the merchant
    member_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    refreshed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # members last read completely
    last_error: Mapped[str | None] = mapped_column(Text)  # the last refresh's failure (None once one succeeds)
    gone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # no longer listed at Shopify (members dropped)
    # Members changed and the Kinnekt segments using this one are not re-checked yet (set in the same transaction
    # as the members, cleared after the re-check): a refresh interrupted between the two is finished by the next.
    recheck_owed: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)


class ShopifySegmentMember(TenantMixin, Base):
    """One customer (Shopify id) in one Shopify segment (Shopify id), as of the segment's last refresh."""

    __tablename__ = "shopify_segment_members"
    __table_args__ = (UniqueConstraint("shop_id", "segment_id", "customer_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    segment_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # ShopifySegment.shopify_id
    customer_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # Customer.shopify_id


class SegmentTagMirror(TenantMixin, Timestamps, Base):
    """A Kinnekt segment mirrored into a Shopify customer tag: on/off, the tag, and the state of its sync."""

    __tablename__ = "segment_tag_mirrors"
    __table_args__ = (UniqueConstraint("segment_id"), UniqueConstraint("shop_id", "tag"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    segment_id: Mapped[int] = mapped_column(IdType, nullable=False)  # no FK: outlives the segment (tags to remove)
    tag: Mapped[str] = mapped_column(String(255), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    tagged_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the tags last matched the members
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # a sync holds it until then


class SegmentTaggedCustomer(TenantMixin, Base):
    """A customer (Shopify id) Kinnekt has given a segment's mirror tag (`tag`: the one it was given)."""

    __tablename__ = "segment_tagged_customers"
    __table_args__ = (UniqueConstraint("segment_id", "customer_id"),
                      Index("ix_segment_tagged_customers_shop_customer", "shop_id", "customer_id"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    segment_id: Mapped[int] = mapped_column(IdType, nullable=False)
    customer_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tag: Mapped[str] = mapped_column(String(255), nullable=False)
