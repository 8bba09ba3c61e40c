"""The query planner's statistics: ANALYZE after bulk loads, and a periodic refresh for SQLite.

The planners choose join orders and indexes from per-table statistics. SQLite keeps them in `sqlite_stat1` and
never gathers them by itself: without them it guesses, and for a segment rule such as "last order more than 90
days ago" it walked every subscriber once per customer (0.4 to 1.2 s for the demo store's preview instead of 4 ms,
docs/benchmarks.md). PostgreSQL's autovacuum analyzes changed tables on its own, but only after a threshold of
changes and some delay, so a bulk load is followed by an ANALYZE on both databases.

When: after the demo store is seeded, after a Shopify bulk sync, after a subscriber import, and on SQLite from
the periodic job `kinnekt.jobs.refresh_statistics` (which also makes a demo database seeded before this existed
fast at the next start).
"""
from __future__ import annotations

import logging
import re
import time
from typing import Iterable

from sqlalchemy.exc import DBAPIError

from kinnekt import defaults

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def analyze(session, tables: Iterable[str] = ()) -> float | None:
    """Commit the session, then gather fresh planner statistics for `tables` (every table when none are named)
    on SQLite or PostgreSQL; returns the seconds it took.

    Table names come from the code (models' `__tablename__`), never from input; anything else is refused. A
    database error (a write lock held past the busy timeout) is logged and gives None: statistics only speed
    queries up, so the load that asked for them is not failed for it, and the periodic refresh tries again."""
    names = sorted(set(tables))
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a table name: {name!r}")
    session.commit()  # ANALYZE on SQLite needs the write lock; never inside a caller's open transaction
    started = time.monotonic()
    try:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(f"PRAGMA analysis_limit={int(defaults.SQLITE_ANALYSIS_LIMIT)}")
            for statement in ([f'ANALYZE "{name}"' for name in names] or ["ANALYZE"]):
                connection.exec_driver_sql(statement)
        else:  # never a bare ANALYZE there: it would analyze every schema of the database, not only ours
            from kinnekt.db import Base
            every = names or sorted(table.name for table in Base.metadata.sorted_tables)
            connection.exec_driver_sql("ANALYZE " + ", ".join(f'"{name}"' for name in every))
        session.commit()
    except DBAPIError:
        session.rollback()
        log.exception("planner statistics not refreshed (%s)", ", ".join(names) or "every table")
        return None
    took = time.monotonic() - started
    log.info("planner statistics refreshed (%s) in %.0f ms", ", ".join(names) or "every table", took * 1000)
    return took


def refresh(session) -> float | None:
    """The periodic refresh: on SQLite, ANALYZE every table (bounded by analysis_limit, so a large database
    costs no more than a demo-size one); on PostgreSQL nothing, autovacuum analyzes changed tables itself.
    Returns the seconds taken, or None when there was nothing to do."""
    if session.get_bind().dialect.name != "sqlite":
        return None
    return analyze(session)
