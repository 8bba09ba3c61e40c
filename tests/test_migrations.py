"""Alembic migrations: they build exactly the models' schema, and go down and up again, on this database."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from kinnekt import db as kdb, migrate
from kinnekt.db import Base


def test_migrated_schema_matches_the_models(database_url):
    engine = kdb.make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(database_url):
    kdb.Session.remove()
    engine = kdb.make_engine(database_url)
    migrate.downgrade(database_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(database_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
