"""Two webhook jobs at once, in a forced interleaving: the first pauses after a chosen statement until the second
has run that statement too, has finished, or waits for a lock that the first one holds."""
from __future__ import annotations

import threading
import time
from typing import Callable

from sqlalchemy import event, text

from kinnekt import db as kdb

DEADLINE = 120.0
"""Seconds a step may take before the race is declared stuck: generous, a busy machine only makes it slower."""


def reads(table: str, key: str) -> Callable[[str], bool]:
    """A statement test: a SELECT of `table`'s rows by `key` (the read an upsert makes before it decides)."""
    def test(statement: str) -> bool:
        return statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement \
            and f"{table}.{key} IN" in statement
    return test


def runs(prefix: str) -> Callable[[str], bool]:
    """A statement test: the statement starts with `prefix` (e.g. "INSERT INTO line_items")."""
    return lambda statement: statement.lstrip().startswith(prefix)


class Race:
    """Run `first` and `second` (callables) in two threads with their own sessions and app contexts.

    The first pauses right after its first statement that `pause_after` accepts. The second starts then, and
    the first goes on once the second has run such a statement as well (before the fix: both have read the old
    row, and neither has written), has finished, or is waiting for a lock the first holds (after the fix: it
    waits its turn). How the second is waiting is read from the database: PostgreSQL lists it as waiting for
    a lock; on SQLite, it has a statement that needs the write lock running while the first holds that lock.
    """

    def __init__(self, app, pause_after: Callable[[str], bool]):
        self.app = app
        self.pause_after = pause_after
        self.engine = kdb.engine()
        self.threads: dict[str, threading.Thread] = {}
        self.errors: dict[str, BaseException] = {}
        self.first_paused = threading.Event()
        self.release_first = threading.Event()
        self.second_reached = threading.Event()
        self.first_writing = False  # SQLite: the first job's connection was inside a (write) transaction
        self.in_flight: tuple[str, int | None] | None = None  # the second job's running statement, its backend

    def _who(self) -> str | None:
        current = threading.current_thread()
        for name, thread in self.threads.items():
            if thread is current:
                return name
        return None

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        if self._who() == "second":
            dbapi = conn.connection.dbapi_connection
            pid = dbapi.info.backend_pid if self.engine.dialect.name == "postgresql" else None
            self.in_flight = (statement, pid)

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        who = self._who()
        if who == "second":
            self.in_flight = None
            if self.pause_after(statement):
                self.second_reached.set()
        elif who == "first" and not self.first_paused.is_set() and self.pause_after(statement):
            if self.engine.dialect.name == "sqlite":
                self.first_writing = conn.connection.dbapi_connection.in_transaction
            self.first_paused.set()
            if not self.release_first.wait(DEADLINE):
                raise AssertionError("the first job was never let go")

    def _second_waits_for_a_lock(self) -> bool:
        flight = self.in_flight
        if flight is None:
            return False
        statement, pid = flight
        if pid is not None:
            with self.engine.connect() as conn:  # a new transaction: pg_stat_activity is read afresh
                waiting = conn.execute(text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                                       {"pid": pid}).scalar()
            return waiting == "Lock"
        return self.first_writing and not statement.lstrip().upper().startswith("SELECT")

    def _thread(self, name: str, work: Callable[[], object]) -> threading.Thread:
        def run():
            try:
                with self.app.app_context():
                    try:
                        work()
                    finally:
                        kdb.Session.remove()
            except BaseException as exc:  # reported by run()
                self.errors[name] = exc
        thread = threading.Thread(target=run, name=f"race-{name}", daemon=True)
        self.threads[name] = thread
        return thread

    def _until(self, condition: Callable[[], bool], failure: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            assert time.monotonic() < deadline, failure
            time.sleep(0.01)

    def run(self, first: Callable[[], object], second: Callable[[], object]) -> None:
        """Run both jobs as described above; raises the first error either job raised."""
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            one = self._thread("first", first)
            two = self._thread("second", second)
            one.start()
            self._until(lambda: self.first_paused.is_set() or not one.is_alive(),
                        "the first job never paused")
            assert self.first_paused.is_set(), f"the first job never ran the statement to pause after: " \
                                               f"{self.errors.get('first')!r}"
            two.start()
            self._until(lambda: self.second_reached.is_set() or not two.is_alive()
                        or self._second_waits_for_a_lock(),
                        "the second job neither read, finished nor waited for the first")
        finally:
            self.release_first.set()
            for thread in self.threads.values():
                if thread.ident is not None:
                    thread.join(DEADLINE)
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)
        assert not any(thread.is_alive() for thread in self.threads.values()), "a job is still running"
        for name in ("first", "second"):
            if name in self.errors:
                raise self.errors[name]
