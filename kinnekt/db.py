"""Engine, session and declarative base (plain SQLAlchemy 2.0), shared by web, workers and CLI."""
from __future__ import annotations

import datetime as dt
import functools
import os
import time
from pathlib import Path
from decimal import Decimal, ROUND_HALF_EVEN

from sqlalchemy import BigInteger, DateTime, MetaData, create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, scoped_session, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from kinnekt import defaults

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata names constraints the same way on every database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime in Python, stored as naive UTC so SQLite and PostgreSQL compare alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware datetime")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text from a Core query
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=dt.timezone.utc)


MONEY_SCALE = 10_000  # four decimal places: every ISO 4217 currency has at most three


class Money(TypeDecorator):
    """A Decimal amount stored as an integer count of 1/10000 units: exact sums and comparisons on any database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        scaled = (Decimal(str(value)) * MONEY_SCALE).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        return int(scaled)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return (Decimal(int(value)) / MONEY_SCALE).quantize(Decimal("0.0001"))


def utcnow() -> dt.datetime:
    """The current instant as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


def aware_utc(now: dt.datetime | None) -> dt.datetime:
    """An injected `now` as aware UTC (the current instant when None); a naive datetime is refused."""
    if now is None:
        return utcnow()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(dt.timezone.utc)


Session = scoped_session(sessionmaker(expire_on_commit=False))
_engine: Engine | None = None
_engine_pid: int | None = None


def on_postgresql(session) -> bool:
    """True when the session (or scoped session) is bound to PostgreSQL; False on SQLite."""
    return session.get_bind().dialect.name == "postgresql"


def begin_writing(session) -> None:
    """SQLite: take the database's write lock now (BEGIN IMMEDIATE), held until the session commits or rolls back,
    so that nothing read from here on can change before this transaction writes. PostgreSQL: nothing (lock rows).

    Python's sqlite3 begins a transaction only at the first INSERT/UPDATE/DELETE, so a read before it sees the
    database as it was, and a write after another job's commit still succeeds: a check made on that read is
    stale. A transaction that already wrote holds the write lock, so it is left as it is."""
    if on_postgresql(session):
        return
    connection = session.connection()
    if not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def insert_ignoring_duplicates(session, model, values: dict | list[dict]):
    """INSERT ... ON CONFLICT DO NOTHING of one row (a dict) or many (a list of dicts), for this session's
    database (PostgreSQL or SQLite): a row that would break any unique constraint is left out."""
    if on_postgresql(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model).values(values).on_conflict_do_nothing()


def make_engine(url: str, *, settings: tuple[str, ...] = (), pool_size: int = 5) -> Engine:
    """Create an engine with the settings each dialect needs (SQLite: FKs, WAL, threads); PostgreSQL: every
    connection also gets `settings` ("name=value" server settings)."""
    url_obj = make_engine_url(url)
    if url_obj.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        if url_obj.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(url_obj.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url_obj, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # PostgreSQL's JIT compiles a plan to machine code once its estimated cost is high, which segment counts
    # and rebuilds over a large shop always are: compiling takes seconds, the query itself tens of ms
    # (bench/segments.py). Off for every connection, besides any options the URL sets.
    options = url_obj.query.get("options")
    options = " ".join(([options] if isinstance(options, str) else list(options or ()))
                       + [f"-c {setting}" for setting in ("jit=off", *settings)])
    engine = create_engine(url_obj, pool_size=pool_size, max_overflow=10, connect_args={"options": options})
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for a while (PostgreSQL restarted, a proxy
    dropped it); a connection returned a moment ago is used as it is. SQLAlchemy's pool_pre_ping would ping
    on every checkout, a round trip per transaction, which the campaign sender does several times per message."""
    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn, record):
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_conn, record, proxy):
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < defaults.DB_PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()  # leave no transaction open: a connection taken for autocommit could not switch
        except Exception as error:  # the pool replaces the connection and tries again
            raise exc.DisconnectionError(str(error)) from error


_no_disk_wait: dict[tuple[int, str], Engine] = {}


def no_disk_wait_engine(engine: Engine) -> Engine:
    """PostgreSQL: an engine on `engine`'s database whose every connection has `synchronous_commit` off (a
    commit does not wait for the disk; a database crash may lose the last ones), with a pool of its own, so
    that no other code is ever handed such a connection. One per process and database."""
    url = engine.url.render_as_string(hide_password=False)
    key = (os.getpid(), url)
    if key not in _no_disk_wait:
        _no_disk_wait[key] = make_engine(url, settings=("synchronous_commit=off",), pool_size=2)
    return _no_disk_wait[key]


def configure(url: str) -> Engine:
    """Bind the shared Session to a (new) engine for this URL and return the engine."""
    global _engine, _engine_pid
    if _engine is not None and _engine.url == make_engine_url(url):
        return _engine
    if _engine is not None:
        Session.remove()
        _engine.dispose()
    _engine = make_engine(url)
    _engine_pid = os.getpid()
    Session.configure(bind=_engine)
    return _engine


def before_fork() -> None:
    """Close this process's pooled connections before it forks a child (an RQ work horse): the child must not
    inherit live connections. SQLite's would be closed by the child's garbage collector, and a closing SQLite
    connection may checkpoint or remove the write-ahead log under the parent's feet; the parent opens new ones
    when it next needs them."""
    Session.remove()
    if _engine is not None:
        _engine.dispose()
    for key in [key for key in _no_disk_wait if key[0] == os.getpid()]:
        _no_disk_wait.pop(key).dispose()


def after_fork() -> None:
    """In a forked child (an RQ work horse), drop the parent's pooled connections without closing them."""
    global _engine_pid
    if _engine is not None and _engine_pid != os.getpid():
        _engine.dispose(close=False)
        _engine_pid = os.getpid()
    for key in [key for key in _no_disk_wait if key[0] != os.getpid()]:
        _no_disk_wait.pop(key).dispose(close=False)


def make_engine_url(url: str):
    """The URL an engine made from `url` would have (driver names filled in)."""
    from sqlalchemy.engine import make_url
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return make_url(url)


def engine() -> Engine:
    """The configured engine (raises when `configure` was never called)."""
    if _engine is None:
        raise RuntimeError("database not configured; call kinnekt.db.configure(url)")
    return _engine


class DriverStatement:
    """A Core statement compiled once for a dialect and run on the DBAPI connection itself, for a hot path that
    runs one statement many times a second (the campaign sender's per-message statements).

    `Connection.execute` costs a sender about a quarter of its CPU per message: the compiled cache's lookup,
    the execution context, the parameters' processing and the result. Here the SQL and its literal parameters
    are fixed at compile time; each run applies the bind parameters' type processors (the same ones SQLAlchemy
    applies: UTCDateTime, Money) to the values given. Errors are raised as SQLAlchemy's; a lost connection is
    invalidated (only this one: `Connection.execute` would also invalidate the pool's other connections) and
    refused from then on, never quietly reconnected without the caller's settings."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.dialect = dialect
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        self._processors = {}
        for name, bind in binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
        self._fixed = {name: self._process(name, bind.effective_value) for name, bind in binds.items()
                       if not bind.required}
        self._order = tuple(compiled.positiontup) if compiled.positional else None
        """The bind names in the order of a positional paramstyle's markers (SQLite's "?"); None for named ones."""

    def _process(self, name: str, value):
        processor = self._processors.get(name)
        return value if processor is None or value is None else processor(value)

    def rowcount(self, connection, values: dict) -> int:
        """Run the statement on `connection` (a SQLAlchemy Connection) with `values` by bind name; the number of
        rows it matched."""
        params = dict(self._fixed)
        for name, value in values.items():
            params[name] = self._process(name, value)
        if self._order is not None:
            params = tuple(params[name] for name in self._order)
        if connection.invalidated or connection.closed:
            # `connection.connection` would quietly open a new DBAPI connection, without the settings the caller
            # chose (autocommit): a statement the caller thinks committed would be rolled back at check-in.
            raise exc.InvalidRequestError("DriverStatement on a lost or closed connection: use a new one")
        dbapi_connection = connection.connection.dbapi_connection
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(self.sql, params)  # psycopg prepares it on the server after a few runs
                return cursor.rowcount
            finally:
                cursor.close()
        except self.dialect.loaded_dbapi.Error as error:
            lost = self.dialect.is_disconnect(error, dbapi_connection, None)
            if lost:
                connection.invalidate(error)
            raise exc.DBAPIError.instance(self.sql, params, error, self.dialect.loaded_dbapi.Error,
                                          connection_invalidated=lost, dialect=self.dialect) from error


@functools.lru_cache(maxsize=32)
def _compiled(statement, dialect) -> DriverStatement:
    return DriverStatement(statement, dialect)


def driver_statement(statement, connection) -> DriverStatement:
    """`statement` compiled once for this connection's dialect, to run on the driver (see DriverStatement)."""
    return _compiled(statement, connection.dialect)
