"""The flow dry run: "if Ana entered now, she would get …": waits with their local end, a quiet-hours deferral,
a condition answered by the segment compiler, the texts rendered for her with their trigger tags, encoding and
parts; the page's search and partial; nothing sent and no row changed; another shop's subscriber or flow is a 404."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from kinnekt.db import Base, Session
from kinnekt.flows import dry_run, service
from kinnekt.models import FlowRun, Product
from kinnekt.models.flow import RunState
from kinnekt.models.storefront import StorefrontEvent
from kinnekt.tenancy import bind_shop
from tests import factories

UTC = dt.timezone.utc
STEPS = [{"kind": "wait", "seconds": 1800},
         {"kind": "condition", "definition": {"match": "all", "rules": [
             {"field": "number_of_orders", "op": "eq", "value": 0}]},
          "yes": [{"kind": "send", "body": "{first_name}, the {product_title} is waiting: {discount_code} 🎁",
                   "discount_mode": "unique", "discount_code": "BACK", "discount_kind": "percent",
                   "discount_value": "10"}],
          "no": [{"kind": "send", "body": "Welcome back"}]},
         {"kind": "wait", "until": "10:00"},
         {"kind": "send", "body": "Last call for the {product_title}"}]


@pytest.fixture
def ana(db, shop):
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, 20 * 60, 9 * 60
    db.add(Product(shop_id=shop.id, shopify_id=7001, title="Rain jacket"))
    person = factories.subscriber(db, shop, first_name="Ana", timezone="America/New_York")
    db.add(StorefrontEvent(shop_id=shop.id, event_id="e-1", name="product_viewed", subscriber_id=person.id,
                           product_id=7001, occurred_at=dt.datetime(2026, 12, 6, 12, tzinfo=UTC),
                           received_at=dt.datetime(2026, 12, 6, 12, tzinfo=UTC)))
    db.commit()
    flow = service.create(db, shop, name="Browse", trigger="product_viewed", steps=STEPS,
                          exit_conditions=["added_to_cart"], reentry_cooldown_seconds=86400)
    return person, flow


def row_counts() -> dict[str, int]:
    """Rows of every table."""
    bind_shop(None)
    Session.expire_all()
    counts = {table.name: Session.scalar(select(func.count()).select_from(table))
              for table in Base.metadata.sorted_tables}
    Session.commit()
    return counts


def test_each_step_for_her_now_waits_deferral_condition_and_texts(db, shop, ana):
    person, flow = ana
    now = dt.datetime(2026, 12, 7, 0, 45, tzinfo=UTC)  # 19:45 in New York: the text falls into quiet hours
    run = dry_run.simulate(db, shop, flow, person, now=now)
    assert run.enters and run.zone == "America/New_York" and run.tags_from == "their latest viewed product"
    kinds = [(o.kind, o.depth, o.branch) for o in run.outcomes]
    assert kinds == [("wait", 0, None), ("condition", 0, None), ("send", 1, "yes"), ("wait", 0, None),
                     ("send", 0, None)]
    wait, condition, first, until, last = run.outcomes
    assert (wait.summary, wait.at, wait.local) == ("Waits 30 minutes", now + dt.timedelta(minutes=30),
                                                   "Sun 06 Dec 2026, 20:15")
    assert condition.summary.startswith("Condition: yes")  # no orders
    assert first.at == dt.datetime(2026, 12, 7, 14, tzinfo=UTC) and first.local == "Mon 07 Dec 2026, 09:00"
    assert "deferred by quiet hours from Sun 06 Dec 2026, 20:15" in first.summary
    footer = shop.compliance_footer.strip()
    assert first.text == f"Ana, the Rain jacket is waiting: BACK-XXXX-XXXX 🎁\n{footer}"  # her first text: the footer
    assert first.facts["encoding"] == "Unicode (UCS-2)" and first.facts["parts"] >= 1 and first.facts["unique_code"]
    assert (until.summary, until.local) == ("Waits until 10:00 on their clock", "Mon 07 Dec 2026, 10:00")
    assert last.text == "Last call for the Rain jacket" and last.facts["encoding"] == "GSM-7"
    assert last.facts["parts"] == 1


def test_an_order_sends_her_down_the_no_branch_and_a_run_in_the_flow_is_said(db, shop, ana):
    person, flow = ana
    customer = factories.customer(db, shop, orders_count=1)  # the count the segment rules read
    person.customer_id = customer.id
    factories.order(db, shop, customer, created_at=dt.datetime(2026, 11, 1, tzinfo=UTC))
    db.add(FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=person.id, version=1, state=RunState.ACTIVE,
                   due_at=dt.datetime(2026, 12, 8, tzinfo=UTC), trigger_key="viewed:1",
                   started_at=dt.datetime(2026, 12, 6, tzinfo=UTC), orders_since=dt.datetime(2026, 12, 6, tzinfo=UTC)))
    db.commit()
    run = dry_run.simulate(db, shop, flow, person, now=dt.datetime(2026, 12, 7, 15, tzinfo=UTC))
    assert not run.enters and "in this flow now" in run.why_not
    assert [(o.kind, o.branch) for o in run.outcomes][1:3] == [("condition", None), ("send", "no")]
    assert run.outcomes[2].text.startswith("Welcome back") and run.outcomes[2].summary == "Gets a text"


def test_the_page_searches_shows_the_dry_run_and_changes_no_row(client, auth, db, shop, ana):
    person, flow = ana
    factories.subscriber(db, shop, first_name="Bob")
    html = client.get(f"/flows/{flow.id}/edit", headers=auth).get_data(as_text=True)
    assert 'id="flow-dry-run"' in html and f"/flows/{flow.id}/dry-run" in html
    before = row_counts()
    found = client.get(f"/flows/{flow.id}/dry-run?q=an", headers=auth)
    assert found.status_code == 200
    page = found.get_data(as_text=True)
    assert f"subscriber_id={person.id}" in page and "Bob" not in page
    answer = client.get(f"/flows/{flow.id}/dry-run?subscriber_id={person.id}", headers=auth)
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "If Ana entered now" in page and "Last call for the Rain jacket" in page and "data-dry-run-steps" in page
    assert client.get(f"/flows/{flow.id}/dry-run?q=zz", headers=auth).get_data(as_text=True).count("No subscriber")
    assert row_counts() == before  # nothing sent, nothing saved


@pytest.mark.parametrize("query", ["subscriber_id=abc", "subscriber_id=-1", "subscriber_id=99999999999999999999999"])
def test_a_bad_subscriber_is_a_404_never_a_500(client, auth, db, shop, ana, query):
    _, flow = ana
    assert client.get(f"/flows/{flow.id}/dry-run?{query}", headers=auth).status_code == 404


def test_another_shops_subscriber_or_flow_is_a_404_and_the_token_is_required(client, auth, db, shop, other_shop, ana):
    person, flow = ana
    stranger = factories.subscriber(db, other_shop, first_name="Ana")
    theirs = service.create(db, other_shop, name="Theirs", trigger="subscribed", steps=[{"kind": "send",
                                                                                       "body": "Hi"}])
    assert client.get(f"/flows/{flow.id}/dry-run?subscriber_id={stranger.id}", headers=auth).status_code == 404
    assert client.get(f"/flows/{theirs.id}/dry-run?subscriber_id={person.id}", headers=auth).status_code == 404
    page = client.get(f"/flows/{flow.id}/dry-run?q=Ana", headers=auth).get_data(as_text=True)
    assert f"subscriber_id={person.id}" in page and f"subscriber_id={stranger.id}" not in page
    assert client.get(f"/flows/{flow.id}/dry-run?q=Ana").status_code in (401, 302, 303)
