"""Column helpers shared by the models: ids, timestamps and the tenant (shop) column."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from kinnekt.db import UTCDateTime, utcnow

# BigInteger ids on PostgreSQL, plain INTEGER (rowid alias) on SQLite.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class TenantMixin:
    """Marks a table as belonging to one shop; the session filters these by the request's shop."""

    @declared_attr
    def shop_id(cls) -> Mapped[int]:
        return mapped_column(IdType, ForeignKey("shops.id", ondelete="CASCADE"), index=True, nullable=False)


class Timestamps:
    """created_at / updated_at maintained by the ORM."""

    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)
