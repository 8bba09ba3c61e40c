"""The flows engine: each trigger from its real ingest path, exits during a wait, a worker killed between a step's
decision and its message, quiet hours during a wait, "wait until 10:00" across DST, and two workers advancing the
same due runs at once.

Ingest tests deliver signed Shopify webhooks and Vonage inbound texts through the app and let the in-process
queue chain the real jobs (re-check -> flows job -> campaign senders -> the fake Vonage or the demo Outbox);
step-level tests drive `engine.advance` with a fixed clock on runs placed where the test needs them.
"""
from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from kinnekt.campaigns import trigger_tags
from kinnekt.db import utcnow
from kinnekt.flows import engine, service
from kinnekt.models import Campaign, Checkout, Flow, FlowRun, FlowStep, Link, Message, OutboxMessage, Subscriber
from kinnekt.models.flow import RunState
from kinnekt.segments import membership
from tests import factories
from tests.helpers import wait_until
from tests import shopify_payloads as sp
from tests.fake_vonage import inbound_body, signed_headers

UTC = dt.timezone.utc
NY = "America/New_York"

pytestmark = pytest.mark.usefixtures("settled_jobs")


# ---------------------------------------------------------------------------------------------- helpers

def make_flow(db, shop, trigger, steps, *, on=True, now=None, **fields) -> Flow:
    """A flow of `shop` made by the service, switched on at `now` (the real clock by default)."""
    flow = service.create(db, shop, name=f"Flow {factories.serial()}", trigger=trigger, steps=steps, **fields)
    if on:
        service.set_status(db, flow, True, now=now)
    return flow


def runs(db, flow) -> list[FlowRun]:
    """The flow's runs, by id (fresh from the database)."""
    db.expire_all()
    return list(db.scalars(select(FlowRun).where(FlowRun.flow_id == flow.id).order_by(FlowRun.id)))


def flow_messages(db, flow) -> list[Message]:
    """The messages of the flow's send steps, by id."""
    db.expire_all()
    return list(db.scalars(select(Message).where(Message.campaign_id.in_(service.campaign_ids(db, flow)))
                           .order_by(Message.id)))


def steps_of(db, flow) -> list[FlowStep]:
    """The flow's steps (version 1) in their order of creation."""
    return list(db.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id).order_by(FlowStep.id)))


def place(db, flow, person, step, *, due, started=None) -> FlowRun:
    """A run of `person` standing at `step`, due at `due` (as the engine leaves one)."""
    run = FlowRun(shop_id=flow.shop_id, flow_id=flow.id, subscriber_id=person.id, version=flow.version,
                  state=RunState.ACTIVE, current_step_id=step.id, due_at=due,
                  trigger_key=f"test:{factories.serial()}", started_at=started or due, orders_since=started or due)
    db.add(run)
    db.commit()
    return run


def time_passes(db, flow, seconds):
    """Move the flow's waiting runs `seconds` nearer (as if that much time had passed)."""
    for run in runs(db, flow):
        if run.state == RunState.ACTIVE:
            run.due_at = run.due_at - dt.timedelta(seconds=seconds)
    db.commit()


@pytest.fixture
def quiet_off(db, shop):
    shop.quiet_hours_enabled = False
    db.commit()
    return shop


ABANDONED = [{"kind": "wait", "seconds": 1800}, {"kind": "send", "body": "Forgot something? {checkout_url}"}]


# ---------------------------------------------------------------------------------------------- steps

def test_steps_follow_in_order_and_branches_continue_after_their_condition(db, shop):
    flow = make_flow(db, shop, "subscribed", [
        {"kind": "send", "body": "Welcome"},
        {"kind": "condition", "definition": factories.where(factories.rule("country", "in", ["US"])),
         "yes": [{"kind": "wait", "seconds": 60}, {"kind": "send", "body": "Hi US"}], "no": []},
        {"kind": "send", "body": "Bye"}], on=False)
    welcome, condition, wait, hi, bye = steps_of(db, flow)
    steps = engine.load_steps(db, flow.id, 1)
    assert steps.first == welcome.id
    assert (steps.after[welcome.id], steps.after[condition.id], steps.after[bye.id]) == (condition.id, bye.id, None)
    assert (steps.yes[condition.id], steps.no[condition.id]) == (wait.id, bye.id)  # an empty branch goes on
    assert (steps.after[wait.id], steps.after[hi.id]) == (hi.id, bye.id)


@pytest.mark.parametrize("fields, error", [
    (dict(trigger="segment_enter", steps=[{"kind": "send", "body": "x"}]), "segment"),
    (dict(trigger="nope", steps=[{"kind": "send", "body": "x"}]), "trigger"),
    (dict(trigger="subscribed", steps=[]), "at least one step"),
    (dict(trigger="subscribed", steps=[{"kind": "wait", "seconds": 60}]), "message to send"),
    (dict(trigger="subscribed", steps=[{"kind": "wait", "until": "25:00"}, {"kind": "send", "body": "x"}]), "10:00"),
    (dict(trigger="subscribed", steps=[{"kind": "send", "body": ""}]), "write the text"),
    (dict(trigger="subscribed", steps=[{"kind": "send", "body": "x"}], exit_conditions=["order", "order"]), "once"),
    (dict(trigger="subscribed", steps=[{"kind": "condition", "definition": {"match": "all", "rules": [
        {"field": "no_such_field", "op": "eq", "value": 1}]}}, {"kind": "send", "body": "x"}]), "condition"),
    (dict(trigger="subscribed", steps=[{"kind": "send", "body": "x", "discount_mode": "unique",
                                        "discount_kind": "percent", "discount_value": "10"}]), "{discount_code}"),
])
def test_a_bad_description_is_refused_and_saves_nothing(db, shop, fields, error):
    with pytest.raises(service.FlowError, match=error.replace("{", r"\{").replace("}", r"\}")):
        service.create(db, shop, name="Broken", **fields)
    assert db.scalar(select(func.count()).select_from(Flow)) == 0
    assert db.scalar(select(func.count()).select_from(Campaign)) == 0


# ---------------------------------------------------------------------------------------------- triggers

def test_a_checkout_webhook_starts_a_run_whose_text_carries_a_tracked_recovery_link(
        app, client, db, quiet_off, deliver, vonage_config):
    person = factories.subscriber(db, quiet_off, phone="+16135550101", timezone=NY)
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["order"])
    token = "c0ffee01"
    deliver("checkouts/create", sp.checkout(token, phone=person.phone, created_at=utcnow()))
    [run] = runs(db, flow)
    wait_step, send_step = steps_of(db, flow)
    assert (run.subscriber_id, run.checkout_token, run.trigger_key) == (person.id, token, f"checkout:{token}")
    assert run.current_step_id == send_step.id and run.due_at > utcnow() + dt.timedelta(minutes=29)
    deliver("checkouts/update", sp.checkout(token, phone=person.phone, created_at=utcnow()))
    assert len(runs(db, flow)) == 1  # the same checkout again starts nothing

    time_passes(db, flow, 1800)
    engine.advance(db, quiet_off.id)
    assert wait_until(db, lambda: [m.status for m in flow_messages(db, flow)] == ["sent"])
    assert runs(db, flow)[0].state == RunState.COMPLETED
    [sms] = vonage_config.sent()
    assert sms["to"] == person.phone.lstrip("+") and "/r/" in sms["text"] and "checkouts" not in sms["text"]
    code = sms["text"].rsplit("/r/", 1)[1].split()[0]
    assert db.scalar(select(Link.url).where(Link.code == code)) == \
        f"https://alpha.myshopify.com/checkouts/{token}/recover"
    answer = client.get(f"/r/{code}")
    assert answer.status_code in (301, 302) and answer.headers["Location"].startswith(
        f"https://alpha.myshopify.com/checkouts/{token}/recover")


def test_a_completed_checkout_ends_the_run_in_the_middle_of_its_wait(db, quiet_off, deliver):
    person = factories.subscriber(db, quiet_off, phone="+16135550102")
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["order"])
    deliver("checkouts/create", sp.checkout("t-wait", phone=person.phone, created_at=utcnow()))
    assert [r.state for r in runs(db, flow)] == [RunState.ACTIVE]
    later = utcnow() + dt.timedelta(seconds=2)  # Shopify's newer update (its times are to the second)
    deliver("checkouts/update", sp.checkout("t-wait", phone=person.phone, created_at=utcnow(),
                                            updated_at=later, completed_at=later))
    [run] = runs(db, flow)
    assert (run.state, run.exit_reason) == (RunState.EXITED, "order")  # at once, not when the wait is over
    time_passes(db, flow, 3600)
    engine.advance(db, quiet_off.id, now=utcnow() + dt.timedelta(hours=1))
    assert flow_messages(db, flow) == []


def test_an_order_during_the_wait_ends_the_run(db, quiet_off, deliver):
    person, customer = factories.buyer(db, quiet_off)
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, exit_conditions=["unsubscribed", "order"])
    deliver("checkouts/create", sp.checkout("t-order", customer_payload=sp.order_customer(customer.shopify_id),
                                            created_at=utcnow()))
    assert [r.state for r in runs(db, flow)] == [RunState.ACTIVE]
    deliver("orders/create", sp.order(customer_payload=sp.order_customer(customer.shopify_id),
                                      created_at=utcnow()))
    assert [(r.state, r.exit_reason) for r in runs(db, flow)] == [(RunState.EXITED, "order")]
    engine.advance(db, quiet_off.id, now=utcnow() + dt.timedelta(hours=1))
    assert flow_messages(db, flow) == []


def test_order_placed_and_fulfilled_start_runs_with_the_order_and_its_product(db, quiet_off, deliver):
    person, customer = factories.buyer(db, quiet_off)
    placed = make_flow(db, quiet_off, "order_placed", [{"kind": "send", "body": "Thanks for {order_name}!"}])
    fulfilled = make_flow(db, quiet_off, "order_fulfilled", [{"kind": "send", "body": "Enjoy your {product_title}"}])
    payload = sp.order(customer_payload=sp.order_customer(customer.shopify_id), created_at=utcnow(), name="#2042",
                       line_items=[sp.line_item(title="Linen Shirt", product_id=sp.next_id())])
    deliver("orders/create", payload)
    [run] = runs(db, placed)
    assert run.order_id is not None and run.trigger_key == f"order:{run.order_id}"
    assert runs(db, fulfilled) == []  # not fulfilled yet
    later = sp.ts(utcnow() + dt.timedelta(minutes=1))  # Shopify's times are whole seconds: a same-second update is old
    deliver("orders/fulfilled", {**payload, "fulfillment_status": "fulfilled", "updated_at": later})
    assert len(runs(db, placed)) == 1
    [shipped] = runs(db, fulfilled)
    assert shipped.product_id == payload["line_items"][0]["product_id"]
    engine.advance(db, quiet_off.id)
    db.expire_all()
    for flow, text in ((placed, "Thanks for #2042!"), (fulfilled, "Enjoy your Linen Shirt")):
        [message] = flow_messages(db, flow)
        campaign = db.get(Campaign, message.campaign_id)
        tags = trigger_tags.values_for(db, campaign, [message])[message.id]
        from kinnekt.campaigns import composer
        assert composer.render(campaign.body, shop=quiet_off, subscriber=db.get(Subscriber, person.id),
                               discount_code=None, first_message=False, extra=tags) == text


def test_an_old_order_brought_in_by_a_sync_starts_nothing(db, quiet_off, deliver):
    _, customer = factories.buyer(db, quiet_off)
    placed = make_flow(db, quiet_off, "order_placed", [{"kind": "send", "body": "Thanks!"}])
    deliver("orders/create", sp.order(customer_payload=sp.order_customer(customer.shopify_id),
                                      created_at=utcnow() - dt.timedelta(days=30)))
    assert runs(db, placed) == []


def _inbound(app, monkeypatch, msisdn: str, text: str) -> dict:
    """A signed inbound text as Vonage's Messages API posts it to /sms/inbound: the JSON body and its headers."""
    monkeypatch.setitem(app.config, "VONAGE_SIGNATURE_SECRET", "flow-secret")
    raw = json.dumps(inbound_body(text, from_=msisdn, to="15550100200")).encode()
    return {"data": raw, "headers": signed_headers(raw, "flow-secret")}


def test_a_keyword_text_starts_the_keyword_flow_only(app, client, db, monkeypatch):
    from kinnekt.subscribers import keywords
    from tests.conftest import make_shop
    demo = make_shop("texting.myshopify.com", sender="15550100200", is_demo=True, double_opt_in=False,
                     quiet_hours_enabled=False)
    join = keywords.create_keyword(db, demo, word="JOIN")
    keywords.create_keyword(db, demo, word="VIP")
    welcome = make_flow(db, demo, "subscribed", [{"kind": "send", "body": "Welcome to the club"}],
                        trigger_config={"keyword": "join"})
    vip = make_flow(db, demo, "subscribed", [{"kind": "send", "body": "VIP!"}], trigger_config={"keyword": "VIP"})
    assert join.id
    response = client.post("/sms/inbound", **_inbound(app, monkeypatch, "12125550177", "JOIN"))
    assert response.status_code == 204
    assert wait_until(db, lambda: [m.status for m in flow_messages(db, welcome)] == ["sent"])
    assert runs(db, vip) == []
    texts = db.scalars(select(OutboxMessage.text).where(OutboxMessage.to_phone == "+12125550177")).all()
    assert sum(text.startswith("Welcome to the club") for text in texts) == 1


def test_entering_and_leaving_the_segment(db, quiet_off, jobs):
    us = factories.country_segment(db, quiet_off, "US", ["US"], built_at=utcnow() - dt.timedelta(hours=1))
    person = factories.subscriber(db, quiet_off, country="FR")
    flow = make_flow(db, quiet_off, "segment_enter",
                     [{"kind": "wait", "seconds": 3600}, {"kind": "send", "body": "Howdy"}],
                     segment_id=us.id, exit_conditions=["left_segment"], now=utcnow() - dt.timedelta(minutes=1))
    db.execute(update(Subscriber).where(Subscriber.id == person.id).values(country="US"))
    db.commit()
    membership.recheck(db, quiet_off.id, [person.id])
    assert "run_flows" in jobs.names()  # the re-check asks for the flows job (run here by hand)
    assert engine.enter(db, quiet_off.id) == 1
    assert [r.state for r in runs(db, flow)] == [RunState.ACTIVE]
    assert engine.enter(db, quiet_off.id) == 0  # the same entry read again
    db.execute(update(Subscriber).where(Subscriber.id == person.id).values(country="FR"))
    db.commit()
    membership.recheck(db, quiet_off.id, [person.id])
    engine.enter(db, quiet_off.id)
    assert [(r.state, r.exit_reason) for r in runs(db, flow)] == [(RunState.EXITED, "left_segment")]


def test_one_active_run_per_person_and_the_cool_down(db, quiet_off, jobs):
    person = factories.subscriber(db, quiet_off, phone="+16135550103")
    start = utcnow() - dt.timedelta(minutes=1)
    flow = make_flow(db, quiet_off, "checkout_started", ABANDONED, reentry_cooldown_seconds=86400, now=start)

    def checkout(token, at):
        db.add(Checkout(shop_id=quiet_off.id, token=token, phone=person.phone, started_at=at, updated_at=at))
        db.commit()

    checkout("one", utcnow())
    checkout("two", utcnow())
    assert engine.enter(db, quiet_off.id) == 1  # two checkouts, one run at a time
    db.execute(update(FlowRun).values(state=RunState.COMPLETED, due_at=None))
    db.commit()
    checkout("three", utcnow())
    assert engine.enter(db, quiet_off.id) == 0  # within the cool-down
    db.execute(update(FlowRun).values(started_at=utcnow() - dt.timedelta(days=2)))
    db.commit()
    checkout("four", utcnow())
    assert engine.enter(db, quiet_off.id) == 1
    tokens = [r.checkout_token for r in runs(db, flow)]
    assert len(tokens) == len(set(tokens)) == 2


# ---------------------------------------------------------------------------------------------- steps at work

NOW = dt.datetime(2026, 6, 10, 16, 0, tzinfo=UTC)  # 12:00 in New York


def test_conditions_send_each_run_down_its_branch(db, quiet_off):
    us_person = factories.subscriber(db, quiet_off, country="US")
    fr_person = factories.subscriber(db, quiet_off, country="FR")
    flow = make_flow(db, quiet_off, "subscribed", [
        {"kind": "condition", "definition": factories.where(factories.rule("country", "in", ["US"])),
         "yes": [{"kind": "send", "body": "Hi US"}], "no": [{"kind": "send", "body": "Hi world"}]}], now=NOW)
    condition, hi_us, hi_world = steps_of(db, flow)
    for person in (us_person, fr_person):
        place(db, flow, person, condition, due=NOW)
    assert engine.advance(db, quiet_off.id, now=NOW).sent == 2
    sent = {(m.subscriber_id, m.campaign_id) for m in flow_messages(db, flow)}
    assert sent == {(us_person.id, hi_us.campaign_id), (fr_person.id, hi_world.campaign_id)}
    assert {r.state for r in runs(db, flow)} == {RunState.COMPLETED}


def test_a_worker_killed_between_the_decision_and_the_message_loses_nothing_and_sends_once(db, quiet_off):
    people = [factories.subscriber(db, quiet_off) for _ in range(3)]
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "One"}, {"kind": "wait", "seconds": 60},
                                                   {"kind": "send", "body": "Two"}], now=NOW)
    one, wait, two = steps_of(db, flow)
    for person in people:
        place(db, flow, person, one, due=NOW)

    def killed():
        raise SystemExit("worker killed")

    with pytest.raises(SystemExit):
        engine.advance(db, quiet_off.id, now=NOW, fail_after_decision=killed)
    assert flow_messages(db, flow) == []  # nothing half done: no message, no run moved
    assert {r.current_step_id for r in runs(db, flow)} == {one.id}
    assert engine.advance(db, quiet_off.id, now=NOW).sent == 3  # a restarted worker takes them up
    assert {r.current_step_id for r in runs(db, flow)} == {two.id}
    # Even a run put back at its send step (as if its move were lost) never gets the message twice.
    db.execute(update(FlowRun).values(current_step_id=one.id, due_at=NOW))
    db.commit()
    assert engine.advance(db, quiet_off.id, now=NOW).sent == 0
    later = NOW + dt.timedelta(seconds=61)
    assert engine.advance(db, quiet_off.id, now=later).sent == 3
    assert sorted((m.campaign_id, m.subscriber_id) for m in flow_messages(db, flow)) == sorted(
        (step.campaign_id, person.id) for step in (one, two) for person in people)
    assert {r.state for r in runs(db, flow)} == {RunState.COMPLETED}


def test_quiet_hours_during_a_wait_defer_the_message_and_exits_are_checked_again(db, shop):
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, 21 * 60, 8 * 60
    db.commit()
    stays, buys = factories.subscriber(db, shop, timezone=NY), None
    buys, customer = factories.buyer(db, shop)
    buys.timezone = NY
    db.commit()
    flow = make_flow(db, shop, "checkout_started", ABANDONED, exit_conditions=["order"], now=NOW)
    _, send = steps_of(db, flow)
    night = dt.datetime(2026, 6, 11, 3, 0, tzinfo=UTC)  # 23:00 in New York: the wait ends in quiet hours
    for person in (stays, buys):
        place(db, flow, person, send, due=night, started=night - dt.timedelta(minutes=30))
    assert engine.advance(db, shop.id, now=night).sent == 0
    morning = dt.datetime(2026, 6, 11, 12, 0, tzinfo=UTC)  # 08:00 in New York
    assert {(r.current_step_id, r.due_at) for r in runs(db, flow)} == {(send.id, morning)}  # deferred, not dropped
    factories.order(db, shop, customer, created_at=night + dt.timedelta(hours=2))
    assert engine.advance(db, shop.id, now=morning - dt.timedelta(minutes=1)).runs == 0
    assert engine.advance(db, shop.id, now=morning).sent == 1
    assert [m.subscriber_id for m in flow_messages(db, flow)] == [stays.id]
    assert {r.subscriber_id: (r.state, r.exit_reason) for r in runs(db, flow)} == {
        stays.id: (RunState.COMPLETED, None), buys.id: (RunState.EXITED, "order")}


@pytest.mark.parametrize("begun, ends", [
    # 12:00 EST on the Saturday before clocks spring forward: 10:00 EDT on Sunday is 14:00 UTC, not 15:00.
    (dt.datetime(2026, 3, 7, 17, 0, tzinfo=UTC), dt.datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),
    # 12:00 EDT on the Saturday before clocks fall back: 10:00 EST on Sunday is 15:00 UTC.
    (dt.datetime(2026, 10, 31, 16, 0, tzinfo=UTC), dt.datetime(2026, 11, 1, 15, 0, tzinfo=UTC)),
    # 08:00 EDT: 10:00 the same day.
    (dt.datetime(2026, 6, 10, 12, 0, tzinfo=UTC), dt.datetime(2026, 6, 10, 14, 0, tzinfo=UTC)),
])
def test_wait_until_ten_in_the_recipients_zone_across_dst(db, quiet_off, begun, ends):
    person = factories.subscriber(db, quiet_off, timezone=NY)
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "wait", "until": "10:00"},
                                                   {"kind": "send", "body": "Good morning"}], now=begun)
    wait, send = steps_of(db, flow)
    place(db, flow, person, wait, due=begun)
    engine.advance(db, quiet_off.id, now=begun)
    [run] = runs(db, flow)
    assert (run.current_step_id, run.due_at) == (send.id, ends)
    assert engine.advance(db, quiet_off.id, now=ends - dt.timedelta(seconds=1)).sent == 0
    assert engine.advance(db, quiet_off.id, now=ends).sent == 1


def test_two_workers_advancing_the_same_due_runs_send_each_message_once(app, db, quiet_off):
    people = [factories.subscriber(db, quiet_off, commit=False) for _ in range(120)]
    db.commit()
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "Hello"},
                                                   {"kind": "send", "body": "Again"}], now=NOW)
    first, second = steps_of(db, flow)
    for person in people:
        db.add(FlowRun(shop_id=quiet_off.id, flow_id=flow.id, subscriber_id=person.id, version=1,
                       state=RunState.ACTIVE, current_step_id=first.id, due_at=NOW,
                       trigger_key=f"t:{person.id}", started_at=NOW))
    db.commit()
    make_session = sessionmaker(bind=db.get_bind(), expire_on_commit=False)
    counted, errors = [], []
    start = threading.Barrier(2)

    def worker():
        session = make_session()
        try:
            start.wait()
            while (batch := engine.advance(session, quiet_off.id, now=NOW, limit=25)).runs:
                counted.append(batch.sent)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            session.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sum(counted) == 240  # no run was advanced by both workers
    rows = flow_messages(db, flow)
    assert len(rows) == 240 and len({(m.campaign_id, m.occurrence) for m in rows}) == 240
    assert {m.campaign_id for m in rows} == {first.campaign_id, second.campaign_id}
    assert {r.state for r in runs(db, flow)} == {RunState.COMPLETED}


def test_unique_codes_are_held_until_shopify_has_them(db, quiet_off, fake_shopify, monkeypatch, jobs):
    from kinnekt import defaults
    from tests.fake_shopify import connect
    monkeypatch.setattr(defaults, "DISCOUNT_BULK_POLL_SECONDS", 0)
    connect(fake_shopify, quiet_off)
    people = [factories.subscriber(db, quiet_off) for _ in range(2)]
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "Come back: {discount_code}",
                                                    "discount_mode": "unique", "discount_code": "back",
                                                    "discount_kind": "percent", "discount_value": "10"}], now=NOW)
    [send] = steps_of(db, flow)
    for person in people:
        place(db, flow, person, send, due=NOW)
    assert engine.advance(db, quiet_off.id, now=NOW).sent == 2
    rows = flow_messages(db, flow)
    codes = [m.discount_code for m in rows]
    assert len(set(codes)) == 2 and all(code.startswith("BACK-") for code in codes)
    assert [(m.status, m.claim_token) for m in rows] == [("pending", None)] * 2  # released: Shopify has them
    [discount] = fake_shopify.shop(quiet_off.domain).discounts.values()
    assert sorted(discount["codes"]) == sorted(codes)
    assert db.get(Campaign, send.campaign_id).discount_shopify_id is not None


def test_a_flow_switched_off_keeps_its_runs_where_they_are(db, quiet_off):
    person = factories.subscriber(db, quiet_off)
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "Hello"}], now=NOW)
    [send] = steps_of(db, flow)
    place(db, flow, person, send, due=NOW)
    service.set_status(db, flow, False, now=NOW)
    assert engine.advance(db, quiet_off.id, now=NOW).runs == 0
    service.set_status(db, flow, True, now=NOW)
    assert engine.advance(db, quiet_off.id, now=NOW).sent == 1


def test_stop_texted_during_a_wait_ends_the_run(app, client, db, monkeypatch):
    from kinnekt.subscribers import optin
    from tests.conftest import make_shop
    demo = make_shop("stopping.myshopify.com", sender="15550100200", is_demo=True, quiet_hours_enabled=False)
    person = optin.subscribe(db, demo, "+12125550166", source="manual", consent_text="Added by the merchant",
                             double_opt_in=False)
    flow = make_flow(db, demo, "subscribed", [{"kind": "wait", "seconds": 3 * 86400},
                                              {"kind": "send", "body": "Still there?"}],
                     exit_conditions=["unsubscribed"], now=utcnow() - dt.timedelta(minutes=1))
    [_, send] = steps_of(db, flow)
    place(db, flow, person, send, due=utcnow() + dt.timedelta(days=3))
    response = client.post("/sms/inbound", **_inbound(app, monkeypatch, "12125550166", "STOP"))
    assert response.status_code == 204
    assert wait_until(db, lambda: [r.state for r in runs(db, flow)] == [RunState.EXITED])
    assert runs(db, flow)[0].exit_reason == "unsubscribed"
    engine.advance(db, demo.id, now=utcnow() + dt.timedelta(days=4))
    assert flow_messages(db, flow) == []


def test_a_restarted_worker_queues_every_shop_with_flows_and_resumes_its_runs(db, quiet_off, jobs):
    from kinnekt.flows import tasks
    person = factories.subscriber(db, quiet_off)
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "Hello"}],
                     now=utcnow() - dt.timedelta(minutes=1))
    [send] = steps_of(db, flow)
    place(db, flow, person, send, due=utcnow() - dt.timedelta(minutes=5))  # due while no worker ran
    make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "Off"}], on=False)
    assert tasks.requeue_flow_runs() == 1
    assert [(name, args) for name, args, *_ in jobs.jobs if name == "run_flows"] == [("run_flows", (quiet_off.id,))]
    done = tasks.run_flows(quiet_off.id)
    assert (done["advanced"], done["messages"]) == (1, 1)
    assert [r.state for r in runs(db, flow)] == [RunState.COMPLETED]


def test_smart_sending_skips_a_flow_message_at_send_time(db, quiet_off, vonage_config):
    quiet_off.smart_sending_hours = 24
    db.commit()
    texted, fresh = factories.subscriber(db, quiet_off), factories.subscriber(db, quiet_off)
    other = factories.campaign(db, quiet_off, name="Sale")
    factories.message(db, other, texted, status="delivered", sent_at=utcnow() - dt.timedelta(hours=2))
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "send", "body": "Hello"}],
                     now=utcnow() - dt.timedelta(minutes=1))
    [send] = steps_of(db, flow)
    for person in (texted, fresh):
        place(db, flow, person, send, due=utcnow())
    engine.advance(db, quiet_off.id)
    assert wait_until(db, lambda: {m.status for m in flow_messages(db, flow)} == {"sent", "skipped"})
    assert {m.subscriber_id: m.skip_reason for m in flow_messages(db, flow)} == {
        texted.id: "recently_texted", fresh.id: None}
    assert db.get(Campaign, send.campaign_id).status == "in_progress"  # a flow's campaign never completes


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x.example/c", "https://x.example/" + "a" * 2100, "",
                                 None, 42])
def test_a_checkout_recovery_link_that_is_not_a_web_address_is_not_kept(url):
    from kinnekt.shopify.ingest.rest import checkout_row
    payload = sp.checkout("t-bad")
    payload["abandoned_checkout_url"] = url
    assert checkout_row(payload).recovery_url is None
    assert checkout_row(sp.checkout("t-good")).recovery_url == "https://alpha.myshopify.com/checkouts/t-good/recover"


def test_the_ready_made_flows_are_added_off_and_run_as_described(db, quiet_off, jobs):
    quiet_off.is_demo = True  # codes without Shopify
    db.commit()
    added = {key: service.add_builtin(db, quiet_off, key) for key in service.BUILTINS}
    assert {flow.status for flow in added.values()} == {"off"}
    with pytest.raises(service.FlowError, match="already"):
        service.add_builtin(db, quiet_off, "welcome_series")
    with pytest.raises(service.FlowError, match="no such"):
        service.add_builtin(db, quiet_off, "nope")
    welcome = added["welcome_series"]
    service.set_status(db, welcome, True, now=NOW)
    buyer, customer = factories.buyer(db, quiet_off)
    newcomer = factories.subscriber(db, quiet_off)
    first = steps_of(db, welcome)[0]
    for person in (buyer, newcomer):
        place(db, welcome, person, first, due=NOW)
    assert engine.advance(db, quiet_off.id, now=NOW).sent == 2
    assert all(m.discount_code.startswith("WELCOME-") for m in flow_messages(db, welcome))
    factories.order(db, quiet_off, customer, created_at=NOW + dt.timedelta(days=1))
    customer.orders_count = 1  # the customer's facts, as order ingest keeps them
    db.commit()
    assert engine.advance(db, quiet_off.id, now=NOW + dt.timedelta(days=3)).sent == 1  # no reminder: they ordered
    reminder = steps_of(db, welcome)[-1]
    assert [m.subscriber_id for m in flow_messages(db, welcome) if m.campaign_id == reminder.campaign_id] == [
        newcomer.id]


def test_runs_keep_the_version_they_started_with_when_the_flow_is_edited(db, quiet_off, jobs):
    early = factories.subscriber(db, quiet_off)
    flow = make_flow(db, quiet_off, "subscribed", [{"kind": "wait", "seconds": 3600},
                                                   {"kind": "send", "body": "Old text"}], now=NOW)
    old_wait, old_send = steps_of(db, flow)
    place(db, flow, early, old_wait, due=NOW)
    engine.advance(db, quiet_off.id, now=NOW)  # waiting for an hour, at the old send step
    with pytest.raises(service.FlowError):
        service.new_version(db, quiet_off, flow, [{"kind": "wait", "seconds": 60}])  # no message: nothing saved
    assert db.get(Flow, flow.id).version == 1
    service.new_version(db, quiet_off, flow, [{"kind": "send", "body": "New text"}])
    new_send = steps_of(db, flow)[-1]
    assert (db.get(Flow, flow.id).version, new_send.version) == (2, 2)
    from kinnekt.subscribers import optin
    late = optin.subscribe(db, quiet_off, "+12125550144", source="manual", consent_text="Added by the merchant",
                           double_opt_in=False)
    assert engine.enter(db, quiet_off.id) == 1
    assert {r.subscriber_id: r.version for r in runs(db, flow)} == {early.id: 1, late.id: 2}
    assert engine.advance(db, quiet_off.id, now=utcnow() + dt.timedelta(hours=1)).sent == 2
    sent = {m.subscriber_id: db.get(Campaign, m.campaign_id).body for m in flow_messages(db, flow)}
    assert sent == {early.id: "Old text", late.id: "New text"}
    assert old_send.version == 1
