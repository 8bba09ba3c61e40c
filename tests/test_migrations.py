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
