"""Alembic, driven from Python: upgrade, downgrade, new revisions, current revision."""
from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig

from kinnekt.config import PROJECT_ROOT


def include_object_for(dialect: str):
    """An Alembic `include_object` hook that leaves out objects the models create only on another dialect
    (an index declared with `.ddl_if(dialect="postgresql")` does not exist on SQLite, by design)."""
    def include_object(obj, name, type_, reflected, compare_to) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)
    return include_object


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic config for this project's migrations/ folder and the given database URL."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (default: the newest)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database at `url` back to `revision`."""
    command.downgrade(alembic_config(url), revision)


def revision(url: str, message: str, autogenerate: bool = True) -> None:
    """Write a new migration script (compared against the models when autogenerate)."""
    command.revision(alembic_config(url), message=message, autogenerate=autogenerate)
