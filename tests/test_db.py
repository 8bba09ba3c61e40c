"""kinnekt.db: an injected `now` as aware UTC, and pooled PostgreSQL connections that survive a restart."""
import datetime as dt
import os

import pytest
from sqlalchemy import text

from kinnekt import db as kdb, defaults


def test_aware_utc_converts_and_refuses_naive_times():
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert kdb.aware_utc(dt.datetime(2026, 3, 1, 12, 0, tzinfo=berlin)) == dt.datetime(2026, 3, 1, 11, 0,
                                                                                        tzinfo=dt.timezone.utc)
    assert kdb.aware_utc(None).tzinfo == dt.timezone.utc
    with pytest.raises(ValueError):
        kdb.aware_utc(dt.datetime(2026, 3, 1, 12, 0))


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="PostgreSQL pool")
def test_an_idle_connection_killed_by_the_server_is_replaced(monkeypatch):
    engine = kdb.make_engine(os.environ["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            victim = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as other:  # a second pooled connection does the killing
            other.execute(text("SELECT 1"))
        admin = kdb.make_engine(os.environ["DATABASE_URL"])
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        admin.dispose()
        monkeypatch.setattr(defaults, "DB_PING_AFTER_IDLE_SECONDS", 0)  # every pooled connection counts as idle
        for _ in range(2):  # whichever pooled connection comes out, the query works
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="PostgreSQL pool")
def test_a_pinged_connection_can_be_taken_for_autocommit(monkeypatch):
    """The ping after idle leaves no transaction open: a connection taken for autocommit (the campaign
    sender's moves and answers) could not switch to it otherwise."""
    engine = kdb.make_engine(os.environ["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        monkeypatch.setattr(defaults, "DB_PING_AFTER_IDLE_SECONDS", 0)  # every pooled connection counts as idle
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            assert conn.execute(text("SHOW transaction_isolation")).scalar()
            conn.execute(text("CREATE TEMPORARY TABLE pinged (n int)"))  # runs outside any transaction block
            assert conn.connection.driver_connection.info.transaction_status == 0  # IDLE, no transaction left open
    finally:
        engine.dispose()


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="PostgreSQL pool")
def test_the_no_disk_wait_engine_has_synchronous_commit_off_and_a_pool_of_its_own():
    engine = kdb.make_engine(os.environ["DATABASE_URL"])
    try:
        quick = kdb.no_disk_wait_engine(engine)
        assert quick is kdb.no_disk_wait_engine(engine) and quick is not engine
        with quick.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
        with engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        kdb.no_disk_wait_engine(engine).dispose()
        engine.dispose()
