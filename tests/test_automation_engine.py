"""The automations engine: segment log entries become exactly one message each, due after the delay and quiet hours.

Fire-level tests drive membership and `engine.fire` themselves with a fixed clock (jobs are recorded, not
run); the end-to-end tests let the in-process queue chain the real jobs (re-check -> fire -> campaign
senders) and send through the fake Vonage; discount codes go to the fake Shopify.
"""
from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from kinnekt import defaults
from kinnekt.automations import engine
from kinnekt.campaigns import sending, stats
from kinnekt.db import utcnow
from kinnekt.models import Automation, Campaign, Link, Message, Segment, SegmentEvent, Subscriber
from kinnekt.models.message import HOLD
from kinnekt.segments import membership
from tests.fake_shopify import connect
from tests.helpers import wait_until
from tests.test_campaign_audience import segment, sent_message, subscriber

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 15, 16, 0, tzinfo=UTC)  # 12:00 in New York, 01:00 next day in Tokyo
LATER = NOW + dt.timedelta(minutes=5)
_serial = itertools.count(1)


# ---------------------------------------------------------------------------------------------- helpers

def automation(db, shop, seg, *, trigger="enter", delay=0, body="Welcome {first_name}!", enabled=True,
               **campaign_fields) -> Automation:
    """An automation of `shop` on `seg` with its backing campaign, switched on as the service does it."""
    now = utcnow()
    n = next(_serial)
    backing = Campaign(shop_id=shop.id, name=f"Automation {n}", body=body, kind="automation",
                       status="in_progress" if enabled else "draft", started_at=now if enabled else None,
                       snapshot_at=now if enabled else None, **campaign_fields)
    db.add(backing)
    db.flush()
    cursor = db.scalar(select(func.coalesce(func.max(SegmentEvent.id), 0)).where(SegmentEvent.shop_id == shop.id))
    row = Automation(shop_id=shop.id, campaign_id=backing.id, name=f"Automation {n}", trigger=trigger,
                     segment_id=seg.id, delay_seconds=delay, enabled=enabled, last_event_id=cursor,
                     enabled_at=now if enabled else None)
    db.add(row)
    db.commit()
    return row


def messages(db, auto) -> list[Message]:
    """The automation's messages, by id."""
    db.expire_all()
    return list(db.scalars(select(Message).where(Message.campaign_id == auto.campaign_id).order_by(Message.id)))


def events(db, seg, kind=None) -> list[SegmentEvent]:
    """The segment's log, by id."""
    query = select(SegmentEvent).where(SegmentEvent.segment_id == seg.id).order_by(SegmentEvent.id)
    if kind:
        query = query.where(SegmentEvent.kind == kind)
    return list(db.scalars(query))


def move(db, person, country, *, at=NOW):
    """Change the subscriber's country and re-check them (enters and leaves of country segments)."""
    db.execute(update(Subscriber).where(Subscriber.id == person.id).values(country=country))
    db.commit()
    return membership.recheck(db, person.shop_id, [person.id], now=at)


@pytest.fixture
def quiet_off(db, shop):
    """The shop with quiet hours off (the clock decides nothing here unless a test says so)."""
    shop.quiet_hours_enabled = False
    db.commit()
    return shop


@pytest.fixture
def us(db, quiet_off):
    """A built segment of the shop's US numbers (its build logs nothing that fires)."""
    return segment(db, quiet_off, "US", ["US"])


# ---------------------------------------------------------------------------------------------- firing

def test_an_entry_fires_one_message_due_after_the_delay(db, quiet_off, us, jobs):
    earlier = subscriber(db, quiet_off, country="US")
    membership.build(db, us.id, now=NOW)  # earlier's entry is a build: it never fires
    auto = automation(db, quiet_off, us, delay=3600)
    ann = subscriber(db, quiet_off, country="FR", first_name="Ann")
    move(db, ann, "US")
    assert ("fire_automations", (quiet_off.id,)) in [(name, args) for name, args, *_ in jobs.jobs]
    assert engine.fire(db, quiet_off.id, now=LATER) == 1
    [entry] = events(db, us, "enter")[-1:]
    [row] = messages(db, auto)
    assert (row.subscriber_id, row.kind, row.occurrence, row.status, row.to_phone) == \
        (ann.id, "automation", entry.id, "pending", ann.phone)
    assert row.due_at == NOW + dt.timedelta(hours=1)  # the event's time plus the delay
    assert row.client_ref is None  # the sender sends m<id>: a partial index keeps snapshot rows out
    assert earlier.id not in {m.subscriber_id for m in messages(db, auto)}
    # Not due yet: a wake-up at its due time, no sender now.
    assert ("wake_campaign", (auto.campaign_id,), f"campaign-{auto.campaign_id}-wake-{int(row.due_at.timestamp())}",
            row.due_at) in jobs.jobs
    db.expire_all()
    assert db.get(Automation, auto.id).last_event_id == entry.id


def test_a_message_due_now_dispatches_the_campaign_senders(db, quiet_off, us, jobs):
    automation(db, quiet_off, us)
    move(db, subscriber(db, quiet_off, country="FR"), "US")
    assert engine.fire(db, quiet_off.id, now=LATER) == 1
    assert "send_campaign" in jobs.names()


def test_replays_never_give_one_entry_a_second_message(db, quiet_off, us, jobs, monkeypatch):
    auto = automation(db, quiet_off, us)
    ann, bob = subscriber(db, quiet_off, country="FR"), subscriber(db, quiet_off, country="FR")
    move(db, ann, "US")
    assert engine.fire(db, quiet_off.id, now=LATER) == 1
    assert engine.fire(db, quiet_off.id, now=LATER) == 0  # nothing new
    # The cursor is reset (a restore, a bug): the same entries are read again and insert nothing.
    db.execute(update(Automation).where(Automation.id == auto.id).values(last_event_id=0))
    db.commit()
    assert engine.fire(db, quiet_off.id, now=LATER) == 0
    assert [m.subscriber_id for m in messages(db, auto)] == [ann.id]
    # A crash after the rows were written and before the cursor moved.
    move(db, bob, "US")
    real = engine._insert_messages

    def crash_after_insert(session, *args, **kwargs):
        real(session, *args, **kwargs)
        session.commit()  # the rows are durable ...
        raise RuntimeError("worker killed")  # ... the cursor never moves

    monkeypatch.setattr(engine, "_insert_messages", crash_after_insert)
    cursor = db.get(Automation, auto.id).last_event_id
    assert engine.fire(db, quiet_off.id, now=LATER) == 0  # logged; the other automations would go on
    with pytest.raises(RuntimeError):
        engine.fire_automation(db, quiet_off, auto.id, now=LATER)
    db.rollback()
    db.expire_all()
    assert db.get(Automation, auto.id).last_event_id == cursor
    monkeypatch.setattr(engine, "_insert_messages", real)
    assert engine.fire(db, quiet_off.id, now=LATER) == 0  # bob's row is already there
    assert sorted(m.subscriber_id for m in messages(db, auto)) == sorted([ann.id, bob.id])
    assert db.get(Automation, auto.id).last_event_id == events(db, us)[-1].id


def test_unread_entries_are_seen_until_fired(db, quiet_off, us, jobs):
    automation(db, quiet_off, us)
    assert not engine.has_unread_entries(db, quiet_off.id)
    move(db, subscriber(db, quiet_off, country="FR"), "US")
    assert engine.has_unread_entries(db, quiet_off.id)
    assert engine.fire(db, quiet_off.id, now=LATER) == 1
    assert not engine.has_unread_entries(db, quiet_off.id)


def test_leaving_and_entering_again_is_a_new_message(db, quiet_off, us, jobs):
    auto = automation(db, quiet_off, us)
    ann = subscriber(db, quiet_off, country="FR")
    move(db, ann, "US")
    move(db, ann, "FR")
    move(db, ann, "US")
    assert engine.fire(db, quiet_off.id, now=LATER) == 2
    enters = events(db, us, "enter")
    assert [(m.subscriber_id, m.occurrence) for m in messages(db, auto)] == [(ann.id, e.id) for e in enters[-2:]]


def test_a_leave_trigger_fires_on_leaving_only(db, quiet_off, us, jobs):
    auto = automation(db, quiet_off, us, trigger="leave")
    ann = subscriber(db, quiet_off, country="FR")
    move(db, ann, "US")
    assert engine.fire(db, quiet_off.id, now=LATER) == 0
    move(db, ann, "FR")
    assert engine.fire(db, quiet_off.id, now=LATER) == 1
    [row] = messages(db, auto)
    assert row.occurrence == events(db, us, "leave")[-1].id


@pytest.mark.parametrize("cause, fires", [("build", False), ("edit", False), ("edit_trigger", True),
                                          ("sweep", True), ("recheck", True)])
def test_which_causes_fire(db, quiet_off, us, jobs, cause, fires):
    auto = automation(db, quiet_off, us)
    ann = subscriber(db, quiet_off, country="US")  # in the segment's definition, not yet a member
    if cause == "recheck":
        membership.recheck(db, quiet_off.id, [ann.id], now=NOW)
    else:
        membership.build(db, us.id, now=NOW, cause=cause)
    assert [e.cause for e in events(db, us, "enter")][-1] == cause
    assert engine.fire(db, quiet_off.id, now=LATER) == (1 if fires else 0)
    assert len(messages(db, auto)) == (1 if fires else 0)
    db.expire_all()
    assert db.get(Automation, auto.id).last_event_id == events(db, us)[-1].id  # read either way
    # Firing causes queue the fire job by themselves; a plain build or edit does not.
    assert ("fire_automations" in jobs.names()) == fires


def test_entries_before_switching_on_never_fire(db, quiet_off, us, jobs):
    ann = subscriber(db, quiet_off, country="FR")
    move(db, ann, "US")
    auto = automation(db, quiet_off, us)
    assert engine.fire(db, quiet_off.id, now=LATER) == 0
    off = automation(db, quiet_off, us, enabled=False)
    move(db, subscriber(db, quiet_off, country="FR"), "US")
    assert engine.fire(db, quiet_off.id, now=LATER) == 1
    assert len(messages(db, auto)) == 1 and messages(db, off) == []


def test_no_job_is_queued_without_an_automation_switched_on(db, quiet_off, us, jobs):
    other = segment(db, quiet_off, "FR", ["FR"])
    automation(db, quiet_off, other)
    automation(db, quiet_off, us, enabled=False)
    move(db, subscriber(db, quiet_off, country="CA"), "US")
    assert "fire_automations" not in jobs.names()
    assert engine.request_fire(db, [us.id]) == 0 and engine.request_fire(db, [other.id]) == 1


def test_quiet_hours_defer_the_due_time_in_the_recipient_s_zone(db, shop, jobs):
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, 21 * 60, 8 * 60
    db.commit()
    us = segment(db, shop, "US+JP", ["US", "JP"])
    auto = automation(db, shop, us, delay=600)
    tokyo = subscriber(db, shop, country="FR", timezone="Asia/Tokyo")
    new_york = subscriber(db, shop, country="FR")  # the shop's zone: 12:10 is outside quiet hours
    move(db, tokyo, "JP")
    move(db, new_york, "US")
    assert engine.fire(db, shop.id, now=NOW) == 2
    due = {m.subscriber_id: m.due_at for m in messages(db, auto)}
    assert due[new_york.id] == NOW + dt.timedelta(minutes=10)
    assert due[tokyo.id] == dt.datetime(2026, 3, 15, 23, 0, tzinfo=UTC)  # 08:00 the next morning in Tokyo


def test_skip_reasons_at_fire_time(db, shop, us, jobs):
    shop.suppression_threshold = 2
    db.commit()
    auto = automation(db, shop, us)
    gone, blocked, silent, fine = (subscriber(db, shop, country="FR") for _ in range(4))
    for person in (gone, blocked, silent, fine):
        move(db, person, "US")
    db.execute(update(Subscriber).where(Subscriber.id == gone.id).values(status="unsubscribed"))
    db.execute(update(Subscriber).where(Subscriber.id == blocked.id).values(suppressed_at=NOW))
    db.execute(update(Subscriber).where(Subscriber.id == silent.id).values(sent_count=2, clicks_count=0))
    db.commit()
    assert engine.fire(db, shop.id, now=LATER) == 1
    outcome = {m.subscriber_id: (m.status, m.skip_reason, m.due_at is None) for m in messages(db, auto)}
    assert outcome == {gone.id: ("skipped", "not_subscribed", True), blocked.id: ("skipped", "suppressed", True),
                       silent.id: ("skipped", "no_clicks", True), fine.id: ("pending", None, False)}


def test_an_automation_switched_off_or_without_segment_does_not_fire(db, quiet_off, us, jobs):
    auto = automation(db, quiet_off, us)
    db.execute(update(Campaign).where(Campaign.id == auto.campaign_id).values(status="draft"))
    db.commit()
    move(db, subscriber(db, quiet_off, country="FR"), "US")
    assert engine.fire(db, quiet_off.id, now=LATER) == 0
    db.execute(update(Campaign).where(Campaign.id == auto.campaign_id).values(status="in_progress"))
    db.execute(update(Automation).where(Automation.id == auto.id).values(segment_id=None))
    db.commit()
    assert engine.fire(db, quiet_off.id, now=LATER) == 0
    assert messages(db, auto) == []


def test_a_big_batch_of_entries_is_read_in_chunks(db, quiet_off, us, jobs, monkeypatch):
    monkeypatch.setattr(defaults, "AUTOMATION_FIRE_CHUNK", 3)
    auto = automation(db, quiet_off, us)
    team = [subscriber(db, quiet_off, country="US") for _ in range(7)]
    membership.build(db, us.id, now=NOW, cause="sweep")
    assert engine.fire(db, quiet_off.id, now=LATER) == 7
    assert sorted(m.subscriber_id for m in messages(db, auto)) == sorted(p.id for p in team)
    assert {m.due_at for m in messages(db, auto)} == {NOW}


# ---------------------------------------------------------------------------------------------- discounts

@pytest.fixture
def shopify_shop(db, quiet_off, fake_shopify, monkeypatch):
    """The shop connected to the fake Shopify; code imports are polled without waiting."""
    monkeypatch.setattr(defaults, "DISCOUNT_BULK_POLL_SECONDS", 0)
    connect(fake_shopify, quiet_off)
    return quiet_off


def test_unique_codes_one_per_message_created_at_shopify(db, shopify_shop, us, jobs, fake_shopify):
    auto = automation(db, shopify_shop, us, discount_mode="unique", discount_code="hello", discount_kind="percent",
                      discount_value=10, body="Welcome! {discount_code}")
    ann, bob, cid = (subscriber(db, shopify_shop, country="FR") for _ in range(3))
    move(db, ann, "US")
    assert engine.fire(db, shopify_shop.id, now=LATER) == 1
    move(db, bob, "US")
    move(db, cid, "US")
    assert engine.fire(db, shopify_shop.id, now=LATER) == 2
    rows = messages(db, auto)
    codes = [m.discount_code for m in rows]
    assert len(set(codes)) == 3 and all(c.startswith("HELLO-") for c in codes)
    backing = db.get(Campaign, auto.campaign_id)
    [discount] = fake_shopify.shop(shopify_shop.domain).discounts.values()
    assert backing.discount_shopify_id in fake_shopify.shop(shopify_shop.domain).discounts
    assert sorted(discount["codes"]) == sorted(codes)  # created with the first, the later ones added
    assert len(fake_shopify.calls("graphql:KinnektCreateDiscount")) == 1
    assert len(fake_shopify.calls("graphql:KinnektAddDiscountCodes")) == 1


def test_a_code_shopify_refuses_skips_its_message(db, shopify_shop, us, jobs, fake_shopify, monkeypatch):
    auto = automation(db, shopify_shop, us, discount_mode="unique", discount_code="", discount_kind="percent",
                      discount_value=10)
    ann, bob = subscriber(db, shopify_shop, country="FR"), subscriber(db, shopify_shop, country="FR")
    move(db, ann, "US")
    engine.fire(db, shopify_shop.id, now=LATER)
    move(db, bob, "US")
    taken = messages(db, auto)[0].discount_code
    monkeypatch.setattr(engine, "_give_codes", lambda session, new_rows, prefix: [
        (m, taken) for m in session.scalars(select(Message.id).where(*new_rows))])  # Shopify has this one already
    engine.fire(db, shopify_shop.id, now=LATER)
    outcome = {m.subscriber_id: (m.status, m.skip_reason) for m in messages(db, auto)}
    assert outcome == {ann.id: ("pending", None), bob.id: ("skipped", "no_discount_code")}


def test_the_shared_code_is_created_once(db, shopify_shop, us, jobs, fake_shopify):
    auto = automation(db, shopify_shop, us, discount_mode="shared", discount_code="WELCOME10",
                      discount_kind="percent", discount_value=10)
    for _ in range(2):
        move(db, subscriber(db, shopify_shop, country="FR"), "US")
        assert engine.fire(db, shopify_shop.id, now=LATER) == 1
    [call] = fake_shopify.calls("graphql:KinnektCreateDiscount")
    assert call["variables"]["discount"]["code"] == "WELCOME10"
    db.expire_all()
    assert db.get(Campaign, auto.campaign_id).discount_shopify_id
    assert {m.discount_code for m in messages(db, auto)} == {None}  # the campaign's code is rendered at send


def test_a_refused_shared_code_skips_the_messages(db, shopify_shop, us, jobs, fake_shopify):
    from kinnekt.shopify.discounts import DiscountValue, create_shared_code
    create_shared_code(shopify_shop, code="TAKEN10", title="Mine", value=DiscountValue.percent_off(5), starts_at=NOW)
    auto = automation(db, shopify_shop, us, discount_mode="shared", discount_code="TAKEN10",
                      discount_kind="percent", discount_value=10)
    move(db, subscriber(db, shopify_shop, country="FR"), "US")
    engine.fire(db, shopify_shop.id, now=LATER)
    assert [(m.status, m.skip_reason) for m in messages(db, auto)] == [("skipped", "no_discount_code")]


def test_rows_wait_for_their_codes_at_shopify_before_any_sender_may_claim_them(db, shopify_shop, us, jobs,
                                                                                fake_shopify, monkeypatch):
    from kinnekt.db import engine as db_engine
    from kinnekt.shopify import discounts
    auto = automation(db, shopify_shop, us, discount_mode="unique", discount_code="HELLO", discount_kind="percent",
                      discount_value=10)
    seen = []
    real = discounts.create_unique_codes

    def create_while_a_sender_tries(shop, codes, **terms):
        with sessionmaker(bind=db_engine())() as other:  # a sender of this automation, already running
            seen.append(sending.claim(other, auto.campaign_id, token="a" * 32))
        return real(shop, codes, **terms)

    monkeypatch.setattr(discounts, "create_unique_codes", create_while_a_sender_tries)
    move(db, subscriber(db, shopify_shop, country="FR"), "US")
    assert engine.fire(db, shopify_shop.id, now=LATER) == 1
    assert seen == [[]]  # held while Shopify had not answered
    [row] = messages(db, auto)
    assert (row.status, row.claim_token) == ("pending", None)  # released once the code exists
    assert sending.claim(db, auto.campaign_id, token="b" * 32) == [row.id]


def test_a_fire_that_dies_before_shopify_answers_never_sends_an_unconfirmed_code(db, shopify_shop, us, jobs,
                                                                               fake_shopify, monkeypatch):
    from kinnekt.shopify import discounts
    unique = automation(db, shopify_shop, us, discount_mode="unique", discount_code="", discount_kind="percent",
                        discount_value=10)

    def worker_killed(*args, **kwargs):
        raise KeyboardInterrupt  # not an Exception: nothing after it in the fire runs, as with a kill

    monkeypatch.setattr(discounts, "create_unique_codes", worker_killed)
    move(db, subscriber(db, shopify_shop, country="FR"), "US")
    with pytest.raises(KeyboardInterrupt):
        engine.fire_automation(db, shopify_shop, unique.id, now=LATER)
    db.rollback()
    db.execute(update(Message).where(Message.campaign_id == unique.campaign_id)
               .values(claim_token=HOLD, updated_at=utcnow()))
    db.commit()  # (the release in `finally` cannot run in a real kill)
    assert sending.claim(db, unique.campaign_id, token="c" * 32) == []
    hold = dt.timedelta(seconds=defaults.AUTOMATION_HOLD_SECONDS)
    assert engine.settle_stale_holds(db, now=utcnow() + hold / 2) == 0  # not stale yet
    assert engine.settle_stale_holds(db, now=utcnow() + hold * 2) == 1
    [row] = messages(db, unique)
    assert (row.status, row.skip_reason, row.claim_token) == ("skipped", "no_discount_code", None)


def test_a_stale_hold_is_released_when_the_shared_code_exists_by_then(db, shopify_shop, us, jobs,
                                                                       fake_shopify):
    shared = automation(db, shopify_shop, us, discount_mode="shared", discount_code="WELCOME10",
                        discount_kind="percent", discount_value=10)
    person = subscriber(db, shopify_shop, country="FR")
    move(db, person, "US")
    assert engine.fire(db, shopify_shop.id, now=LATER) == 1
    db.execute(update(Message).where(Message.campaign_id == shared.campaign_id)
               .values(claim_token=HOLD, updated_at=utcnow()))
    db.commit()  # as if the fire died after Shopify created the code, before the release
    later = utcnow() + dt.timedelta(seconds=2 * defaults.AUTOMATION_HOLD_SECONDS)
    assert engine.settle_stale_holds(db, now=later) == 1
    [row] = messages(db, shared)
    assert (row.status, row.claim_token) == ("pending", None)


def test_demo_shops_hold_nothing(db, shop, us, jobs):
    auto = automation(db, shop, us, discount_mode="unique", discount_code="", discount_kind="percent",
                      discount_value=10)
    shop.is_demo = True
    db.commit()
    move(db, subscriber(db, shop, country="FR"), "US")
    assert engine.fire(db, shop.id, now=LATER) == 1
    [row] = messages(db, auto)
    assert (row.status, row.claim_token) == ("pending", None) and row.discount_code


# ---------------------------------------------------------------------------------------------- sending

def sent_to(fake) -> list[str]:
    """Numbers the fake Vonage texted, in E.164."""
    return ["+" + form["to"] for form in fake.sent()]


def keyword_segment(db, shop):
    """The keyword JOIN and its automatic segment, built."""
    from kinnekt.subscribers import keywords
    keyword = keywords.create_keyword(db, shop, word="JOIN")
    joined = db.scalar(select(Segment).where(Segment.keyword_id == keyword.id))
    assert wait_until(db, lambda: db.get(Segment, joined.id).build_status == "done")
    return keyword, joined


def test_a_keyword_opt_in_is_welcomed_by_itself(db, quiet_off, vonage_config, settled_jobs):
    from kinnekt.subscribers import optin
    keyword, joined = keyword_segment(db, quiet_off)
    auto = automation(db, quiet_off, joined, body="Welcome to Alpha!")
    person = optin.subscribe(db, quiet_off, "+12125550199", source="keyword", keyword=keyword,
                             consent_text="Texted JOIN", double_opt_in=False)
    assert wait_until(db, lambda: [m.status for m in messages(db, auto)] == ["sent"])
    assert sent_to(vonage_config) == [person.phone]
    assert vonage_config.sent()[0]["text"].startswith("Welcome to Alpha!")
    figures = stats.for_campaign(db, db.get(Campaign, auto.campaign_id))
    assert (figures.recipients, figures.sent) == (1, 1)
    assert db.get(Campaign, auto.campaign_id).status == "in_progress"  # an automation never completes


def test_the_double_opt_in_request_does_not_block_the_welcome(db, quiet_off, vonage_config, settled_jobs):
    from kinnekt.subscribers import optin
    quiet_off.smart_sending_hours = 24
    db.commit()
    keyword, joined = keyword_segment(db, quiet_off)
    auto = automation(db, quiet_off, joined, body="Welcome to Alpha!")
    person = optin.subscribe(db, quiet_off, "+12125550198", source="keyword", keyword=keyword,
                             consent_text="Texted JOIN", double_opt_in=True)
    assert wait_until(db, lambda: len(vonage_config.sent()) == 1)  # the "Reply Y" request
    optin.confirm(db, db.get(Subscriber, person.id))
    assert wait_until(db, lambda: [m.status for m in messages(db, auto)] == ["sent"])
    assert sent_to(vonage_config) == [person.phone, person.phone]


def test_an_order_webhook_fires_through_its_recheck(app, client, db, quiet_off, vonage_config,
                                                    settled_jobs):
    from tests import shopify_payloads as sp
    buyers = Segment(shop_id=quiet_off.id, name="Buyers", kind="manual", definition={
        "match": "all", "rules": [{"field": "number_of_orders", "op": "gte", "value": 1}]})
    db.add(buyers)
    db.commit()
    membership.build(db, buyers.id, now=utcnow())
    cid = sp.next_id()
    person = subscriber(db, quiet_off, phone="+16135550142")
    auto = automation(db, quiet_off, buyers, body="Thanks for your order!")
    for topic, payload in (("customers/create", sp.customer(cid)),
                           ("orders/create", sp.order(customer_payload=sp.order_customer(cid)))):
        response = sp.deliver(client, topic, payload, secret=app.config["SHOPIFY_API_SECRET"])
        assert response.status_code == 200
    assert wait_until(db, lambda: [m.status for m in messages(db, auto)] == ["sent"])
    assert sent_to(vonage_config) == [person.phone]


def test_a_click_fires_through_its_recheck(db, quiet_off, vonage_config, settled_jobs):
    from kinnekt.web.redirects import record_click
    clickers = Segment(shop_id=quiet_off.id, name="Clickers", kind="manual", definition={
        "match": "all", "rules": [{"field": "clicks_count", "op": "gte", "value": 1}]})
    db.add(clickers)
    db.commit()
    membership.build(db, clickers.id, now=utcnow())
    person = subscriber(db, quiet_off)
    auto = automation(db, quiet_off, clickers, body="You looked!")
    link = Link(shop_id=quiet_off.id, code="abcd1234", url="https://alpha.example/", subscriber_id=person.id)
    db.add(link)
    db.commit()
    record_click(quiet_off.id, link.id, None, person.id, "Mozilla/5.0")
    assert wait_until(db, lambda: [m.status for m in messages(db, auto)] == ["sent"])
    assert sent_to(vonage_config) == [person.phone]


def test_smart_sending_skips_at_send_time(db, quiet_off, us, vonage_config, settled_jobs):
    quiet_off.smart_sending_hours = 24
    db.commit()
    auto = automation(db, quiet_off, us, body="Welcome!")
    texted, fresh = subscriber(db, quiet_off, country="FR"), subscriber(db, quiet_off, country="FR")
    sent_message(db, quiet_off, texted, utcnow() - dt.timedelta(hours=2))
    for person in (texted, fresh):
        move(db, person, "US", at=utcnow())
    assert wait_until(db, lambda: all(m.status in ("sent", "skipped") for m in messages(db, auto))
                      and len(messages(db, auto)) == 2)
    outcome = {m.subscriber_id: (m.status, m.skip_reason) for m in messages(db, auto)}
    assert outcome == {texted.id: ("skipped", "recently_texted"), fresh.id: ("sent", None)}
    assert sent_to(vonage_config) == [fresh.phone]


def test_an_opt_out_before_a_delayed_send_skips_it(db, quiet_off, us, vonage_config, jobs):
    from kinnekt.subscribers import optin
    auto = automation(db, quiet_off, us, delay=3600)
    leaving, staying = subscriber(db, quiet_off, country="FR"), subscriber(db, quiet_off, country="FR")
    now = utcnow()
    for person in (leaving, staying):
        move(db, person, "US", at=now)
    assert engine.fire(db, quiet_off.id, now=now) == 2
    optin.unsubscribe(db, db.get(Subscriber, leaving.id), reason="STOP", source="sms")
    assert sending.run(db, auto.campaign_id) == {}  # nothing due yet
    # The hour passes.
    db.execute(update(Message).where(Message.campaign_id == auto.campaign_id)
               .values(due_at=now - dt.timedelta(seconds=1)))
    db.commit()
    assert sending.run(db, auto.campaign_id) == {"skipped": 1, "sent": 1}
    outcome = {m.subscriber_id: (m.status, m.skip_reason) for m in messages(db, auto)}
    assert outcome == {leaving.id: ("skipped", "not_subscribed"), staying.id: ("sent", None)}
    assert sent_to(vonage_config) == [staying.phone]


def test_quiet_hours_hold_the_message_then_it_goes(db, shop, vonage_config, jobs):
    from zoneinfo import ZoneInfo
    tokyo = ZoneInfo("Asia/Tokyo")
    now = utcnow()
    local = now.astimezone(tokyo)
    minute = local.hour * 60 + local.minute
    # A quiet window around the current minute in Tokyo, ending two hours from now there.
    shop.quiet_hours_enabled, shop.quiet_hours_start, shop.quiet_hours_end = True, (minute - 60) % 1440, \
        (minute + 120) % 1440
    shop.timezone = "America/New_York"
    db.commit()
    jp = segment(db, shop, "JP", ["JP"])
    auto = automation(db, shop, jp)
    person = subscriber(db, shop, country="FR", timezone="Asia/Tokyo")
    move(db, person, "JP", at=now)
    engine.fire(db, shop.id, now=now)
    [row] = messages(db, auto)
    window_end = (local.replace(second=0, microsecond=0) + dt.timedelta(minutes=120)).astimezone(UTC)
    assert row.due_at == window_end  # deferred to the end of the window in the recipient's zone
    assert sending.run(db, auto.campaign_id) == {}  # not due
    # Due while still quiet (an early wake-up): the sender defers it again rather than sending.
    db.execute(update(Message).where(Message.id == row.id).values(due_at=now - dt.timedelta(seconds=1)))
    db.commit()
    assert sending.run(db, auto.campaign_id) == {"deferred": 1}
    assert messages(db, auto)[0].due_at == window_end and vonage_config.sent() == []
    # The window is over: it goes.
    shop.quiet_hours_enabled = False
    db.execute(update(Message).where(Message.id == row.id).values(due_at=now - dt.timedelta(seconds=1)))
    db.commit()
    assert sending.run(db, auto.campaign_id) == {"sent": 1}
    assert sent_to(vonage_config) == [person.phone]
