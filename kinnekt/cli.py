"""Flask CLI commands: `flask db upgrade|downgrade|revision`, `flask demo seed|run`."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

db_cli = AppGroup("db", help="Database migrations (Alembic).")
demo_cli = AppGroup("demo", help="The demo store.")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations to DATABASE_URL."""
    from kinnekt import migrate
    migrate.upgrade(current_app.config["DATABASE_URL"], revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (e.g. base)."""
    from kinnekt import migrate
    migrate.downgrade(current_app.config["DATABASE_URL"], revision)
    click.echo(f"database at {revision}")


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--empty", is_flag=True, help="Do not compare with the models.")
def db_revision(message: str, empty: bool) -> None:
    """Write a new migration from the difference between the models and the database."""
    from kinnekt import migrate
    migrate.revision(current_app.config["DATABASE_URL"], message, autogenerate=not empty)


def init_app(app) -> None:
    """Register the command groups."""
    app.cli.add_command(db_cli)
    app.cli.add_command(demo_cli)
