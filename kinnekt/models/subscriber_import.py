"""A CSV import of subscribers too large for one request: the uploaded file, and the progress its job records."""
from __future__ import annotations

import datetime as dt
from enum import StrEnum, nonmember

from sqlalchemy import JSON, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps



class ImportStatus(StrEnum):
    """A subscriber import: `draft` (uploaded, its column mapping not confirmed yet), then as a job `queued`,
    `running`, `done` (its report is ready) or `failed`."""

    DRAFT = "draft"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    ACTIVE = nonmember(frozenset({QUEUED, RUNNING}))
    """Not over yet."""


IMPORT_STATUSES = tuple(ImportStatus)


class SubscriberImport(TenantMixin, Timestamps, Base):
    """One upload: a draft while the merchant maps its columns, then (a large file) imported batch by batch by a
    job (kinnekt.subscribers.importing.import_batches) with the confirmed `mapping`.

    Each batch commits its subscribers together with the progress here (`processed_rows`, `imported`, `counts`,
    the first rejected rows), so the row is the truth: a job cut short is resumed from `processed_rows`. The
    file is kept until the import is over, then dropped.
    """

    __tablename__ = "subscriber_imports"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.QUEUED, nullable=False)
    filename: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    file: Mapped[bytes | None] = mapped_column(LargeBinary)
    consent_text: Mapped[str] = mapped_column(Text, nullable=False)
    total_rows: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # rows after the header
    processed_rows: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    imported: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    counts: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)  # why rows were not imported -> rows
    rejected: Mapped[list] = mapped_column(JSON, default=list, nullable=False)  # the first ones: [row, value, why]
    region: Mapped[str | None] = mapped_column(String(2))
    ignored_columns: Mapped[list] = mapped_column(JSON, default=list, nullable=False)
    mapping: Mapped[list | None] = mapped_column(JSON)  # one target per column (importing.Mapping), once confirmed
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def running(self) -> bool:
        """True until the import is over (queued or running)."""
        return self.status in ImportStatus.ACTIVE
