"""`flask segments evaluate`: output and exit codes, through click's CliRunner."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.factories import add, rule, where
from tests.test_segments_web import EXAMPLE, person
from kinnekt.db import utcnow
from kinnekt.models import Customer, Subscriber

UTC = dt.timezone.utc


@pytest.fixture
def run(app, tmp_path):
    """Run `flask segments evaluate` with a definition written to a file; returns click's Result."""
    runner = app.test_cli_runner(mix_stderr=False) if _mixes_stderr() else app.test_cli_runner()

    def invoke(shop_domain, definition, *extra):
        path = tmp_path / "definition.json"
        path.write_text(definition if isinstance(definition, str) else json.dumps(definition), encoding="utf-8")
        return runner.invoke(args=["segments", "evaluate", "--shop", shop_domain, "--definition", str(path), *extra])
    return invoke


def _mixes_stderr() -> bool:
    """Click before 8.2 needs mix_stderr=False to keep stderr apart; later ones always do."""
    import inspect

    from click.testing import CliRunner
    return "mix_stderr" in inspect.signature(CliRunner.__init__).parameters


@pytest.fixture
def people(shop, other_shop):
    return [person(shop, "+447700900123", spent="120", orders=3, last_order_days=3),
            person(shop, "+12125550101", spent="60", orders=2, last_order_days=5),
            person(shop, "+12125550102", spent="20", orders=1, last_order_days=10),
            person(shop, "+33612345678", spent="80", orders=2, last_order_days=60),
            person(shop, "+12125550104", spent="500", orders=4, last_order_days=1, status="unsubscribed"),
            person(other_shop, "+12125550199", spent="900", orders=9, last_order_days=1)]


def test_prints_the_members_phones_sorted(run, shop, people):
    result = run(shop.domain, EXAMPLE)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "+12125550101\n+447700900123\n"
    result = run(shop.domain, where(rule("money_spent", "gte", 0)))
    assert result.stdout.splitlines() == ["+12125550101", "+12125550102", "+33612345678", "+447700900123"]


def test_no_members_prints_nothing(run, shop, people):
    result = run(shop.domain, where(rule("money_spent", "gt", 10_000)))
    assert result.exit_code == 0 and result.stdout == ""


def test_now_moves_relative_rules(run, shop, db):
    customer = add(Customer(shop_id=shop.id, shopify_id=1, phone="+12125550101", orders_count=1,
                            last_order_at=dt.datetime(2026, 3, 1, 15, 0, tzinfo=UTC)))
    add(Subscriber(shop_id=shop.id, phone="+12125550101", status="subscribed", source="manual",
                   subscribed_at=utcnow(), customer_id=customer.id))
    recent = where(rule("last_order_created", "within_last_days", 30))
    assert run(shop.domain, recent, "--now", "2026-03-20T12:00:00Z").stdout == "+12125550101\n"
    assert run(shop.domain, recent, "--now", "2026-04-20T12:00:00+02:00").stdout == ""
    # calendar days are the shop's (New York): 1 March 15:00 UTC is 10:00 there
    on_the_day = where(rule("last_order_created", "eq", "today"))
    assert run(shop.domain, on_the_day, "--now", "2026-03-01T23:30:00-05:00").stdout == "+12125550101\n"
    assert run(shop.domain, on_the_day, "--now", "2026-03-02T05:30:00Z").stdout == ""


def test_an_invalid_definition_prints_the_errors_and_fails(run, shop, people):
    result = run(shop.domain, {"match": "all", "rules": [{"field": "money_spent", "op": "gt", "value": "lots"},
                                                         {"field": "color", "op": "eq", "value": "red"}]})
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == ["rules[0].value: must be a number or a decimal string",
                                          "rules[1].field: unknown field 'color'"]
    result = run(shop.domain, [])
    assert result.exit_code == 1
    assert result.stderr.startswith("(definition): must be a group")


def test_another_shops_segment_is_an_error(run, shop, other_shop):
    from tests.test_segments_web import segment
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    result = run(shop.domain, where(rule("segment", "in", theirs.id)))
    assert result.exit_code == 1
    assert result.stderr == f"rules[0].value: there is no segment {theirs.id} in this shop\n"


def test_unknown_shop_is_a_clear_error(run, shop):
    result = run("nobody.myshopify.com", EXAMPLE)
    assert result.exit_code != 0 and result.stdout == ""
    assert "no shop 'nobody.myshopify.com' is installed here" in result.stderr


@pytest.mark.parametrize("now,message", [("yesterday", "is not an ISO 8601 date and time"),
                                         ("2026-03-01T12:00:00", "has no time zone"),
                                         ("2026-02-30T12:00:00Z", "is not an ISO 8601 date and time")])
def test_bad_now_is_a_clear_error(run, shop, now, message):
    result = run(shop.domain, EXAMPLE, "--now", now)
    assert result.exit_code == 2 and result.stdout == ""
    assert "--now" in result.stderr and message in result.stderr


def test_a_file_that_is_not_json_is_a_clear_error(run, shop):
    result = run(shop.domain, "{match: all")
    assert result.exit_code == 1 and "is not valid JSON" in result.stderr
