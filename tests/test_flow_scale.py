"""Flows at scale (issue 24): exit checks follow the changed subscribers, not the number of waiting runs; and the
per-step figures (entered, sent, clicked, orders, revenue). Both databases. The 20,000-due-runs timing is in
bench/flows.py, never here."""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import sessionmaker

from kinnekt.db import utcnow
from kinnekt.flows import engine, stats, tasks
from kinnekt.models import Attribution, Click, Link, Message, SegmentEvent, SegmentMember
from kinnekt.models.flow import RunState
from kinnekt.models.message import MessageStatus
from kinnekt.queue import get_queue
from tests import factories
from tests.test_flow_engine import ABANDONED, make_flow, place, runs, steps_of

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 10, 16, 0, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("settled_jobs")


@pytest.fixture
def quiet_off(db, shop):
    shop.quiet_hours_enabled = False
    db.commit()
    return shop


def _waiting_buyers(db, shop, flow, count, *, at=NOW):
    """`count` buyers each with a run standing at the flow's send step, inside its 30-minute wait at `at`."""
    _, send = steps_of(db, flow)
    people = []
    for _ in range(count):
        person, customer = factories.buyer(db, shop)
        place(db, flow, person, send, due=at + dt.timedelta(minutes=20), started=at - dt.timedelta(minutes=10))
        people.append((person, customer))
    return people


def test_exits_apply_mid_wait_to_the_changed_subscribers_and_to_the_others_when_due(db, quiet_off):
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["unsubscribed", "order"],
                     now=NOW - dt.timedelta(hours=1))
    people = _waiting_buyers(db, quiet_off, flow, 4)
    (a, a_customer), (b, b_customer), (c, _), (d, _) = people
    for customer in (a_customer, b_customer):  # both ordered during the wait
        factories.order(db, quiet_off, customer, created_at=NOW - dt.timedelta(minutes=5))
    c.status = "unsubscribed"
    db.commit()

    # Only the subscribers named as changed are checked: A and C leave now, mid-wait, each with its reason.
    assert engine.exit_subscribers(db, quiet_off.id, [a.id, c.id, d.id], now=NOW) == 2
    state = {r.subscriber_id: (r.state, r.exit_reason) for r in runs(db, flow)}
    assert state == {a.id: (RunState.EXITED, "order"), b.id: (RunState.ACTIVE, None),
                     c.id: (RunState.EXITED, "unsubscribed"), d.id: (RunState.ACTIVE, None)}
    # B's change was not announced: the check before its step catches it when the wait is over; D gets its text.
    result = engine.advance(db, quiet_off.id, now=NOW + dt.timedelta(minutes=20))
    assert (result.exited, result.sent) == (1, 1)
    state = {r.subscriber_id: (r.state, r.exit_reason) for r in runs(db, flow)}
    assert state[b.id] == (RunState.EXITED, "order") and state[d.id] == (RunState.COMPLETED, None)
    assert [m.subscriber_id for m in db.scalars(select(Message).where(Message.campaign_id == steps_of(
        db, flow)[1].campaign_id))] == [d.id]


def test_exit_checks_go_by_chunks_of_subscribers(db, quiet_off, monkeypatch):
    monkeypatch.setattr(engine, "EXIT_CHUNK", 2)
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["order"],
                     now=NOW - dt.timedelta(hours=1))
    people = _waiting_buyers(db, quiet_off, flow, 5)
    for _, customer in people:
        factories.order(db, quiet_off, customer, created_at=NOW - dt.timedelta(minutes=5))
    ids = [person.id for person, _ in people]
    assert engine.exit_subscribers(db, quiet_off.id, ids + ids[:2] + [None], now=NOW) == 5
    assert {r.state for r in runs(db, flow)} == {RunState.EXITED}
    assert engine.exit_subscribers(db, quiet_off.id, ids, now=NOW) == 0  # exited once
    assert engine.exit_subscribers(db, quiet_off.id, [], now=NOW) == 0


def test_entering_does_not_rescan_the_waiting_runs(db, quiet_off):
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["unsubscribed", "order"],
                     now=NOW - dt.timedelta(hours=1))
    _waiting_buyers(db, quiet_off, flow, 6)
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    bind = db.get_bind()
    event.listen(bind, "before_cursor_execute", record)
    try:
        engine.enter(db, quiet_off.id, now=NOW)
    finally:
        event.remove(bind, "before_cursor_execute", record)
    assert any("flow_runs" in s for s in statements)  # it did read the trigger's source and insert runs
    assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE FLOW_RUNS")]
    assert {r.state for r in runs(db, flow)} == {RunState.ACTIVE}


def test_leaving_the_segment_by_a_rebuild_ends_the_waiting_run(db, quiet_off):
    us = factories.country_segment(db, quiet_off, "US people", ["US"])
    person = factories.subscriber(db, quiet_off, country="US")
    flow = make_flow(db, quiet_off, "segment_enter", [{"kind": "wait", "seconds": 3600},
                                                      {"kind": "send", "body": "Hi"}],
                     segment_id=us.id, exit_conditions=["left_segment"], now=NOW - dt.timedelta(hours=1))
    _, send = steps_of(db, flow)
    place(db, flow, person, send, due=NOW + dt.timedelta(minutes=30), started=NOW - dt.timedelta(minutes=30))
    db.execute(SegmentMember.__table__.delete().where(SegmentMember.subscriber_id == person.id))
    db.add(SegmentEvent(shop_id=quiet_off.id, segment_id=us.id, subscriber_id=person.id, kind="leave",
                        cause="build", at=NOW - dt.timedelta(minutes=1)))
    db.commit()
    engine.enter(db, quiet_off.id, now=NOW)
    assert [(r.state, r.exit_reason) for r in runs(db, flow)] == [(RunState.EXITED, "left_segment")]


def test_the_recheck_signal_piles_up_subscribers_for_the_exits_job(db, quiet_off):
    now = utcnow()
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["order"],
                     now=now - dt.timedelta(hours=1))
    (a, a_customer), (b, b_customer) = _waiting_buyers(db, quiet_off, flow, 2, at=now)
    for customer in (a_customer, b_customer):
        factories.order(db, quiet_off, customer, created_at=now - dt.timedelta(minutes=5))
    engine._enter_after_recheck(db, shop_id=quiet_off.id, subscriber_ids=[a.id])  # only A's change announced
    assert get_queue().drain(30)
    assert {r.subscriber_id: r.state for r in runs(db, flow)} == {a.id: RunState.EXITED, b.id: RunState.ACTIVE}
    assert tasks.exit_flows(quiet_off.id) == 0  # nothing left piled up


# ---------------------------------------------------------------------------------------------- per-step figures

def test_step_figures_count_entries_sends_clicks_orders_and_revenue_per_step(db, quiet_off):
    flow = make_flow(db, quiet_off, "subscribed", [
        {"kind": "send", "body": "Welcome"},
        {"kind": "wait", "seconds": 3600},
        {"kind": "condition", "definition": factories.where(factories.rule("country", "in", ["US"])),
         "yes": [{"kind": "send", "body": "Hi US"}], "no": []}], exit_conditions=["unsubscribed"],
        now=NOW - dt.timedelta(hours=1))
    welcome, wait, condition, hi_us = steps_of(db, flow)
    us, fr, late, gone = (factories.subscriber(db, quiet_off, country=c) for c in ("US", "FR", "US", "US"))
    for person in (us, fr, late, gone):
        place(db, flow, person, welcome, due=NOW)
    gone.status = "unsubscribed"
    db.commit()
    first = engine.advance(db, quiet_off.id, now=NOW)
    assert (first.sent, first.exited) == (3, 1)
    for run in runs(db, flow):  # US and FR are past the wait; "late" still waits
        if run.subscriber_id in (us.id, fr.id):
            run.due_at = NOW
    db.commit()
    assert engine.advance(db, quiet_off.id, now=NOW + dt.timedelta(minutes=1)).sent == 1
    welcome_messages = {m.subscriber_id: m for m in db.scalars(select(Message).where(
        Message.campaign_id == welcome.campaign_id))}
    welcome_messages[us.id].status = MessageStatus.DELIVERED
    welcome_messages[fr.id].status = MessageStatus.SENT
    link = Link(shop_id=quiet_off.id, code="abc123", url="https://x.example/", campaign_id=welcome.campaign_id,
                subscriber_id=us.id, message_id=welcome_messages[us.id].id)
    db.add(link)
    db.flush()
    db.add_all([Click(shop_id=quiet_off.id, link_id=link.id, campaign_id=welcome.campaign_id, subscriber_id=us.id)
                for _ in range(2)])
    customer = factories.customer(db, quiet_off)
    order = factories.order(db, quiet_off, customer, created_at=NOW)
    db.add(Attribution(shop_id=quiet_off.id, order_id=order.id, campaign_id=welcome.campaign_id,
                       subscriber_id=us.id, method="click", revenue=Decimal("30.50")))
    db.commit()

    figures = stats.step_figures(db, flow)
    by_step = {f.step.id: f for f in figures.steps}
    assert [f.step.id for f in figures.steps] == [welcome.id, wait.id, condition.id, hi_us.id]
    assert [(f.depth, f.branch) for f in figures.steps] == [(0, None), (0, None), (0, None), (1, "yes")]
    assert by_step[welcome.id].entered == 4  # three sent, one left before it (unsubscribed)
    assert (by_step[welcome.id].sent, by_step[welcome.id].clicks, by_step[welcome.id].clicked) == (2, 2, 1)
    assert (by_step[welcome.id].orders, by_step[welcome.id].revenue) == (1, Decimal("30.50"))
    assert by_step[wait.id].entered == 3
    assert (by_step[condition.id].entered, by_step[condition.id].here) == (3, 1)  # "late" stands at it
    assert (by_step[hi_us.id].entered, by_step[hi_us.id].sent) == (1, 0)  # pending: not sent yet
    assert (figures.entered, figures.sent, figures.clicks, figures.clicked, figures.orders, figures.revenue) == (
        4, 2, 2, 1, 1, Decimal("30.50"))


def test_step_figures_of_a_flow_without_runs_are_zero_and_other_shops_do_not_count(db, quiet_off, other_shop):
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, now=NOW)
    theirs = make_flow(db, other_shop, "checkout_started", ABANDONED, now=NOW)
    place(db, theirs, factories.subscriber(db, other_shop), steps_of(db, theirs)[0], due=NOW)
    assert stats.step_figures(db, theirs).entered == 1
    figures = stats.step_figures(db, flow)
    assert [(f.step.kind, f.entered, f.sent) for f in figures.steps] == [("wait", 0, 0), ("send", 0, 0)]
    assert (figures.entered, figures.revenue) == (0, Decimal(0))


def test_the_exits_job_and_a_worker_advancing_the_same_runs_text_nobody_who_ordered(db, quiet_off):
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["order"],
                     now=NOW - dt.timedelta(hours=1))
    people = _waiting_buyers(db, quiet_off, flow, 60)
    ordered = people[::2]
    for _, customer in ordered:
        factories.order(db, quiet_off, customer, created_at=NOW - dt.timedelta(minutes=5))
    due = NOW + dt.timedelta(minutes=20)
    make_session = sessionmaker(bind=db.get_bind(), expire_on_commit=False)
    start, errors, exited, sent = threading.Barrier(2), [], [], []

    def run(work):
        session = make_session()
        try:
            start.wait()
            work(session)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            session.close()

    def exits(session):
        exited.append(engine.exit_subscribers(session, quiet_off.id, [p.id for p, _ in people], now=due))

    def advance(session):
        while (batch := engine.advance(session, quiet_off.id, now=due, limit=7)).runs:
            sent.append(batch.sent)
            exited.append(batch.exited)

    threads = [threading.Thread(target=run, args=(work,)) for work in (exits, advance)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    state = {r.subscriber_id: (r.state, r.exit_reason) for r in runs(db, flow)}
    assert {state[p.id] for p, _ in ordered} == {(RunState.EXITED, "order")}
    assert sum(exited) == 30 and sum(sent) == 30  # each run left once or was texted once
    texted = {m.subscriber_id for m in db.scalars(select(Message).where(
        Message.campaign_id == steps_of(db, flow)[1].campaign_id))}
    assert texted == {p.id for p, _ in people[1::2]}
