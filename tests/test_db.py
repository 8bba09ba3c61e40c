"""kinnekt.db: an injected `now` as aware UTC, and pooled PostgreSQL connections that survive a restart."""
import datetime as dt
import os
from decimal import Decimal

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


def _driver_table():
    from sqlalchemy import BigInteger, Column, MetaData, String, Table
    return Table("driver_statement_probe", MetaData(), Column("id", BigInteger, primary_key=True),
                 Column("name", String(20), unique=True), Column("at", kdb.UTCDateTime),
                 Column("price", kdb.Money))


@pytest.fixture
def probe(db):
    """A table of its own on the test database (SQLite or PostgreSQL), with the app's custom types."""
    table = _driver_table()
    bind = db.get_bind()
    table.create(bind)
    try:
        yield table, bind
    finally:
        table.drop(bind)


def test_a_driver_statement_stores_what_sqlalchemy_would_store(probe):
    """Literals compiled in, the bind values through the same type processors (aware UTC -> naive UTC, Money ->
    1/10000 units): the row reads back through SQLAlchemy as written; the matched rows are counted."""
    from sqlalchemy import bindparam, insert, select, update
    table, bind = probe
    berlin = dt.timezone(dt.timedelta(hours=1))
    with bind.begin() as conn:
        conn.execute(insert(table), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    statement = kdb.DriverStatement(
        update(table).where(table.c.id == bindparam("p_id"), table.c.name != "z")
        .values(at=bindparam("p_at", type_=table.c.at.type), price=bindparam("p_price", type_=table.c.price.type)),
        bind.dialect)
    with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert statement.rowcount(conn, {"p_id": 2, "p_at": dt.datetime(2026, 3, 1, 12, 30, tzinfo=berlin),
                                         "p_price": Decimal("0.0333")}) == 1
        assert statement.rowcount(conn, {"p_id": 3, "p_at": None, "p_price": None}) == 0
    with bind.connect() as conn:
        rows = conn.execute(select(table.c.id, table.c.at, table.c.price).order_by(table.c.id)).all()
        raw = conn.execute(text("SELECT price FROM driver_statement_probe WHERE id = 2")).scalar()
    assert rows == [(1, None, None), (2, dt.datetime(2026, 3, 1, 11, 30, tzinfo=dt.timezone.utc),
                                      Decimal("0.0333"))]
    assert raw == 333


def test_a_driver_statement_raises_sqlalchemys_errors_and_changes_nothing(probe):
    from sqlalchemy import bindparam, exc, insert, select, update
    table, bind = probe
    with bind.begin() as conn:
        conn.execute(insert(table), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    statement = kdb.DriverStatement(update(table).where(table.c.id == bindparam("p_id"))
                                    .values(name=bindparam("p_name")), bind.dialect)
    with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with pytest.raises(exc.IntegrityError):
            statement.rowcount(conn, {"p_id": 2, "p_name": "a"})  # the name is taken
        assert not conn.invalidated  # the connection is still good
        assert statement.rowcount(conn, {"p_id": 2, "p_name": "c"}) == 1
    with bind.connect() as conn:
        assert conn.execute(select(table.c.name).order_by(table.c.id)).scalars().all() == ["a", "c"]


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="PostgreSQL backend")
def test_a_driver_statement_on_a_lost_connection_invalidates_it(probe):
    from sqlalchemy import bindparam, exc, update
    table, bind = probe
    statement = kdb.DriverStatement(update(table).where(table.c.id == bindparam("p_id")).values(name="x"),
                                    bind.dialect)
    with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with bind.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        with pytest.raises(exc.DBAPIError) as raised:
            statement.rowcount(conn, {"p_id": 1})
        assert raised.value.connection_invalidated and conn.invalidated
        # Never quietly reconnected: a new DBAPI connection would not be in autocommit, and the update would be
        # rolled back when the connection goes back to the pool, after the caller counted it as done.
        with pytest.raises(exc.InvalidRequestError, match="lost or closed"):
            statement.rowcount(conn, {"p_id": 1})


@pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="SQLite's write lock")
def test_begin_writing_takes_sqlites_write_lock_until_the_session_ends_its_transaction(db, shop):
    import sqlite3
    other = sqlite3.connect(kdb.engine().url.database, timeout=0)  # no waiting: a held lock fails at once
    try:
        kdb.begin_writing(db)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        kdb.begin_writing(db)  # already holding it: nothing to do
        db.commit()
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
        shop.name = "Renamed"
        db.flush()  # a transaction that already wrote holds the lock: it is kept, not begun again
        kdb.begin_writing(db)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        db.rollback()
    finally:
        other.close()
