"""Materialised segment membership: full builds, per-subscriber re-checks and the time sweep, with an enter/leave log.

Every change to `segment_members` is made here, and each one is written to `segment_events` with its
cause in the same transaction, so the log and the members never disagree:

- `build`: the compiler's Select is materialised once into a temporary table, then the difference with
  the stored members is applied set-based (INSERT ... SELECT of the leaves and enters into the log,
  one DELETE, one INSERT ... SELECT) — no Python loop over members.
- `recheck`: the same Selects narrowed to a few subscribers: each segment's condition is a column of one
  query, so all of a shop's segments cost one round trip.
- `sweep`: rebuilds of the segments whose rules depend on the passing of time.

Each build, and each re-check that changes a segment, also writes the segment's count of the day
(kinnekt.segments.history.record_counts) in the same transaction: the segment page's chart.

Concurrency: a build and a re-check first lock the segment rows they change (PostgreSQL: SELECT ...
FOR UPDATE in id order; SQLite: a write first, which takes the database write lock). So two builds of
one segment, or a build and a re-check, run one after the other, and each evaluates its Select after
the other committed: the member set is always the one of the latest evaluation.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from sqlalchemy import BigInteger, Column, ColumnElement, MetaData, Table, delete, exists, func, insert, literal
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, shared_cache, signals
from kinnekt.db import Session, UTCDateTime, aware_utc
from kinnekt.models import Segment, SegmentEvent, SegmentMember, Shop, Subscriber
from kinnekt.models.base import IdType
from kinnekt.models.segment import BuildStatus
from kinnekt.segments import history, tasks
from kinnekt.segments.compiler import compile_definition, plan_for_sets
from kinnekt.segments.rules import DefinitionError, has_relative_time, segment_references, uses_browsing

log = logging.getLogger(__name__)

CAUSES = ("build", "edit", "edit_trigger", "recheck", "sweep")
"""Why membership changed, as the enter/leave log records it. `edit_trigger`: a segment edit whose entries the
merchant chose to let automations fire on (a plain `edit` does not fire them, nor does a first `build`)."""

BUILD_STATUSES = tuple(BuildStatus)

SEGMENTS = Segment.__table__
MEMBERS = SegmentMember.__table__
EVENTS = SegmentEvent.__table__

# The freshly evaluated member ids of the segment being built. A temporary table is private to the
# connection, so concurrent builds on other connections never see each other's rows.
_SCRATCH = Table("kinnekt_segment_build", MetaData(), Column("subscriber_id", BigInteger, primary_key=True),
                 prefixes=["TEMPORARY"])


@dataclass(frozen=True)
class BuildResult:
    """What one full build changed."""

    segment_id: int
    entered: int
    left: int
    member_count: int
    build_ms: int
    skipped: bool = False
    """True when the build was requested but found done by another job since (nothing was evaluated)."""


# ---------------------------------------------------------------------------------------------- helpers

REQUESTED_CAUSES = ("build", "edit", "edit_trigger")
"""Builds someone asked for (request_build marks the segment pending): one done build answers every request made
before it took the segment's lock, so a duplicate job finds the segment done and does nothing."""


def _check_cause(cause: str) -> None:
    if cause not in CAUSES:
        raise ValueError(f"cause must be one of {', '.join(CAUSES)}")


def _dialect(session: OrmSession) -> str:
    return session.get_bind().dialect.name


def _keep_updated_at():
    """Bookkeeping writes (status, counts) are not edits: leave the segment's updated_at alone."""
    return {"updated_at": SEGMENTS.c.updated_at}


def _lock_segments(session: OrmSession, *conditions) -> list:
    """Lock the segment rows matching `conditions` for this transaction and return (id, shop_id, definition,
    build_status, member_count).

    PostgreSQL: row locks in id order (so two lockers of overlapping sets cannot deadlock). SQLite has
    no row locks: a first write takes the database write lock, and everything read after it is current.
    """
    query = (select(SEGMENTS.c.id, SEGMENTS.c.shop_id, SEGMENTS.c.definition, SEGMENTS.c.build_status,
                    SEGMENTS.c.member_count)
             .where(*conditions).order_by(SEGMENTS.c.id))
    if _dialect(session) == "sqlite":
        session.execute(update(SEGMENTS).where(*conditions)
                        .values(build_status=SEGMENTS.c.build_status, **_keep_updated_at()))
        return session.execute(query).all()
    return session.execute(query.with_for_update()).all()


def lock_segments(session: OrmSession, segment_ids: Iterable[int]) -> None:
    """Lock these segments until the transaction ends, in id order as builds and re-checks lock them.

    A writer that changes several segments (an edit and the segments referring to it, a delete) calls
    this first, so it waits for a running build or re-check instead of deadlocking with it.
    """
    ids = sorted(set(segment_ids))
    if ids:
        _lock_segments(session, SEGMENTS.c.id.in_(ids))


def _expire_segments(session: OrmSession, segment_ids: Iterable[int]) -> None:
    """Segments loaded in this session are stale after Core updates: reload them on next access."""
    wanted = set(segment_ids)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Segment) and obj.id in wanted:
            session.expire(obj)


def _set_status(session: OrmSession, segment_id: int, status: str) -> None:
    session.execute(update(SEGMENTS).where(SEGMENTS.c.id == segment_id)
                    .values(build_status=status, **_keep_updated_at()))


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---------------------------------------------------------------------------------------------- build

def build(session: OrmSession, segment_id: int, *, now: dt.datetime | None = None, cause: str = "build",
          if_owed: bool = False) -> BuildResult | None:
    """Rebuild one segment's members from its definition at `now`, logging each enter and leave; commits.

    `if_owed` (the job of a request_build): do nothing when the segment is already "done" once its lock is
    held, as another job then built it after the request (see REQUESTED_CAUSES). Returns None when the segment
    no longer exists. On failure the segment is marked "failed" and the error is raised again (the job records
    it).
    """
    _check_cause(cause)
    now = aware_utc(now)
    started = time.perf_counter()
    session.execute(update(SEGMENTS).where(SEGMENTS.c.id == segment_id, *(
        [SEGMENTS.c.build_status != BuildStatus.DONE] if if_owed else [])).values(
            build_status=BuildStatus.BUILDING, **_keep_updated_at()))
    session.commit()  # visible to the UI at once, while the build itself runs
    try:
        result = _build_locked(session, segment_id, now=now, cause=cause, started=started, if_owed=if_owed)
        session.commit()
    except Exception:
        session.rollback()
        _set_status(session, segment_id, BuildStatus.FAILED)
        session.commit()
        _expire_segments(session, [segment_id])
        raise
    _expire_segments(session, [segment_id])
    if result is not None and (result.entered or result.left):
        _fire_automations(session, [segment_id], cause)
    if result is not None and not result.skipped:
        signals.announce(signals.segment_rebuilt, session, segment_id=segment_id, cause=cause,
                         changed=bool(result.entered or result.left))
    return result


def _build_locked(session: OrmSession, segment_id: int, *, now: dt.datetime, cause: str,
                  started: float, if_owed: bool = False) -> BuildResult | None:
    rows = _lock_segments(session, SEGMENTS.c.id == segment_id)
    if not rows:
        return None
    row = rows[0]
    if if_owed and row.build_status == BuildStatus.DONE:
        # Another job built it since this one was requested, and a request after that build began would have
        # waited for its lock and marked it pending: nothing is owed. Building again would log the people who
        # joined meanwhile as "build" entries, which fire no automation (their re-check would find them in).
        return BuildResult(segment_id=segment_id, entered=0, left=0, member_count=row.member_count or 0,
                           build_ms=0, skipped=True)
    shop = session.get(Shop, row.shop_id)
    statement = compile_definition(row.definition, shop=shop, now=now, session=session)
    plan_for_sets(session)

    conn = session.connection()
    conn.execute(text(f"DROP TABLE IF EXISTS {_SCRATCH.name}"))  # left over by a failed build on this connection
    _SCRATCH.create(conn)
    conn.execute(_SCRATCH.insert().from_select(["subscriber_id"], statement))
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {_SCRATCH.name}"))  # a temp table has no statistics: plan the anti-joins right

    stays = exists().where(_SCRATCH.c.subscriber_id == MEMBERS.c.subscriber_id)
    already = exists().where(MEMBERS.c.segment_id == segment_id,
                             MEMBERS.c.subscriber_id == _SCRATCH.c.subscriber_id)

    def logged(kind: str, subscriber_id) -> list:
        return [literal(row.shop_id, IdType), literal(segment_id, IdType), subscriber_id, literal(kind),
                literal(now, UTCDateTime), literal(cause)]

    log_columns = ["shop_id", "segment_id", "subscriber_id", "kind", "at", "cause"]
    counted = {"preserve_rowcount": True}  # INSERT ... SELECT row counts are dropped unless asked for
    # Leaves: log them, then delete them.
    left = conn.execute(EVENTS.insert().from_select(log_columns, select(*logged("leave", MEMBERS.c.subscriber_id))
                                                    .where(MEMBERS.c.segment_id == segment_id, ~stays)),
                        execution_options=counted).rowcount
    conn.execute(delete(MEMBERS).where(MEMBERS.c.segment_id == segment_id, ~stays))
    # Enters: first narrow the scratch table to them, so that no statement inserts into segment_members
    # while reading it: planned while the table is still small (a new shop), such an anti-join scans
    # the rows it inserts itself again for every row, which grows with the square of the segment.
    conn.execute(delete(_SCRATCH).where(already))
    entered = conn.execute(EVENTS.insert().from_select(log_columns, select(*logged("enter", _SCRATCH.c.subscriber_id))),
                           execution_options=counted).rowcount
    conn.execute(MEMBERS.insert().from_select(
        ["shop_id", "segment_id", "subscriber_id", "entered_at"],
        select(literal(row.shop_id, IdType), literal(segment_id, IdType), _SCRATCH.c.subscriber_id,
               literal(now, UTCDateTime))))
    conn.execute(text(f"DROP TABLE {_SCRATCH.name}"))

    member_count = conn.scalar(select(func.count()).select_from(MEMBERS).where(MEMBERS.c.segment_id == segment_id))
    build_ms = max(0, round((time.perf_counter() - started) * 1000))
    conn.execute(update(SEGMENTS).where(SEGMENTS.c.id == segment_id).values(
        member_count=member_count, last_built_at=now, build_ms=build_ms, build_status=BuildStatus.DONE,
        **_keep_updated_at()))
    history.record_counts(session, [segment_id], now=now, timezone=shop.timezone if shop else None)
    return BuildResult(segment_id=segment_id, entered=entered, left=left, member_count=member_count,
                       build_ms=build_ms)


# ---------------------------------------------------------------------------------------------- recheck

# Compiled rules of segments that do not depend on now, per shop: (key, {segment id: predicate}, froms).
# Building SQLAlchemy expressions costs more than running a one-subscriber query, so a re-check reuses
# them while the shop's segment definitions (all of them: segment rules embed others) and time zone hold.
_timeless: OrderedDict[tuple[int, str], tuple[tuple, dict[int, ColumnElement], tuple]] = OrderedDict()
_timeless_lock = threading.Lock()


def _predicates(session: OrmSession, shop: Shop, rows: list, now: dt.datetime, scope: str = "all"
                ) -> tuple[dict[int, ColumnElement], tuple]:
    """Each segment's membership condition (the WHERE of its compiled Select) at `now`, and their common FROM.

    Segments whose stored definition no longer compiles are left out (and logged), so they cannot block
    the others. `scope` names which of the shop's segments `rows` are (all of them, or those with browsing
    rules), so that each kind of re-check keeps its own cache entry.
    """
    key = (shop.timezone, tuple((row.id, json.dumps(row.definition, sort_keys=True, default=str)) for row in rows))
    cache_key = (shop.id, scope)
    with _timeless_lock:
        cached = _timeless.get(cache_key)
        if cached is not None and cached[0] == key:
            _timeless.move_to_end(cache_key)
    reuse = cached is not None and cached[0] == key
    predicates: dict[int, ColumnElement] = dict(cached[1]) if reuse else {}
    froms = cached[2] if reuse else ()
    timeless: dict[int, ColumnElement] = {}
    for row in rows:
        if row.id in predicates:
            continue
        try:
            statement = compile_definition(row.definition, shop=shop, now=now, session=session, shape="probe")
        except (DefinitionError, ValueError) as exc:
            log.warning("segment %s of shop %s does not compile, not re-checked: %s", row.id, shop.id, exc)
            continue
        predicates[row.id] = statement.whereclause
        froms = froms or tuple(statement.get_final_froms())
        # Without a session, segment rules count as relative: a definition that embeds another is never cached.
        if not has_relative_time(row.definition):
            timeless[row.id] = statement.whereclause
    if not reuse:
        with _timeless_lock:
            _timeless[cache_key] = (key, timeless, froms)
            _timeless.move_to_end(cache_key)
            while len(_timeless) > defaults.SEGMENT_RECHECK_CACHE_SHOPS:
                _timeless.popitem(last=False)
    return predicates, froms


def recheck(session: OrmSession, shop_id: int, subscriber_ids: Iterable[int], *, now: dt.datetime | None = None,
            cause: str = "recheck", segment_ids: Iterable[int] | None = None) -> list[tuple[int, int, str]]:
    """Re-evaluate some subscribers against every segment of the shop (or only `segment_ids`) at `now`; apply and
    log the changes; commits.

    Returns the changes as (segment_id, subscriber_id, "enter" | "leave"), sorted. Every segment's
    compiled condition is a column of one query over those subscribers (the same Select each build
    runs, narrowed to them), so the shop's 20 segments cost one round trip.
    """
    _check_cause(cause)
    ids = sorted({int(i) for i in subscriber_ids})
    now = aware_utc(now)
    shop = session.get(Shop, shop_id)
    only = None if segment_ids is None else sorted({int(i) for i in segment_ids})
    if not ids or shop is None or only == []:
        return []
    rows = _lock_segments(session, SEGMENTS.c.shop_id == shop_id, *([SEGMENTS.c.id.in_(only)] if only else []))
    predicates, froms = _predicates(session, shop, rows, now, "all" if only is None else "some")
    if not predicates:
        session.commit()
        _rechecked(session, shop_id, ids, cause)
        return []

    should: set[tuple[int, int]] = set()
    have: set[tuple[int, int]] = set()
    segment_ids = sorted(predicates)
    for chunk in _chunks(ids, defaults.SEGMENT_RECHECK_CHUNK):
        for group in _chunks(segment_ids, defaults.SEGMENT_RECHECK_SEGMENTS_PER_QUERY):
            query = (select(Subscriber.id, *(predicates[s].label(f"in_{s}") for s in group))
                     .select_from(*froms).where(Subscriber.shop_id == shop_id, Subscriber.id.in_(chunk)))
            for subscriber_id, *inside in session.execute(query):
                should.update((s, subscriber_id) for s, hit in zip(group, inside) if hit)
        have.update(session.execute(
            select(MEMBERS.c.segment_id, MEMBERS.c.subscriber_id)
            .where(MEMBERS.c.shop_id == shop_id, MEMBERS.c.subscriber_id.in_(chunk),
                   MEMBERS.c.segment_id.in_(segment_ids))).tuples())

    enters, leaves = sorted(should - have), sorted(have - should)
    _apply(session, shop_id, enters, leaves, now=now, cause=cause)
    history.record_counts(session, {s for s, _ in enters} | {s for s, _ in leaves}, now=now, timezone=shop.timezone)
    session.commit()
    _expire_segments(session, {s for s, _ in enters} | {s for s, _ in leaves})
    _fire_automations(session, {s for s, _ in enters} | {s for s, _ in leaves}, cause)
    _rechecked(session, shop_id, ids, cause)
    changes = [(s, m, "enter") for s, m in enters] + [(s, m, "leave") for s, m in leaves]
    return sorted(changes)


def _rechecked(session: OrmSession, shop_id: int, subscriber_ids: list[int], cause: str) -> None:
    """A re-check of subscribers whose data changed is committed: the flows may have entries or exits."""
    if cause == "recheck":
        signals.announce(signals.subscribers_rechecked, session, shop_id=shop_id, subscriber_ids=subscriber_ids)


def _apply(session: OrmSession, shop_id: int, enters: list[tuple[int, int]], leaves: list[tuple[int, int]], *,
           now: dt.datetime, cause: str) -> None:
    """Write a re-check's few changes: members, the log, and each changed segment's member count."""
    delta: dict[int, int] = defaultdict(int)
    by_segment: dict[int, list[int]] = defaultdict(list)
    for segment_id, subscriber_id in leaves:
        by_segment[segment_id].append(subscriber_id)
        delta[segment_id] -= 1
    for segment_id, subscriber_ids in by_segment.items():
        session.execute(delete(MEMBERS).where(MEMBERS.c.segment_id == segment_id,
                                              MEMBERS.c.subscriber_id.in_(subscriber_ids)))
    if enters:
        session.execute(insert(MEMBERS), [{"shop_id": shop_id, "segment_id": s, "subscriber_id": m, "entered_at": now}
                                          for s, m in enters])
        for segment_id, _ in enters:
            delta[segment_id] += 1
    events = ([{"shop_id": shop_id, "segment_id": s, "subscriber_id": m, "kind": "leave", "at": now, "cause": cause}
               for s, m in leaves]
              + [{"shop_id": shop_id, "segment_id": s, "subscriber_id": m, "kind": "enter", "at": now, "cause": cause}
                 for s, m in enters])
    if events:
        session.execute(insert(EVENTS), events)
    for segment_id, change in sorted(delta.items()):
        if change:
            session.execute(update(SEGMENTS).where(SEGMENTS.c.id == segment_id).values(
                member_count=SEGMENTS.c.member_count + change, **_keep_updated_at()))


def _fire_automations(session: OrmSession, segment_ids: Iterable[int], cause: str) -> None:
    """Committed entries and leaves: tell whoever follows them (tag mirrors: every cause), and queue the shops'
    automation fire jobs (if any is on) unless a build or plain edit made them."""
    segment_ids = sorted(segment_ids)
    if segment_ids:
        signals.announce(signals.segment_members_written, session, segment_ids=segment_ids)
    if cause in ("build", "edit") or not segment_ids:
        return
    signals.announce(signals.segment_members_changed, session, segment_ids=segment_ids)


# ---------------------------------------------------------------------------------------------- sweep

def segments_to_sweep(session: OrmSession) -> list[int]:
    """Ids of the segments (of installed shops) whose membership changes as time passes."""
    return list(session.scalars(
        select(Segment.id).join(Shop, Shop.id == Segment.shop_id)
        .where(Segment.has_relative_time.is_(True), Shop.uninstalled_at.is_(None))
        .order_by(Segment.id).execution_options(all_shops=True)))


def sweep(session: OrmSession, *, now: dt.datetime | None = None) -> int:
    """Rebuild, with cause "sweep", every segment whose rules depend on now; returns how many were rebuilt.

    One segment failing (it is marked "failed") does not stop the others.
    """
    now = aware_utc(now)
    rebuilt = 0
    for segment_id in segments_to_sweep(session):
        try:
            if build(session, segment_id, now=now, cause="sweep") is not None:
                rebuilt += 1
        except Exception:
            log.exception("sweep: segment %s failed to build", segment_id)
    return rebuilt


# ---------------------------------------------------------------------------------------------- requests

def dependent_segments(session: OrmSession, shop_id: int, segment_id: int) -> list[int]:
    """Ids of the shop's segments whose rules refer to this one, directly or through others (not itself)."""
    referrers: dict[int, set[int]] = defaultdict(set)
    for other_id, definition in session.execute(
            select(Segment.id, Segment.definition).where(Segment.shop_id == shop_id)):
        for target in segment_references(definition):
            referrers[target].add(other_id)
    found: set[int] = set()
    todo = [segment_id]
    while todo:
        for other_id in referrers.get(todo.pop(), ()):
            if other_id not in found and other_id != segment_id:
                found.add(other_id)
                todo.append(other_id)
    return sorted(found)


def request_build(segment: Segment, *, cause: str = "build", session: OrmSession | None = None) -> None:
    """Mark the segment (and the segments whose rules refer to it) pending, commit, and queue their builds.

    Each request queues its own job: a build always evaluates the definition stored when it takes the
    segment's lock, so a job queued after an edit can never be skipped as a duplicate of a running one.
    """
    _check_cause(cause)
    session = session if session is not None else Session()
    segment_ids = [segment.id] + dependent_segments(session, segment.shop_id, segment.id)
    lock_segments(session, segment_ids)
    session.execute(update(SEGMENTS).where(SEGMENTS.c.id.in_(segment_ids))
                    .values(build_status=BuildStatus.PENDING, **_keep_updated_at()))
    session.commit()
    _expire_segments(session, segment_ids)
    for segment_id in segment_ids:
        tasks.enqueue_build_segment(segment_id, cause)


def subscribers_changed(shop_id: int, subscriber_ids: Iterable[int]) -> None:
    """Queue a re-check of these subscribers against the shop's segments (call after the change is committed).

    The ids join the shop's pending re-checks; one job per shop at a time takes all that piled up, so a burst
    of webhooks costs a few re-checks of many subscribers each, not one per webhook."""
    ids = sorted({int(i) for i in subscriber_ids})
    if not ids:
        return
    tasks.enqueue_recheck(shop_id, ids)


@signals.subscribers_changed.connect
def _recheck_changed(session, *, shop_id: int, subscriber_ids: Iterable[int]) -> None:
    """Receiver of kinnekt.signals.subscribers_changed (sent by kinnekt.sms and kinnekt.subscribers)."""
    subscribers_changed(shop_id, subscriber_ids)


def browsing_segments(session: OrmSession, shop_id: int) -> list[int]:
    """Ids of the shop's segments whose membership storefront events can change: those with browsing rules
    (rules.uses_browsing), and those whose `segment` rules lead to one."""
    referrers: dict[int, set[int]] = defaultdict(set)
    found: set[int] = set()
    for segment_id, definition in session.execute(
            select(Segment.id, Segment.definition).where(Segment.shop_id == shop_id)):
        if uses_browsing(definition):
            found.add(segment_id)
        for target in segment_references(definition):
            referrers[target].add(segment_id)
    todo = list(found)
    while todo:
        for other_id in referrers.get(todo.pop(), ()):
            if other_id not in found:
                found.add(other_id)
                todo.append(other_id)
    return sorted(found)


_browsing_cache: shared_cache.SharedCache[tuple[int, ...]] = shared_cache.SharedCache("segment-definitions")


def browsing_segments_cached(session: OrmSession, shop_id: int) -> tuple[int, ...]:
    """`browsing_segments`, remembered per process while no segment definition of the shop changes in any
    process (kinnekt.shared_cache): every batch of storefront events with subscribers and every browsing re-check
    asks, and reading and walking every definition of the shop each time cost a query and its JSON."""
    return _browsing_cache.get(shop_id, lambda: tuple(browsing_segments(session, shop_id)))


def recheck_group(shop_id: int) -> str:
    """The name under which a shop's pending re-checks pile up (kinnekt.queue's batched jobs)."""
    return f"recheck:{shop_id}"


def browsing_group(shop_id: int) -> str:
    """The name under which a shop's pending re-checks after storefront events pile up."""
    return f"browsing:{shop_id}"
