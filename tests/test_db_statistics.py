"""The planner's statistics (kinnekt/db_statistics.py): ANALYZE of named or all tables, the periodic refresh, and
the check that they exist, on both databases. The bulk loads that call it are tested beside their own code
(test_demo, test_shopify_bulk, test_subscribers_import) with the helpers here."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from kinnekt import db_statistics
from kinnekt.db import on_postgresql
from kinnekt.models import Customer
from tests.conftest import make_shop


def forget_statistics(session) -> dt.datetime:
    """Drop what SQLite knows (sqlite_stat1's rows); on PostgreSQL, note the moment instead (its statistics
    cannot be dropped by a test, but `analyzed_since` compares the time each table was last analyzed)."""
    session.commit()
    if on_postgresql(session):
        return session.execute(text("SELECT clock_timestamp()")).scalar()
    session.execute(text("ANALYZE sqlite_schema"))  # makes sure sqlite_stat1 exists, so that it can be emptied
    session.execute(text("DELETE FROM sqlite_stat1"))
    session.commit()
    return dt.datetime.now(dt.timezone.utc)


def analyzed_since(session, table: str, mark: dt.datetime) -> bool:
    """True when `table` has planner statistics gathered after `forget_statistics` returned `mark` (SQLite
    writes none for an empty table: give the table rows)."""
    session.commit()
    if on_postgresql(session):
        session.execute(text("SELECT pg_stat_clear_snapshot()"))
        last = session.execute(text(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = :t"),
            {"t": table}).scalar()
        session.commit()
        return last is not None and last >= mark
    rows = session.execute(text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = :t"), {"t": table}).scalar()
    return rows > 0


def test_analyze_gathers_statistics_of_the_named_tables_only(db):
    make_shop()
    mark = forget_statistics(db)
    db_statistics.analyze(db(), ["shops"])
    assert analyzed_since(db, "shops", mark)
    assert not analyzed_since(db, "subscribers", mark)


def test_analyze_without_names_covers_every_table_and_commits_first(db):
    shop = make_shop()
    db.add(Customer(shop_id=shop.id, shopify_id=7))
    db.commit()
    mark = forget_statistics(db)
    shop.name = "Renamed"  # an open change: analyze commits it first, so it is not lost or blocking
    db_statistics.analyze(db())
    assert analyzed_since(db, "shops", mark) and analyzed_since(db, "customers", mark)
    db.expire_all()
    assert shop.name == "Renamed"


def test_analyze_refuses_anything_but_a_table_name(db):
    with pytest.raises(ValueError):
        db_statistics.analyze(db(), ['subscribers"; DROP TABLE shops; --'])


def test_the_periodic_refresh_analyzes_sqlite_and_leaves_postgresql_to_autovacuum(db):
    make_shop()
    mark = forget_statistics(db)
    from kinnekt.jobs import refresh_statistics
    took = refresh_statistics()
    if on_postgresql(db):
        assert took is None and not analyzed_since(db, "shops", mark)
    else:
        assert took is not None and analyzed_since(db, "shops", mark)


def test_the_periodic_refresh_is_scheduled_and_queued_at_start_up():
    from kinnekt.schedule import periodic_jobs
    assert "refresh_statistics" in {p.name for p in periodic_jobs()}


def test_the_in_process_queue_refreshes_them_once_at_start_up(app, db, monkeypatch):
    """A demo database seeded before statistics were kept gets them at its next `make run`, not an hour later."""
    from kinnekt.schedule import start_background
    make_shop()
    mark = forget_statistics(db)
    queue = app.extensions["kinnekt_queue"]
    monkeypatch.setitem(app.extensions, "kinnekt_background_started", False)
    monkeypatch.setattr(queue, "start_periodic", lambda periodic: None)  # no timers left running in the suite
    start_background(app)
    assert queue.drain(20)
    assert analyzed_since(db, "shops", mark) is not on_postgresql(db)  # PostgreSQL: autovacuum's job


def test_a_database_error_is_logged_and_leaves_the_session_usable(db, monkeypatch, caplog):
    from sqlalchemy.exc import OperationalError
    shop = make_shop()
    connection = db.connection()

    def locked(self, sql, *args, **kwargs):
        raise OperationalError(sql, {}, Exception("locked"))

    monkeypatch.setattr(type(connection), "exec_driver_sql", locked)
    assert db_statistics.analyze(db(), ["shops"]) is None
    monkeypatch.undo()
    assert "planner statistics not refreshed (shops)" in caplog.text
    assert db.get(type(shop), shop.id).domain == shop.domain
