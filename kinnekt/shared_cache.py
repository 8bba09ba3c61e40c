"""Values read from a shop's rows, remembered in each process until those rows change in any process.

Hot paths ask the same question of rows that rarely change: every batch of storefront events with subscribers asks
which of the shop's segments have browsing rules (each segment's definition read and walked) and whether a flow
of the shop is on, and so does every segment re-check. A `SharedCache` keeps the answer per shop in the process,
tagged with the shop's **generation** of that kind of row: a counter in Redis (the job queue's Redis, so every
web and worker process of a deployment shares it), which the process that changes such rows increments right after
its commit. A cached answer is used only while the generation read from Redis still equals its tag, so an edit
made in one process is seen by the next question asked in any other: one Redis round trip (an MGET of the shop's
counter and the every-shop counter) instead of the database query.

What counts as a change is declared with `watch(Model, columns, name)` beside the model (kinnekt/models): a row
of the model inserted or deleted, a watched column changed through the ORM (after_flush), or an UPDATE or DELETE
statement on its table run through a session (do_orm_execute; such a statement names no single shop, so it moves
every shop's generation). The counters move in the outermost transaction's after_commit (nothing moves for a
rolled-back change, nor at a savepoint's release, when other processes could not read the change yet), before the
committing code queues the jobs that follow an edit (a segment's build), so those jobs see every event whose
ingest read the older generation.

Without Redis (the demo's in-process queue, most tests) nothing is remembered: every question reads the database,
as before. When Redis cannot be reached the answer is computed afresh each time (never a stale one); as a last
bound, an answer is also recomputed after `ttl` seconds whatever the generation says (an increment lost with
Redis). An answer is tagged with the queue's name too, so two deployments (or two tests) sharing a Redis and a
shop id never share answers.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

log = logging.getLogger(__name__)

T = TypeVar("T")
EVERY_SHOP = 0
"""The shop id of the counter that statements naming no single shop move (ids start at 1)."""
_PENDING = "kinnekt.shared_cache.changed"

_caches: dict[str, list["SharedCache"]] = {}
_watched: dict[type, tuple[str, frozenset[str], str]] = {}
_watched_tables: dict[str, tuple[str, frozenset[str]]] = {}


def _queue():
    from kinnekt.queue import get_queue
    try:
        return get_queue()
    except RuntimeError:  # no app in this process (a script): nothing shares a cache with it
        return None


def _redis_and_prefix():
    queue = _queue()
    redis = getattr(queue, "redis", None)
    if redis is None:
        return None, None
    return redis, f"kinnekt:generation:{queue.name}"


def generation(name: str, shop_id: int) -> tuple[str, int, int] | None:
    """The shop's generation of `name` rows with the every-shop one, tagged with the queue they are counted in;
    None when nothing may be remembered (no Redis, or Redis cannot be reached)."""
    redis, prefix = _redis_and_prefix()
    if redis is None:
        return None
    try:
        every, one = redis.mget(f"{prefix}:{name}:{EVERY_SHOP}", f"{prefix}:{name}:{shop_id}")
    except Exception as exc:  # noqa: BLE001 - any Redis failure: answer from the database
        log.warning("shared cache %s: Redis unavailable (%s); reading the database", name, exc)
        return None
    return prefix, int(every or 0), int(one or 0)


def advance(name: str, shop_ids) -> None:
    """Move these shops' generation of `name` rows (EVERY_SHOP: all shops), here and for every process."""
    shop_ids = sorted(set(shop_ids))
    for cache in _caches.get(name, ()):
        cache.forget(None if EVERY_SHOP in shop_ids else shop_ids)
    redis, prefix = _redis_and_prefix()
    if redis is None:
        return
    try:
        with redis.pipeline(transaction=False) as pipe:
            for shop_id in shop_ids:
                pipe.incr(f"{prefix}:{name}:{shop_id}")
            pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the change is committed; other processes catch up within ttl
        log.warning("shared cache %s: generation not advanced (%s); other processes may answer from memory "
                    "for up to their ttl", name, exc)


class SharedCache(Generic[T]):
    """One kind of answer per shop (`compute()` reads it), remembered while the shop's generation of `name` rows
    stays the same, and at most `ttl` seconds."""

    def __init__(self, name: str, ttl: float = 300.0):
        self.name = name
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[tuple[str, int, int], float, Any]] = {}
        _caches.setdefault(name, []).append(self)

    def get(self, shop_id: int, compute: Callable[[], T]) -> T:
        """The remembered answer for the shop, or `compute()`'s (remembered under the generation read first)."""
        current = generation(self.name, shop_id)
        now = time.monotonic()
        entry = self._entries.get(shop_id)
        if current is not None and entry is not None and entry[0] == current and entry[1] > now:
            return entry[2]
        value = compute()
        if current is not None:
            with self._lock:
                if len(self._entries) >= 10_000:
                    self._entries.clear()
                self._entries[shop_id] = (current, now + self.ttl, value)
        return value

    def forget(self, shop_ids=None) -> None:
        """Forget the answers of these shops (None: all)."""
        with self._lock:
            if shop_ids is None:
                self._entries.clear()
            else:
                for shop_id in shop_ids:
                    self._entries.pop(shop_id, None)


def watch(model: type, columns: tuple[str, ...], name: str, shop_column: str = "shop_id") -> None:
    """Move the generation of `name` when a row of `model` is inserted or deleted, or one of `columns` changes."""
    _watched[model] = (name, frozenset(columns), shop_column)
    _watched_tables[model.__tablename__] = (name, frozenset(columns))


def changed(session, name: str, shop_id: int) -> None:
    """Note a change of `name` rows of a shop in this session: its generation moves when the session commits."""
    session.info.setdefault(_PENDING, set()).add((name, int(shop_id)))


@event.listens_for(OrmSession, "after_flush")
def _note_flushed(session, _flush_context) -> None:
    if not _watched:
        return
    for group, is_dirty in ((session.new, False), (session.deleted, False), (session.dirty, True)):
        for obj in group:
            spec = _watched.get(type(obj))
            if spec is None:
                continue
            name, columns, shop_column = spec
            if is_dirty:
                from sqlalchemy import inspect
                attrs = inspect(obj).attrs
                if not any(attrs[column].history.has_changes() for column in columns):
                    continue
            shop_id = getattr(obj, shop_column, None)
            changed(session, name, EVERY_SHOP if shop_id is None else shop_id)


def _sets(statement, columns: frozenset[str]) -> bool:
    """Whether an UPDATE statement may set one of these columns (True when it cannot be told)."""
    values = getattr(statement, "_values", None)
    if not values:
        return True  # values given at execution, or a form not looked into
    return any(getattr(key, "key", getattr(key, "name", key)) in columns for key in values)


@event.listens_for(OrmSession, "do_orm_execute")
def _note_statements(state) -> None:
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    spec = _watched_tables.get(getattr(table, "name", None))
    if spec is None:
        return
    name, columns = spec
    if state.is_delete or _sets(state.statement, columns):
        changed(state.session, name, EVERY_SHOP)


@event.listens_for(OrmSession, "after_commit")
def _advance_after_commit(session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the change is not committed yet
        return
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    by_name: dict[str, set[int]] = {}
    for name, shop_id in pending:
        by_name.setdefault(name, set()).add(shop_id)
    for name, shop_ids in by_name.items():
        advance(name, shop_ids)


@event.listens_for(OrmSession, "after_rollback")
def _nothing_changed(session) -> None:
    if not session.in_nested_transaction():  # a savepoint's rollback keeps what was noted before it
        session.info.pop(_PENDING, None)


def reset_local() -> None:
    """Forget every answer remembered in this process (tests)."""
    for caches in _caches.values():
        for cache in caches:
            cache.forget()
