"""The Shopify bulk operations of a shop's data sync: one row per kind of data, with its progress."""
from __future__ import annotations

import datetime as dt
from enum import StrEnum, nonmember

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps

SYNC_KINDS = ("products", "collections", "customers", "orders")
"""What a full sync imports, in import order (orders name customers, so customers come first)."""



class OperationStatus(StrEnum):
    """One bulk operation of a sync: being created (`starting`), run by Shopify (`running`), its file ready
    (`completed`), being read into our tables (`importing`), `imported`, or `failed`."""

    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    IMPORTING = "importing"
    IMPORTED = "imported"
    FAILED = "failed"

    AT_SHOPIFY = nonmember(frozenset({STARTING, RUNNING}))
    """Waiting for Shopify to finish the bulk query."""
    FINAL = nonmember(frozenset({IMPORTED, FAILED}))
    """Over."""


OPERATION_STATUSES = tuple(OperationStatus)


class SyncOperation(TenantMixin, Timestamps, Base):
    """One bulk query of the shop's current sync. Unique per (shop, kind): a second sync cannot start twice."""

    __tablename__ = "sync_operations"
    __table_args__ = (UniqueConstraint("shop_id", "kind"), UniqueConstraint("bulk_operation_id"))

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    bulk_operation_id: Mapped[str | None] = mapped_column(String(128))  # gid://shopify/BulkOperation/...
    status: Mapped[str] = mapped_column(String(16), default=OperationStatus.STARTING, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    object_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # lines Shopify wrote
    imported_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # root objects stored
    result_url: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # finished at Shopify
    imported_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
