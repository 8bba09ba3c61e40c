"""Alembic migrations: on a fresh database they build exactly the models' schema, and go down and up again."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

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


def test_downgrade_to_base_and_upgrade_again(migrated_url):
    engine = kdb.make_engine(migrated_url)
    migrate.downgrade(migrated_url, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(migrated_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
