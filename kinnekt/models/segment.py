"""Segments (auto, manual), their materialised members, the enter/leave log, the daily member counts, and static
lists."""
from __future__ import annotations

import datetime as dt
from enum import StrEnum, nonmember
from typing import Any, Iterator

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, JSON, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt import shared_cache
from kinnekt.db import Base, UTCDateTime, utcnow
from kinnekt.models.base import IdType, TenantMixin, Timestamps

AUTO_SOURCES = ("all", "keyword", "mobile_popup", "shareable_link", "checkout")


class BuildStatus(StrEnum):
    """A segment's membership build: owed (`pending`), `building`, `done`, or `failed`."""

    PENDING = "pending"
    BUILDING = "building"
    DONE = "done"
    FAILED = "failed"

    ACTIVE = nonmember(frozenset({PENDING, BUILDING}))
    """A build is owed or running: the segment page polls."""


def iter_rules(definition: Any) -> Iterator[dict]:
    """Every rule (dict with a "field") in a stored definition (`Segment.definition`: rules nested in groups of
    "rules"), in document order; tolerant of malformed input. Its meaning is kinnekt.segments.rules' business."""
    if not isinstance(definition, dict):
        return
    if "field" in definition:
        yield definition
        return
    items = definition.get("rules")
    if isinstance(items, list):
        for item in items:
            yield from iter_rules(item)


class Segment(TenantMixin, Timestamps, Base):
    """A group of subscribers: `auto` by subscription source, or `manual` by a rule definition."""

    __tablename__ = "segments"
    __table_args__ = (
        UniqueConstraint("shop_id", "name"),
        # One auto segment per source (per keyword for keyword segments); NULLs keep manual ones free.
        UniqueConstraint("shop_id", "auto_source", "keyword_id"),
        # The constraint above cannot hold the sources without a keyword: NULL keyword_ids are all distinct
        # (SQLite and PostgreSQL alike), so a partial unique index keeps one per shop of each of those.
        Index("uq_segments_shop_auto_source", "shop_id", "auto_source", unique=True,
              sqlite_where=text("auto_source IS NOT NULL AND keyword_id IS NULL"),
              postgresql_where=text("auto_source IS NOT NULL AND keyword_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), default="manual", nullable=False)  # auto | manual
    auto_source: Mapped[str | None] = mapped_column(String(16))
    keyword_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("keywords.id", ondelete="CASCADE"))
    definition: Mapped[dict] = mapped_column(JSON, nullable=False)
    has_relative_time: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    member_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    build_status: Mapped[str] = mapped_column(String(16), default=BuildStatus.PENDING, nullable=False)
    last_built_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    build_ms: Mapped[int | None] = mapped_column(Integer)

    @property
    def editable(self) -> bool:
        """Auto segments can only be deleted, never edited."""
        return self.kind == "manual"


class SegmentMember(TenantMixin, Base):
    """A subscriber currently in a segment (materialised membership)."""

    __tablename__ = "segment_members"
    __table_args__ = (
        UniqueConstraint("segment_id", "subscriber_id"),
        Index("ix_segment_members_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    segment_id: Mapped[int] = mapped_column(IdType, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False)
    subscriber_id: Mapped[int] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="CASCADE"),
                                               nullable=False)
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class SegmentEvent(TenantMixin, Base):
    """Append-only log of subscribers entering and leaving segments; automations read it."""

    __tablename__ = "segment_events"
    __table_args__ = (
        Index("ix_segment_events_segment_at", "segment_id", "at"),
        Index("ix_segment_events_segment_id", "segment_id", "id"),  # automations read past their cursor
        Index("ix_segment_events_segment_kind", "segment_id", "kind", "id"),  # the segment page's log: enters or leaves
        Index("ix_segment_events_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # No FK cascade: the log outlives a deleted segment or a redacted subscriber id.
    segment_id: Mapped[int] = mapped_column(IdType, nullable=False)
    subscriber_id: Mapped[int] = mapped_column(IdType, nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # enter | leave
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    cause: Mapped[str] = mapped_column(String(16), nullable=False)  # membership.CAUSES


class SegmentCount(TenantMixin, Base):
    """A segment's member count at the end of one day (the shop's local day), for the segment page's chart.

    Every build, and every re-check that changes the segment, writes the count it left (an upsert on the
    unique (segment, day)): a day without a row had no change, so it kept the count of the day before.
    """

    __tablename__ = "segment_counts"
    __table_args__ = (UniqueConstraint("segment_id", "day"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    segment_id: Mapped[int] = mapped_column(IdType, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False)
    day: Mapped[dt.date] = mapped_column(Date, nullable=False)
    member_count: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)  # when the count was last written


class StaticList(TenantMixin, Timestamps, Base):
    """A list of phone numbers uploaded from CSV, usable in `list in` rules."""

    __tablename__ = "static_lists"
    __table_args__ = (UniqueConstraint("shop_id", "name"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    row_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class StaticListEntry(TenantMixin, Base):
    """One phone number (E.164) on a static list."""

    __tablename__ = "static_list_entries"
    __table_args__ = (UniqueConstraint("list_id", "phone"), Index("ix_static_list_entries_phone", "shop_id", "phone"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    list_id: Mapped[int] = mapped_column(IdType, ForeignKey("static_lists.id", ondelete="CASCADE"), nullable=False)
    phone: Mapped[str] = mapped_column(String(20), nullable=False)


# Segments with browsing rules are remembered per process (kinnekt.segments.membership.browsing_segments_cached):
# a definition added, changed or removed moves the shop's generation of them in every process.
shared_cache.watch(Segment, ("definition",), "segment-definitions")
