"""Which installed shop a web pixel key belongs to, remembered for a few seconds in the process.

The pixel endpoint looks its key up on every batch, thousands of times a second, for a row that changes a few
times in a shop's life (a new key, an uninstall, a reinstall, a redaction). `shop_for_key` keeps what it read
for defaults.PIXEL_KEY_CACHE_SECONDS. It is forgotten sooner when it may be wrong:

- in this process, at the commit of any session that changed a shop: a Shop added, changed or deleted through
  the ORM, or an UPDATE/DELETE statement on `shops` run through a session (SQLAlchemy events, below);
- in other processes (another gunicorn worker, an RQ worker that uninstalled the shop), when its time is up.
So an uninstall or a new key stops the old key's events at once in the process that made the change and within
PIXEL_KEY_CACHE_SECONDS everywhere. Only installed shops are remembered (an unknown key is looked up each time:
the cache cannot be filled by guessing), and at most MAX_ENTRIES of them.
"""
from __future__ import annotations

import threading
import time
from typing import NamedTuple

from sqlalchemy import event, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.models import Shop

MAX_ENTRIES = 10_000
"""Keys remembered at most (then all are forgotten at once: a shop's next batch reads its row again)."""


class PixelShop(NamedTuple):
    """What the ingest needs of the key's shop: its id, and its time zone (to read a checkout's local phone)."""

    id: int
    timezone: str | None


_lock = threading.Lock()
_entries: dict[str, tuple[float, PixelShop]] = {}


def shop_for_key(session, key: str) -> PixelShop | None:
    """The installed shop whose pixel key this is, or None (no such key, or the shop is uninstalled)."""
    now = time.monotonic()
    entry = _entries.get(key)
    if entry is not None and entry[0] > now:
        return entry[1]
    table = Shop.__table__
    row = session.execute(select(table.c.id, table.c.timezone).where(
        table.c.pixel_key == key, table.c.installed_at.is_not(None), table.c.uninstalled_at.is_(None))).first()
    if row is None:
        _entries.pop(key, None)
        return None
    shop = PixelShop(row.id, row.timezone)
    with _lock:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[key] = (now + defaults.PIXEL_KEY_CACHE_SECONDS, shop)
    return shop


def forget_all() -> None:
    """Forget every remembered key (a shop changed; tests)."""
    with _lock:
        _entries.clear()


# ------------------------------------------------------------------------------------ invalidation in-process

_CHANGED = "kinnekt.pixel_keys.shop_changed"


@event.listens_for(OrmSession, "after_flush")
def _note_flushed_shops(session, _flush_context) -> None:
    if any(isinstance(obj, Shop) for group in (session.new, session.dirty, session.deleted) for obj in group):
        session.info[_CHANGED] = True


@event.listens_for(OrmSession, "do_orm_execute")
def _note_shop_statements(state) -> None:
    table = getattr(state.statement, "table", None) if state.is_update or state.is_delete else None
    if getattr(table, "name", None) == Shop.__tablename__:  # update(Shop) holds an annotated copy of the table
        state.session.info[_CHANGED] = True


@event.listens_for(OrmSession, "after_commit")
def _forget_after_commit(session) -> None:
    if session.info.pop(_CHANGED, False):
        forget_all()


@event.listens_for(OrmSession, "after_rollback")
def _nothing_changed(session) -> None:
    session.info.pop(_CHANGED, None)
