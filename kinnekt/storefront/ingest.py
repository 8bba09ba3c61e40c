"""Store a checked batch of pixel events: append-only, at most once per shop and event id, attributed when known.

One transaction per batch: the browsers its clues identify are recorded (kinnekt/storefront/identity.py) and
their earlier unattributed events get the subscriber; then the batch's events go in with one
`INSERT … ON CONFLICT (shop_id, event_id) DO NOTHING RETURNING …` (PostgreSQL and SQLite alike), each carrying
its browser's subscriber when the browser is known. A replayed batch, or the same batch posted twice at once,
stores nothing the second time: the unique key decides, not a check before. After the commit,
`storefront_activity` names the subscribers whose events changed, for the segment re-checks.

This runs for every batch the pixel sends (bench/pixel.py, bench/pixel_cpu.py), so it is kept to the round trips
it needs: the identity lookups only when the batch carries a clue (a customer id, a checkout's phone, a `kn`
reference), and on PostgreSQL the events go in as one fixed statement over a JSON array, which finds each
event's subscriber in storefront_browsers itself: no lookup of known browsers first, and the same SQL text every
time, which psycopg prepares once (SQLAlchemy cannot cache an `ON CONFLICT` insert: it compiled one per batch).

On PostgreSQL the batch is written through kinnekt.db.no_disk_wait_engine (a pool of its own whose connections
have `synchronous_commit` off): a commit does not wait for the disk, which on the bench machine took 7-10 ms of
each batch's 10-20 ms. A database crash may lose the last fraction of a second of acknowledged batches (never
part of one: PostgreSQL stays consistent), which a pixel's events can afford: the pixel drops a batch it could
not deliver too. A batch without a clue (most of them) is that one INSERT alone, run outside a transaction: one
round trip, where BEGIN, INSERT and COMMIT took three. A batch with a clue runs its identity statements and the
INSERT in one transaction, as before.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.db import Money, UTCDateTime, no_disk_wait_engine, on_postgresql, utcnow
from kinnekt.models.storefront import StorefrontEvent
from kinnekt.storefront import identity
from kinnekt.storefront.events import Batch


@dataclass(frozen=True)
class Stored:
    """What one batch did: events received, newly stored (the rest were stored before), browsers newly
    identified (or identified as someone else than before)."""

    received: int
    stored: int
    identified: int
    subscriber_ids: tuple[int, ...] = ()


_RECORD_TYPES = {"event_id": "varchar", "name": "varchar", "occurred_at": "timestamp", "client_id": "varchar",
                 "product_id": "bigint", "variant_id": "bigint", "collection_id": "bigint", "quantity": "integer",
                 "value": "bigint", "currency": "varchar", "checkout_token": "varchar", "search_query": "varchar",
                 "url": "text"}
"""The columns one event's JSON object carries (customer_id is the batch's, one parameter)."""

POSTGRESQL_INSERT = (
    "INSERT INTO storefront_events (shop_id, received_at, subscriber_id, customer_id, "
    + ", ".join(_RECORD_TYPES) + ") "
    "SELECT %(shop_id)s::bigint, %(received_at)s::timestamp, "
    "(SELECT b.subscriber_id FROM storefront_browsers b WHERE b.shop_id = %(shop_id)s::bigint "
    "AND b.client_id = e.client_id), %(customer_id)s::bigint, " + ", ".join(f"e.{c}" for c in _RECORD_TYPES) + " "
    "FROM jsonb_to_recordset(%(events)s::jsonb) AS e(" + ", ".join(f"{c} {t}" for c, t in _RECORD_TYPES.items())
    + ") ORDER BY e.event_id ON CONFLICT (shop_id, event_id) DO NOTHING RETURNING subscriber_id")
"""The batch's events as one JSON array of objects (one parameter, serialised by the json module in one call:
cheaper than an array per column, whose elements psycopg would adapt one by one), in one order for every writer
(no deadlock between two batches); each carries its browser's subscriber when storefront_browsers knows the
browser (ties this transaction made included). Values go in as the columns store them (UTCDateTime: naive UTC;
Money: 1/10000 units)."""

_MONEY = Money()
_UTC = UTCDateTime()


def _insert_postgresql(connection, shop_id: int, batch: Batch, now: dt.datetime) -> list[int | None]:
    money, utc = _MONEY.process_bind_param, _UTC.process_bind_param
    events = json.dumps([{
        "event_id": e.event_id, "name": e.name, "occurred_at": utc(e.occurred_at, None).isoformat(),
        "client_id": e.client_id, "product_id": e.product_id, "variant_id": e.variant_id,
        "collection_id": e.collection_id, "quantity": e.quantity, "value": money(e.value, None),
        "currency": e.currency, "checkout_token": e.checkout_token, "search_query": e.search_query, "url": e.url,
    } for e in batch.events], separators=(",", ":"))
    params = {"shop_id": shop_id, "received_at": utc(now, None), "customer_id": batch.customer_id, "events": events}
    return [row[0] for row in connection.exec_driver_sql(POSTGRESQL_INSERT, params)]


def _insert_sqlite(session, shop_id: int, batch: Batch, now: dt.datetime) -> list[int | None]:
    from sqlalchemy.dialects.sqlite import insert
    known = identity.known_browsers(session, shop_id, (e.client_id for e in batch.events))
    rows = [{
        "shop_id": shop_id, "event_id": e.event_id, "name": e.name, "occurred_at": e.occurred_at,
        "received_at": now, "client_id": e.client_id, "subscriber_id": known.get(e.client_id),
        "customer_id": batch.customer_id, "product_id": e.product_id, "variant_id": e.variant_id,
        "collection_id": e.collection_id, "quantity": e.quantity, "value": e.value, "currency": e.currency,
        "checkout_token": e.checkout_token, "search_query": e.search_query, "url": e.url,
    } for e in sorted(batch.events, key=lambda e: e.event_id)]  # one order for every writer: no deadlock
    # Core, with the rows as parameters, which SQLAlchemy sends as a single multi-row INSERT … RETURNING.
    table = StorefrontEvent.__table__
    statement = insert(table).on_conflict_do_nothing(
        index_elements=["shop_id", "event_id"]).returning(table.c.subscriber_id)
    return session.connection().execute(statement, rows).scalars().all()


_writers: dict[tuple[int, int], tuple[object, object]] = {}


def writer_engine(session):
    """PostgreSQL: the engine the batches are written through, beside the session's own (same database, its own
    pool, `synchronous_commit` off: kinnekt.db.no_disk_wait_engine), remembered per process and engine."""
    bind = session.get_bind()
    key = (os.getpid(), id(bind))
    entry = _writers.get(key)
    if entry is None or entry[0] is not bind:
        entry = _writers[key] = (bind, no_disk_wait_engine(bind))
    return entry[1]


def _identify_and_insert(session, shop, batch: Batch, now: dt.datetime, insert) -> tuple[list, set[int], int]:
    """The batch's identity clues recorded, then its events inserted, in the session's transaction (not
    committed): (the inserted rows' subscribers, the subscribers whose earlier events were attributed, how many
    browsers were newly identified)."""
    found = identity.identify(session, shop, batch)  # no query unless the batch carries a clue
    news: list[identity.Identification] = []
    changed: set[int] = set()
    if found:
        known = identity.known_browsers(session, shop.id, (i.client_id for i in found))
        # A browser already tied to the same subscriber needs nothing more (the usual batch of a signed-in shopper).
        news = [i for i in found if known.get(i.client_id) != i.subscriber_id]
        changed = identity.remember(session, shop, news, now)
    return insert(session, batch), changed, len(news)


def store(session, shop, batch: Batch, now: dt.datetime | None = None) -> Stored:
    """Store a batch for this shop (a Shop, or anything with its `id` and `timezone`; commits), then announce the
    subscribers whose events changed."""
    now = now or utcnow()
    changed: set[int] = set()
    identified = 0
    if on_postgresql(session):
        engine = writer_engine(session)
        if identity.has_clue(batch):
            with OrmSession(bind=engine) as writer:
                inserted, changed, identified = _identify_and_insert(
                    writer, shop, batch, now, lambda s, b: _insert_postgresql(s.connection(), shop.id, b, now))
                writer.commit()
        else:
            with engine.connect() as connection:  # one statement: atomic by itself, no BEGIN and COMMIT around it
                connection.execution_options(isolation_level="AUTOCOMMIT")
                inserted = _insert_postgresql(connection, shop.id, batch, now)
    else:
        inserted, changed, identified = _identify_and_insert(
            session, shop, batch, now, lambda s, b: _insert_sqlite(s, shop.id, b, now))
        session.commit()
    subscriber_ids = tuple(sorted(changed | {s for s in inserted if s is not None}))
    if subscriber_ids:
        signals.announce(signals.storefront_activity, session, shop_id=shop.id, subscriber_ids=list(subscriber_ids))
    return Stored(received=len(batch.events), stored=len(inserted), identified=identified,
                  subscriber_ids=subscriber_ids)
