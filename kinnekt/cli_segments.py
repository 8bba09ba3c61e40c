"""`flask segments evaluate`: who is in a segment definition, for support and scripting."""
from __future__ import annotations

import datetime as dt
import json

import click
from flask.cli import AppGroup
from sqlalchemy import select

from kinnekt import shops
from kinnekt.db import Session, utcnow
from kinnekt.models import Subscriber
from kinnekt.segments import compiler, rules
from kinnekt.segments.rules import DefinitionError

segments_cli = AppGroup("segments", help="Segment definitions: evaluate one against a shop.")


def parse_now(raw: str | None) -> dt.datetime:
    """The --now option as an aware UTC instant (ISO 8601 with an offset or Z); the current time when absent."""
    if raw is None:
        return utcnow()
    try:
        value = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not an ISO 8601 date and time, e.g. 2026-03-01T12:00:00Z",
                                 param_hint="--now") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise click.BadParameter(f"{raw!r} has no time zone; add Z or an offset such as +01:00",
                                 param_hint="--now")
    return value.astimezone(dt.timezone.utc)


@segments_cli.command("evaluate")
@click.option("--shop", "domain", required=True, help="The shop, as <shop>.myshopify.com.")
@click.option("--definition", "definition_file", required=True, type=click.File("r", encoding="utf-8"),
              help="A JSON file holding a segment definition (see docs/segment-rules.md); - reads stdin.")
@click.option("--now", "now_raw", default=None, help="Evaluate at this instant (ISO 8601 with a time zone).")
def evaluate(domain: str, definition_file, now_raw: str | None) -> None:
    """Print the phone numbers (E.164) of the shop's subscribers in the definition, one per line, sorted.

    An invalid definition prints every error (path: message) to stderr and exits with status 1.
    """
    now = parse_now(now_raw)
    shop = shops.by_domain(domain.strip())
    if shop is None:
        raise click.ClickException(f"no shop {domain.strip()!r} is installed here")
    try:
        definition = json.load(definition_file)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{definition_file.name} is not valid JSON: {exc}") from None
    try:
        normalised = rules.validate(definition, shop_id=shop.id, session=Session)
        statement = compiler.compile_definition(normalised, shop=shop, now=now, session=Session)
    except DefinitionError as exc:
        for error in exc.errors:
            click.echo(f"{error['path'] or '(definition)'}: {error['message']}", err=True)
        click.get_current_context().exit(1)
    phones = Session.scalars(select(Subscriber.phone).where(Subscriber.id.in_(statement.scalar_subquery())))
    for phone in sorted(phones):  # sorted in Python: the same order whatever the database's collation
        click.echo(phone)
