"""Migration 0026: automations become one-step flows without changing what they send.

The automations are made and fired by the automations engine itself (messages with occurrence = the segment
event id: one sent, one waiting for its delay, one held for its unique discount code, and an entry logged past
the cursor not fired yet), then the migration's upgrade runs on the suite's database (SQLite or PostgreSQL), then
the flows engine takes over: nobody already texted for an entry is texted again for it, the waiting messages
still go, once, and the unread entry and later entries get exactly one message each.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import select, update

from kinnekt.automations import engine as automations_engine
from kinnekt.campaigns import sending
from kinnekt.flows import engine, service
from kinnekt.models import (Automation, Campaign, Flow, FlowRun, FlowStep, Message, OutboxMessage, SegmentEvent,
                            Subscriber)
from kinnekt.models.flow import FlowStatus, RunState
from kinnekt.models.message import HOLD
from tests.test_automation_engine import automation as _automation, move
from tests.test_campaign_audience import segment, subscriber

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)
MIGRATION = Path(__file__).resolve().parents[1] / "migrations" / "versions" / "0026_automations_to_flows.py"


def migrate_automations(db) -> None:
    """Run migration 0026's upgrade on the suite's database, in the session's transaction; commits."""
    spec = importlib.util.spec_from_file_location("migration_0026", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Operations.context(MigrationContext.configure(db.connection())):
        module.upgrade()
    db.commit()
    db.expire_all()


class Auto:
    """What a test needs of an automation after the migration removed its row."""

    def __init__(self, row: Automation):
        self.id, self.name, self.campaign_id = row.id, row.name, row.campaign_id


def automation(db, shop, seg, **fields) -> Auto:
    return Auto(_automation(db, shop, seg, **fields))


def switched_on_at(db, auto, when) -> None:
    db.execute(update(Automation).where(Automation.id == auto.id).values(enabled_at=when))
    db.commit()


def rows(db, campaign_id) -> list[Message]:
    db.expire_all()
    return list(db.scalars(select(Message).where(Message.campaign_id == campaign_id).order_by(Message.id)))


@pytest.fixture
def quiet_off(db, shop):
    shop.quiet_hours_enabled = False
    db.commit()
    return shop


def test_automations_become_flows_that_never_send_twice_and_lose_nothing(db, quiet_off, jobs):
    shop = quiet_off
    us = segment(db, shop, "US", ["US"], now=NOW - dt.timedelta(hours=2))
    now_auto = automation(db, shop, us, body="Welcome {first_name}!")
    later_auto = automation(db, shop, us, delay=3600, body="An hour later, {first_name}")
    for auto in (now_auto, later_auto):
        switched_on_at(db, auto, NOW - dt.timedelta(hours=1))
    ann, bob = subscriber(db, shop, country="FR"), subscriber(db, shop, country="FR")
    move(db, ann, "US", at=NOW)
    assert automations_engine.fire(db, shop.id, now=NOW) == 2
    sent_row = rows(db, now_auto.campaign_id)[0]
    db.execute(update(Message).where(Message.id == sent_row.id).values(status="sent", sent_at=NOW, claim_token=None))
    db.commit()
    [waiting_row] = rows(db, later_auto.campaign_id)
    assert (waiting_row.status, waiting_row.due_at) == ("pending", NOW + dt.timedelta(hours=1))
    # Bob enters after the last fire: logged, not fired yet (past both cursors).
    move(db, bob, "US", at=NOW + dt.timedelta(minutes=1))
    bob_entry = db.scalars(select(SegmentEvent).where(SegmentEvent.subscriber_id == bob.id)).one()

    migrate_automations(db)

    assert db.scalars(select(Automation)).all() == []
    flows = {f.name: f for f in db.scalars(select(Flow).where(Flow.shop_id == shop.id))}
    assert set(flows) == {now_auto.name, later_auto.name}
    first, second = flows[now_auto.name], flows[later_auto.name]
    assert (first.trigger, first.segment_id, first.status, first.exit_conditions, first.version) == \
        ("segment_enter", us.id, FlowStatus.ON, [], 1)
    assert [(s.kind, s.wait_seconds, s.campaign_id) for s in service_steps(db, first)] == \
        [("send", None, now_auto.campaign_id)]
    assert [(s.kind, s.wait_seconds, s.campaign_id) for s in service_steps(db, second)] == \
        [("wait", 3600, None), ("send", None, later_auto.campaign_id)]
    assert service.describe(db, second) == [{"kind": "wait", "seconds": 3600},
                                            {"kind": "send", "body": "An hour later, {first_name}",
                                             "discount_mode": "none"}]
    assert {db.get(Campaign, c).kind for c in (now_auto.campaign_id, later_auto.campaign_id)} == {"flow"}
    ann_entry = db.scalars(select(SegmentEvent).where(SegmentEvent.subscriber_id == ann.id)).one()
    fired = db.scalars(select(FlowRun).where(FlowRun.subscriber_id == ann.id)).all()
    assert {(r.flow_id, r.trigger_key, r.state) for r in fired} == {
        (first.id, f"event:{ann_entry.id}", RunState.COMPLETED), (second.id, f"event:{ann_entry.id}",
                                                                 RunState.COMPLETED)}

    # The flows engine takes over: Ann's entry is read again (the lookback) and starts nothing; Bob's starts one.
    later = NOW + dt.timedelta(minutes=2)
    assert engine.enter(db, shop.id, now=later) == 2
    while engine.advance(db, shop.id, now=later).runs:
        pass
    first_rows, second_rows = rows(db, now_auto.campaign_id), rows(db, later_auto.campaign_id)
    assert [(m.subscriber_id, m.status) for m in first_rows] == [(ann.id, "sent"), (bob.id, "pending")]
    bob_run = db.scalars(select(FlowRun).where(FlowRun.flow_id == first.id, FlowRun.subscriber_id == bob.id)).one()
    assert (first_rows[1].occurrence, bob_run.trigger_key) == (bob_run.id, f"event:{bob_entry.id}")
    assert [(m.id, m.status, m.due_at) for m in second_rows] == [(waiting_row.id, "pending", waiting_row.due_at)]
    # Bob waits his hour in the second flow; then he gets its message, once.
    assert engine.advance(db, shop.id, now=later + dt.timedelta(hours=1, seconds=1)).sent == 1
    assert engine.enter(db, shop.id, now=later + dt.timedelta(hours=1, minutes=1)) == 0
    while engine.advance(db, shop.id, now=later + dt.timedelta(hours=2)).runs:
        pass
    assert sorted(m.subscriber_id for m in rows(db, later_auto.campaign_id)) == sorted([ann.id, bob.id])
    # Ann's waiting message is still the automation's one, sent by the campaign's sender when due.
    assert [m.kind for m in rows(db, later_auto.campaign_id) if m.subscriber_id == ann.id] == ["automation"]

    # Leaving and entering again is a new entry: one new message, as the automation gave.
    move(db, ann, "FR", at=later + dt.timedelta(hours=3))
    move(db, ann, "US", at=later + dt.timedelta(hours=3, minutes=1))
    at = later + dt.timedelta(hours=3, minutes=2)
    assert engine.enter(db, shop.id, now=at) == 2
    while engine.advance(db, shop.id, now=at).runs:
        pass
    assert [m.subscriber_id for m in rows(db, now_auto.campaign_id)] == [ann.id, bob.id, ann.id]


def service_steps(db, flow) -> list[FlowStep]:
    return list(db.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id, FlowStep.version == flow.version)
                           .order_by(FlowStep.position)))


def test_waiting_messages_of_a_migrated_automation_are_sent_once_by_the_campaign_sender(db, jobs):
    from tests.conftest import make_shop
    demo = make_shop("migrating.myshopify.com", is_demo=True, quiet_hours_enabled=False)
    us = segment(db, demo, "US", ["US"], now=NOW - dt.timedelta(hours=2))
    auto = automation(db, demo, us, delay=600, body="Ten minutes later")
    switched_on_at(db, auto, NOW - dt.timedelta(hours=1))
    ann = subscriber(db, demo, country="FR")
    move(db, ann, "US", at=NOW)
    assert automations_engine.fire(db, demo.id, now=NOW) == 1
    migrate_automations(db)
    [row] = rows(db, auto.campaign_id)
    assert (row.status, row.kind, db.get(Campaign, auto.campaign_id).status) == ("pending", "automation",
                                                                                  "in_progress")
    # Due (ten minutes after the entry, long past): the flow's campaign sender sends it, once.
    sending.run(db, auto.campaign_id, budget=10)
    sending.run(db, auto.campaign_id, budget=10)
    texts = db.scalars(select(OutboxMessage.text).where(OutboxMessage.shop_id == demo.id)).all()
    assert [text.startswith("Ten minutes later") for text in texts] == [True]
    assert [(m.id, m.status) for m in rows(db, auto.campaign_id)] == [(row.id, "sent")]
    # And the flows engine never adds a second message for Ann's entry.
    assert engine.enter(db, demo.id, now=NOW + dt.timedelta(minutes=3)) == 0
    while engine.advance(db, demo.id, now=NOW + dt.timedelta(hours=1)).runs:
        pass
    assert [m.id for m in rows(db, auto.campaign_id)] == [row.id]


def test_held_codes_and_switched_off_automations_carry_over(db, quiet_off, jobs):
    shop = quiet_off
    us = segment(db, shop, "US", ["US"], now=NOW - dt.timedelta(hours=2))
    held = automation(db, shop, us, body="Take {discount_code}", discount_mode="unique", discount_code="HI",
                      discount_kind="percent", discount_value=10)
    switched_on_at(db, held, NOW - dt.timedelta(hours=1))
    off = automation(db, shop, us, body="Never on", enabled=False)
    ann = subscriber(db, shop, country="FR")
    move(db, ann, "US", at=NOW)
    automations_engine._fire_chunk(db, shop, held.id, NOW)  # the fire's transaction; Shopify never answered
    [row] = rows(db, held.campaign_id)
    assert (row.claim_token, bool(row.discount_code)) == (HOLD, True)
    migrate_automations(db)
    flows = {f.name: f for f in db.scalars(select(Flow).where(Flow.shop_id == shop.id))}
    assert (flows[off.name].status, flows[off.name].scanned_through) == (FlowStatus.OFF, None)
    assert flows[held.name].status == FlowStatus.ON
    [kept] = rows(db, held.campaign_id)
    assert (kept.id, kept.claim_token, kept.discount_code) == (row.id, HOLD, row.discount_code)
    # The recovery settles held rows of any campaign (the flow's now) as it did the automation's.
    db.execute(update(Message).where(Message.id == row.id).values(updated_at=NOW - dt.timedelta(days=1)))
    db.commit()
    automations_engine.settle_stale_holds(db)
    db.expire_all()
    assert db.get(Message, row.id).claim_token != HOLD
    assert engine.enter(db, shop.id, now=NOW + dt.timedelta(minutes=3)) == 0


def test_a_shop_without_automations_is_left_as_it_is(db, shop):
    subscriber(db, shop, country="US")
    before = db.scalars(select(Flow)).all()
    migrate_automations(db)
    assert db.scalars(select(Flow)).all() == before
    assert db.scalars(select(Subscriber)).all()
