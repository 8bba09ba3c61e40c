"""Alembic migrations: on a fresh database they build exactly the models' schema, and go down and up again."""
import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, insert, inspect, text

from kinnekt import db as kdb, migrate
from kinnekt.db import Base
from tests.conftest import fresh_database


@pytest.fixture
def migrated_url(tmp_path):
    with fresh_database(tmp_path, "migrations") as url:
        migrate.upgrade(url)
        yield url


def test_migrated_schema_matches_the_models(migrated_url):
    engine = kdb.make_engine(migrated_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": migrate.include_object_for(conn.dialect.name)})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


_TRIGGERS = {
    "postgresql": """
        SELECT t.tgname, c.relname, p.proname, p.prosrc FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace ORDER BY t.tgname""",
    "sqlite": "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name",
}
_MESSAGE_KEY_TRIGGERS = {
    "postgresql": {"messages_campaign_key", "messages_campaign_key_update", "campaigns_delete_messages",
                   "campaigns_key_update", "campaigns_truncate_messages", "messages_1_subscriber_key",
                   "messages_subscriber_key_update", "subscribers_key_delete", "subscribers_key_update",
                   "subscribers_release_messages", "subscribers_truncate_messages"},
    "sqlite": {"messages_subscriber_shop_insert", "messages_subscriber_shop_update", "subscribers_shop_update"},
}


def test_migrated_database_keys_messages_with_the_models_triggers(migrated_url, database_url, app):
    """Triggers and constraints are not compared by Alembic: 0007 to 0009 install the same triggers, with the
    same function bodies, as the models' create_all; on PostgreSQL they replace the declared campaign and
    subscriber keys of messages, on SQLite they add the subscriber's shop to its declared key."""
    found = {}
    for name, url in (("migrated", migrated_url), ("models", database_url)):
        engine = kdb.make_engine(url)
        dialect = engine.dialect.name
        with engine.connect() as conn:
            found[name] = [tuple(row) for row in conn.execute(text(_TRIGGERS[dialect]))]
            keys = {fk["referred_table"] for fk in inspect(conn).get_foreign_keys("messages")}
        engine.dispose()
        assert keys == (set() if dialect == "postgresql" else {"campaigns", "subscribers"})
    assert found["migrated"] == found["models"]
    assert {row[0] for row in found["migrated"]} == _MESSAGE_KEY_TRIGGERS[dialect]


def test_downgrade_to_base_and_upgrade_again(migrated_url):
    engine = kdb.make_engine(migrated_url)
    migrate.downgrade(migrated_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(migrated_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_0004_fills_line_items_from_their_orders(tmp_path):
    """Line items that existed before 0004 get their order's customer and whether the order counts."""
    with fresh_database(tmp_path, "backfill") as url:
        migrate.upgrade(url, "0003")
        engine = kdb.make_engine(url)
        tables = MetaData()
        tables.reflect(engine)
        shops, customers, orders, items = (tables.tables[n] for n in ("shops", "customers", "orders", "line_items"))
        at = dt.datetime(2026, 1, 5, 12, 0)
        with engine.begin() as conn:
            conn.execute(insert(shops).values(id=1, domain="a.myshopify.com", **_required(shops, "domain", "id")))
            conn.execute(insert(customers).values(id=7, shop_id=1, shopify_id=70, **_required(customers)))
            for order_id, customer_id, test, cancelled in ((1, 7, False, None), (2, 7, True, None),
                                                           (3, None, False, at)):
                conn.execute(insert(orders).values(id=order_id, shop_id=1, shopify_id=order_id, customer_id=customer_id,
                                                   test=test, cancelled_at=cancelled, created_at=at,
                                                   **_required(orders, "test", "created_at")))
                conn.execute(insert(items).values(id=order_id, shop_id=1, order_id=order_id, shopify_id=order_id,
                                                  **_required(items)))
        migrate.upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, customer_id, counted FROM line_items ORDER BY id")).all()
        engine.dispose()
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [(1, 7, True), (2, 7, False), (3, None, False)]


def _required(table, *given: str) -> dict:
    """Plain values for the NOT NULL columns without a server default (other than the ones given)."""
    skip = {"id", "shop_id", "shopify_id", "order_id", *given}
    values = {}
    for column in table.columns:
        if column.nullable or column.server_default is not None or column.name in skip:
            continue
        python_type = list if isinstance(column.type, sa.JSON) else column.type.python_type
        values[column.name] = {bool: False, int: 0, str: "x", list: []}.get(python_type, dt.datetime(2026, 1, 1))
    return values


def test_0013_fills_the_folded_copies_and_folds_tags(tmp_path):
    """Rows that existed before 0013 get their case-folded copies; a tag folding onto another is dropped."""
    with fresh_database(tmp_path, "casefold") as url:
        migrate.upgrade(url, "0012")
        engine = kdb.make_engine(url)
        tables = MetaData()
        tables.reflect(engine)
        shops, customers, subscribers, orders, items, tags = (tables.tables[n] for n in (
            "shops", "customers", "subscribers", "orders", "line_items", "customer_tags"))
        with engine.begin() as conn:
            conn.execute(insert(shops).values(id=1, domain="a.myshopify.com", **_required(shops, "domain", "id")))
            conn.execute(insert(customers).values(id=7, shop_id=1, shopify_id=70, city="ZÜRICH",
                                                  **_required(customers)))
            conn.execute(insert(subscribers).values(id=3, shop_id=1, phone="+12125550100", keyword="GRÜN",
                                                    carrier="Telekom Straße", **_required(subscribers, "phone")))
            conn.execute(insert(orders).values(id=1, shop_id=1, shopify_id=1, customer_id=7,
                                               created_at=dt.datetime(2026, 1, 1), **_required(orders, "created_at")))
            conn.execute(insert(items).values(id=1, shop_id=1, order_id=1, shopify_id=1, title="GRÖSSE 42",
                                              variant_title=None, **_required(items, "title")))
            for tag_id, tag in ((1, "größe"), (2, "grösse"), (3, "straße"), (4, "vip")):
                conn.execute(insert(tags).values(id=tag_id, shop_id=1, customer_id=7, tag=tag))
        migrate.upgrade(url)
        with engine.connect() as conn:
            folded = (conn.execute(text("SELECT city_folded FROM customers")).scalar(),
                      conn.execute(text("SELECT keyword_folded, carrier_folded FROM subscribers")).one(),
                      conn.execute(text("SELECT title_folded, variant_title_folded FROM line_items")).one())
            stored_tags = conn.execute(text("SELECT tag FROM customer_tags ORDER BY tag")).scalars().all()
        engine.dispose()
    assert folded == ("zürich", ("grün", "telekom strasse"), ("grösse 42", None))
    assert stored_tags == ["grösse", "strasse", "vip"]


def test_0026_makes_each_automation_a_flow_keeping_its_campaign_and_fired_entries(tmp_path):
    """An automation with a sent and a waiting message, and an entry logged past its cursor, becomes a flow: a wait
    of its delay and a send step on its own campaign (now of kind flow), a completed run per entry already fired
    (keyed as the flow keys that entry, so it never fires again), its read starting where the automation's did."""
    with fresh_database(tmp_path, "automations") as url:
        migrate.upgrade(url, "0021")
        engine = kdb.make_engine(url)
        tables = MetaData()
        tables.reflect(engine)
        t = tables.tables
        at = dt.datetime(2026, 3, 1, 12, 0)
        with engine.begin() as conn:
            conn.execute(insert(t["shops"]).values(id=1, domain="a.myshopify.com",
                                                   **_required(t["shops"], "domain", "id")))
            for person in (1, 2, 3):
                conn.execute(insert(t["subscribers"]).values(id=person, shop_id=1, phone=f"+1212555010{person}",
                                                             **_required(t["subscribers"], "phone")))
            conn.execute(insert(t["segments"]).values(id=4, shop_id=1, name="US", **_required(t["segments"], "name")))
            for event, person, minutes in ((10, 1, 0), (11, 2, 1), (12, 3, 2)):
                conn.execute(insert(t["segment_events"]).values(
                    id=event, shop_id=1, segment_id=4, subscriber_id=person, kind="enter", cause="recheck",
                    at=at + dt.timedelta(minutes=minutes)))
            conn.execute(insert(t["campaigns"]).values(
                id=5, shop_id=1, name="Welcome", body="Hi!", kind="automation", status="in_progress",
                **_required(t["campaigns"], "name", "body", "kind", "status")))
            conn.execute(insert(t["automations"]).values(
                id=6, shop_id=1, campaign_id=5, name="Welcome", trigger="enter", segment_id=4, delay_seconds=600,
                enabled=True, builtin="welcome", last_event_id=11, enabled_at=at - dt.timedelta(days=1),
                **_required(t["automations"], "name", "trigger", "delay_seconds", "enabled", "last_event_id",
                           "campaign_id")))
            for message, person, event, status in ((7, 1, 10, "sent"), (8, 2, 11, "pending")):
                conn.execute(insert(t["messages"]).values(
                    id=message, shop_id=1, campaign_id=5, subscriber_id=person, occurrence=event, kind="automation",
                    to_phone=f"+1212555010{person}", status=status,
                    **_required(t["messages"], "kind", "to_phone", "status", "occurrence", "campaign_id")))
        migrate.upgrade(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM automations")).scalar() == 0
            flow = conn.execute(text("SELECT id, name, \"trigger\", segment_id, status, builtin, version, "
                                     "scanned_through FROM flows")).one()
            steps = conn.execute(text("SELECT id, position, kind, wait_seconds, campaign_id FROM flow_steps "
                                      "WHERE flow_id = :f ORDER BY position"), {"f": flow.id}).all()
            runs = conn.execute(text("SELECT subscriber_id, trigger_key, state, current_step_id FROM flow_runs "
                                     "ORDER BY subscriber_id")).all()
            kind = conn.execute(text("SELECT kind FROM campaigns WHERE id = 5")).scalar()
            waiting = conn.execute(text("SELECT status, occurrence FROM messages WHERE id = 8")).one()
        engine.dispose()
    assert tuple(flow)[1:7] == ("Welcome", "segment_enter", 4, "on", "welcome", 1)
    assert str(flow.scanned_through)[:16] == "2026-03-01 12:01"  # the cursor's entry (10 and 11 fired; 12 unread)
    assert [tuple(s)[1:] for s in steps] == [(0, "wait", 600, None), (1, "send", None, 5)]
    assert [tuple(r) for r in runs] == [(1, "event:10", "completed", steps[1].id),
                                        (2, "event:11", "completed", steps[1].id)]
    assert (kind, tuple(waiting)) == ("flow", ("pending", 11))
