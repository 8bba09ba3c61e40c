"""Flask CLI commands: `flask db upgrade|downgrade|revision`, `flask demo seed|run`."""
from __future__ import annotations

import os
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from kinnekt.config import public_url_is_set, served_url

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


def _seed_demo(customers: int, reset: bool) -> bool:
    """Seed the demo store unless it is already there; True when it seeded."""
    import datetime as dt

    from kinnekt import demo
    from kinnekt.db import Session
    domain = current_app.config["DEMO_SHOP_DOMAIN"]
    if reset:
        demo.clear(Session, domain)
    if demo.is_seeded(Session, domain):
        return False
    # Anchor the story at the start of today (UTC): the same day always gives the same store.
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    demo.seed(Session, domain=domain, now=today, customers=customers)
    return True


@demo_cli.command("seed")
@click.option("--customers", default=3000, show_default=True, help="How many customers the store has.")
@click.option("--reset", is_flag=True, help="Delete the demo store first.")
def demo_seed(customers: int, reset: bool) -> None:
    """Create the demo store (deterministic, realistic data) in DATABASE_URL."""
    if not current_app.config["DEMO_MODE"]:
        raise click.ClickException("the demo store is only created in demo mode (KINNEKT_DEMO=1)")
    from kinnekt import migrate
    migrate.upgrade(current_app.config["DATABASE_URL"])
    click.echo("demo store created" if _seed_demo(customers, reset) else "demo store already there")


@demo_cli.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int, envvar="PORT")
@click.option("--customers", default=3000, show_default=True)
def demo_run(host: str, port: int, customers: int) -> None:
    """Migrate, seed the demo store if needed, and serve the app (SQLite and an in-process queue by default)."""
    if not current_app.config["DEMO_MODE"]:
        raise click.ClickException("`demo run` needs KINNEKT_DEMO=1; run production with gunicorn (see README)")
    import time

    from kinnekt import migrate
    from kinnekt.schedule import start_background
    Path(current_app.instance_path).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    migrate.upgrade(current_app.config["DATABASE_URL"])
    if _seed_demo(customers, reset=False):
        click.echo(f"Seeded the demo store in {time.monotonic() - started:.1f} s.")
    app = current_app._get_current_object()
    if not public_url_is_set(os.environ):
        # Links follow where the demo is served, whatever HOST/PORT said when the config was read.
        app.config["SHOPIFY_APP_URL"] = served_url(host, port)
    from kinnekt import demo
    from kinnekt.campaigns import links
    from kinnekt.db import Session
    demo.rebase_links(Session, current_app.config["DEMO_SHOP_DOMAIN"], links.public_base())
    Session.remove()
    start_background(app)
    click.echo(f"\n  Kinnekt demo is running at http://{host}:{port}/\n"
               "  (messages go to the Outbox page; Ctrl+C stops)\n")
    # app.run() is a no-op inside a `flask` command, so serve with Werkzeug directly.
    from werkzeug.serving import run_simple
    run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)


@click.command("health")
def health_command() -> None:
    """Print the database's and the queue's state: each lane's waiting jobs and oldest wait, and the workers."""
    from kinnekt import health
    from kinnekt.db import Session
    found = health.report(Session)
    click.echo(f"queue: {found.queue_mode}; {'ok' if found.ok else 'PROBLEMS'}")
    for problem in found.problems:
        click.echo(f"  problem: {problem}")
    for state in found.lanes:
        oldest = "-" if state.oldest_seconds is None else f"{state.oldest_seconds:.1f} s"
        click.echo(f"  lane {state.lane:<8} waiting {state.waiting:>6}   oldest {oldest}")
    for worker in found.workers:
        click.echo(f"  worker {worker['name']}: {worker['state']}, lanes {','.join(worker['lanes'])}, "
                   f"heartbeat {worker['seconds_since_heartbeat']} s ago")
    if not found.ok:
        raise SystemExit(1)


def init_app(app) -> None:
    """Register the command groups."""
    app.cli.add_command(health_command)
    app.cli.add_command(db_cli)
    app.cli.add_command(demo_cli)
    from kinnekt import cli_shops
    from kinnekt.cli_segments import segments_cli
    cli_shops.init_app(app)  # flask shops add
    app.cli.add_command(segments_cli)  # flask segments evaluate
