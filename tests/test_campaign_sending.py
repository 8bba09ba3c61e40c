"""Sending campaigns in-process: exactly once, re-checked before each message, retried, resumed after a lost worker.

End-to-end tests run the jobs on the app's in-process queue against the fake Vonage (real SDK, real HTTPS);
the interleaving tests (STOP or End arriving mid-send) use a scripted gateway that acts between two sends.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.orm import sessionmaker

from kinnekt import defaults
from kinnekt.campaigns import answers, composer, lifecycle, links, recovery, sending, stats
from kinnekt.db import DriverStatement, engine, utcnow
from kinnekt.models import Campaign, Link, Message, Subscriber
from kinnekt.queue import get_queue
from kinnekt.sms.gateway import SendResult
from kinnekt.subscribers import optin
from tests.fake_vonage import BARRED, INVALID, THROTTLED
from tests.test_campaign_audience import segment, subscriber

FOOTER = "Reply STOP to unsubscribe"


def people(db, shop, n, **fields) -> list[Subscriber]:
    """`n` subscribed US numbers named Ann 1..n."""
    return [subscriber(db, shop, first_name=f"Ann {i + 1}", **fields) for i in range(n)]


def send_now(db, shop, segments, body="Hi {first_name}, 20% off today", **fields) -> Campaign:
    """Save and schedule a Send now campaign (its start is queued)."""
    values = {"name": "Now", "body": body, "include_segment_ids": [s.id for s in segments], "send_now": True,
              "send_at": None, "discount_mode": "none", **fields}
    row = lifecycle.save(db, shop, values)
    return lifecycle.schedule(db, row)


def wait_for(db, campaign_row, statuses=("completed",), timeout=20.0) -> Campaign:
    """Let the in-process queue work until the campaign reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        assert get_queue().drain(timeout)
        db.expire_all()
        row = db.get(Campaign, campaign_row.id)
        if row.status in statuses or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


def rows(db, campaign_row) -> list[Message]:
    """The campaign's messages, by id."""
    db.expire_all()
    return list(db.scalars(select(Message).where(Message.campaign_id == campaign_row.id).order_by(Message.id)))


class ScriptedGateway:
    """A gateway that accepts every message and runs `hook(n, to)` before answering the n-th (1-based)."""

    name = "scripted"
    rate_limited = False

    def __init__(self, hook=None):
        self.sent: list[tuple[str, str]] = []
        self.hook = hook

    def send(self, to, text, client_ref):
        self.sent.append((to, text))
        if self.hook:
            self.hook(len(self.sent), to)
        return SendResult(provider_id=f"SCRIPT{len(self.sent)}", status="sent")


@pytest.fixture
def scripted(monkeypatch, settled_jobs):
    """Install a ScriptedGateway for campaign sends; set `.hook` in the test."""
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    return gateway


def other_session():
    """A session of its own (another request or webhook acting while the sender works)."""
    return sessionmaker(bind=engine(), expire_on_commit=False)()


# ---------------------------------------------------------------------------------------------- end to end

def test_send_now_texts_each_sendable_subscriber_exactly_once(db, shop_us, vonage_config, settled_jobs):
    team = people(db, shop_us, 4)
    us = segment(db, shop_us, "US", ["US"])
    gone = team[3]
    db.execute(update(Subscriber).where(Subscriber.id == gone.id).values(status="unsubscribed"))
    db.commit()
    row = wait_for(db, send_now(db, shop_us, [us]))
    assert row.status == "completed" and row.finished_at is not None
    sent = vonage_config.sent()
    assert sorted(form["to"] for form in sent) == sorted(p.phone.lstrip("+") for p in team[:3])
    by_phone = {form["to"]: form for form in sent}
    first = by_phone[team[0].phone.lstrip("+")]
    assert first["text"] == f"Hi Ann 1, 20% off today\n{FOOTER}"  # a first message carries the footer
    outcome = {m.subscriber_id: (m.status, m.skip_reason) for m in rows(db, row)}
    # `gone` is still a materialised member, but the audience is the segment's rules at the start: not them.
    assert outcome == {team[0].id: ("sent", None), team[1].id: ("sent", None), team[2].id: ("sent", None)}
    assert all(m.provider_id.count("-") == 4 and m.attempts == 1 and m.sent_at for m in rows(db, row)[:3])
    assert [db.get(Subscriber, p.id).sent_count for p in team] == [1, 1, 1, 0]
    figures = stats.progress(db, row)
    assert (figures.total, figures.sent, figures.skipped, figures.refused, figures.remaining, figures.done) == \
        (3, 3, 0, 0, 0, True)
    # A second campaign: the same people, no footer any more.
    again = wait_for(db, send_now(db, shop_us, [us], body="Back again"))
    assert again.status == "completed"
    assert {form["text"] for form in vonage_config.sent()[3:]} == {"Back again"}


def test_links_become_one_tracked_link_per_recipient(db, shop_us, scripted):
    team = people(db, shop_us, 2)
    us = segment(db, shop_us, "US", ["US"])
    row = wait_for(db, send_now(db, shop_us, [us], body="Sale: https://alpha.example/sale now"))
    assert row.status == "completed"
    made = list(db.scalars(select(Link).where(Link.campaign_id == row.id)))
    assert len(made) == 2 and {link.subscriber_id for link in made} == {p.id for p in team}
    for to, body in scripted.sent:
        code = next(link.code for link in made if db.get(Subscriber, link.subscriber_id).phone == to)
        assert f"/r/{code}" in body and "alpha.example" not in body
    assert all(m.body and "/r/" in m.body for m in rows(db, row))


def test_stop_arriving_mid_campaign_skips_that_recipient(db, shop_us, scripted):
    team = people(db, shop_us, 4)
    us = segment(db, shop_us, "US", ["US"])
    stopped = {}

    def stop_one_not_yet_texted(n, to):
        if n == 1:  # while the first text is in flight, someone still waiting texts STOP (the order is the rows')
            stopped["who"] = next(person for person in team if person.phone != to)
            other = other_session()
            optin.unsubscribe(other, other.get(Subscriber, stopped["who"].id), reason="STOP", source="keyword")
            other.close()

    scripted.hook = stop_one_not_yet_texted
    row = wait_for(db, send_now(db, shop_us, [us]))
    assert row.status == "completed"
    assert stopped["who"].phone not in [to for to, _ in scripted.sent]
    assert len(scripted.sent) == 3
    outcome = {m.subscriber_id: (m.status, m.skip_reason) for m in rows(db, row)}
    assert outcome[stopped["who"].id] == ("skipped", "not_subscribed")
    assert sorted(s for s, _ in outcome.values()) == ["sent", "sent", "sent", "skipped"]


def test_end_mid_send_lets_the_message_in_flight_finish_and_stops_the_rest(db, shop_us, scripted):
    people(db, shop_us, 5)
    us = segment(db, shop_us, "US", ["US"])
    holder = {}

    def end_during_the_second(n, to):
        if n == 2:
            other = other_session()
            lifecycle.end(other, other.get(Campaign, holder["id"]))
            other.close()

    scripted.hook = end_during_the_second
    row = send_now(db, shop_us, [us])
    holder["id"] = row.id
    row = wait_for(db, row, statuses=("ended",))
    assert row.status == "ended"
    assert get_queue().drain(10)
    statuses = [m.status for m in rows(db, row)]
    assert statuses.count("sent") == 2 and statuses.count("ended") == 3
    assert len(scripted.sent) == 2
    assert db.get(Campaign, row.id).status == "ended"  # never "completed" afterwards


def test_uninstall_mid_send_stops_the_campaign(db, shop_us, scripted):
    from kinnekt.shopify.handlers import mark_uninstalled
    people(db, shop_us, 4)
    us = segment(db, shop_us, "US", ["US"])

    def uninstall(n, to):
        if n == 1:
            other = other_session()
            mark_uninstalled(other, other.get(type(shop_us), shop_us.id), at=utcnow())
            other.close()

    scripted.hook = uninstall
    row = wait_for(db, send_now(db, shop_us, [us]), statuses=("ended",))
    assert (row.status, row.failure_reason) == ("ended", "App uninstalled")
    assert get_queue().drain(10)
    assert [m.status for m in rows(db, row)].count("ended") == 3 and len(scripted.sent) == 1


def test_throttled_message_is_retried_with_backoff_and_sent_once(db, shop_us, vonage_config, settled_jobs,
                                                                 monkeypatch):
    monkeypatch.setattr(defaults, "CAMPAIGN_RETRY_SECONDS", (0.5,))
    team = people(db, shop_us, 3)
    us = segment(db, shop_us, "US", ["US"])
    vonage_config.then(THROTTLED)
    row = wait_for(db, send_now(db, shop_us, [us]))
    assert row.status == "completed"
    answered = vonage_config.sent()
    assert len(answered) == 4  # one throttled request, then one accepted per recipient
    assert sorted(f["to"] for f in answered[1:]) == sorted(p.phone.lstrip("+") for p in team)
    retried = [m for m in rows(db, row) if m.attempts == 2]
    assert len(retried) == 1 and retried[0].status == "sent" and retried[0].error_code is None
    assert all(m.status == "sent" for m in rows(db, row))


def test_dropped_connection_is_unknown_never_resent_and_a_receipt_settles_it(db, shop_us, vonage_config,
                                                                            settled_jobs):
    from kinnekt.sms import receipts
    people(db, shop_us, 3)
    us = segment(db, shop_us, "US", ["US"])
    vonage_config.then("drop")
    row = wait_for(db, send_now(db, shop_us, [us]))
    assert row.status == "completed"  # an unknown outcome is finished, not remaining
    assert len(vonage_config.sent()) == 3
    unknown = [m for m in rows(db, row) if m.status == "unknown"]
    assert len(unknown) == 1
    figures = stats.progress(db, row)
    assert (figures.sent, figures.unknown, figures.remaining) == (2, 1, 0)
    recovery.recover(db, now=utcnow() + dt.timedelta(hours=1))
    assert get_queue().drain(10)
    assert len(vonage_config.sent()) == 3  # recovery never resends it
    # Vonage echoes the client-ref the request carried: the row's own m<id>.
    [ref] = [sent["client_ref"] for sent in vonage_config.sent() if sent["to"] == unknown[0].to_phone.lstrip("+")]
    assert ref == f"m{unknown[0].id}"
    late = "11111111-2222-4333-8444-555555555555"
    assert receipts.apply(db, {"status": "delivered", "client_ref": ref, "message_uuid": late}) == "delivered"
    db.expire_all()
    assert db.get(Message, unknown[0].id).status == "delivered"
    assert db.get(Subscriber, unknown[0].subscriber_id).sent_count == 1


def test_permanent_failures_are_recorded_and_a_barred_number_suppressed(db, shop_us, vonage_config,
                                                                       settled_jobs):
    team = people(db, shop_us, 3)
    us = segment(db, shop_us, "US", ["US"])
    vonage_config.then(BARRED, INVALID)
    row = wait_for(db, send_now(db, shop_us, [us]))
    assert row.status == "completed"
    failed = {m.subscriber_id: m for m in rows(db, row) if m.status == "failed"}
    assert len(failed) == 2 and len(vonage_config.sent()) == 3
    assert sorted(m.error_code for m in failed.values()) == ["1020", "1050"]
    assert all("Vonage" in m.error_reason for m in failed.values())
    barred = next(m for m in failed.values() if m.error_code == "1050")
    assert db.get(Subscriber, barred.subscriber_id).suppressed_at is not None
    assert (stats.progress(db, row).refused, stats.progress(db, row).sent) == (2, 1)  # refused: never sent
    assert {p.id for p in team} >= set(failed)


def test_quiet_hours_hold_messages_until_the_window_ends(db, shop, vonage_config, settled_jobs):
    now = utcnow()
    minute = now.hour * 60 + now.minute
    shop.quiet_hours_enabled = True
    shop.quiet_hours_start, shop.quiet_hours_end = (minute - 60) % 1440, (minute + 60) % 1440
    db.commit()
    person = subscriber(db, shop, timezone="UTC")
    elsewhere = subscriber(db, shop, timezone="Pacific/Kiritimati")  # UTC+14: outside the window
    us = segment(db, shop, "US", ["US"])
    row = send_now(db, shop, [us])
    assert get_queue().drain(10)
    by_subscriber = {m.subscriber_id: m for m in rows(db, row)}
    held = by_subscriber[person.id]
    assert held.status == "pending" and held.due_at > utcnow() + dt.timedelta(minutes=58)
    assert (held.due_at - now).total_seconds() <= 3600
    assert by_subscriber[elsewhere.id].status == "sent"
    assert [f["to"] for f in vonage_config.sent()] == [elsewhere.phone.lstrip("+")]
    assert db.get(Campaign, row.id).status == "in_progress"
    assert stats.progress(db, row).remaining == 1


# -------------------------------------------------------------------------------------------- claims, leases, recovery

def _started(db, shop, n, jobs_fixture, **fields):
    people(db, shop, n)
    us = segment(db, shop, "US", ["US"])
    row = send_now(db, shop, [us], **fields)
    assert lifecycle.start(db, row.id) == "started"
    return row


def test_quiet_hours_are_checked_again_at_send_time(db, shop_us, jobs, monkeypatch):
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 2, jobs)
    now = utcnow()
    minute = now.hour * 60 + now.minute
    shop_us.quiet_hours_enabled = True
    shop_us.quiet_hours_start, shop_us.quiet_hours_end = (minute - 30) % 1440, (minute + 30) % 1440
    db.execute(update(Subscriber).values(timezone="UTC"))
    db.commit()
    outcomes = sending.run(db, row.id)
    assert outcomes == {"deferred": 2} and gateway.sent == []
    assert all(m.status == "pending" and m.due_at > now + dt.timedelta(minutes=25) for m in rows(db, row))
    assert "wake_campaign" in jobs.names()


def test_an_expired_claim_goes_back_and_the_old_sender_cannot_send_it(db, shop_us, jobs, monkeypatch):
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 3, jobs)
    old = sending.claim(db, row.id, token="a" * 32)
    assert len(old) == 3 and {m.status for m in rows(db, row)} == {"claimed"}
    # The old sender stalls past its lease; recovery hands the rows back and another sender takes them.
    later = utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_CLAIM_LEASE_SECONDS + 1)
    assert recovery.recover(db, now=later)["released"] == 3
    new = sending.claim(db, row.id, token="b" * 32)
    assert new == old
    assert sending.send_batch(db, row.id, old, "a" * 32) == {"not ours": 3}
    assert gateway.sent == []
    assert sending.send_batch(db, row.id, new, "b" * 32) == {"sent": 3}
    assert len(gateway.sent) == 3
    assert sending.complete_or_wake(db, row.id) == "completed"


def test_a_send_left_by_a_dead_worker_becomes_unknown_and_is_not_resent(db, shop_us, jobs, monkeypatch):
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 2, jobs)
    first = rows(db, row)[0]
    # A worker died between committing "sending" and recording the answer.
    db.execute(update(Message).where(Message.id == first.id).values(status="sending", attempts=1))
    db.commit()
    assert recovery.recover(db, now=utcnow() + dt.timedelta(minutes=1))["unknown"] == 0  # not stale yet
    later = utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS + 1)
    counts = recovery.recover(db, now=later)
    assert counts["unknown"] == 1 and counts["dispatched"] == 1  # no heartbeat yet: senders are queued
    assert sending.run(db, row.id) == {"sent": 1}
    assert [m.status for m in rows(db, row)] == ["unknown", "sent"]
    assert len(gateway.sent) == 1
    assert db.get(Campaign, row.id).status == "completed"


def test_recovery_leaves_a_campaign_with_a_fresh_heartbeat_alone(db, shop_us, jobs):
    row = _started(db, shop_us, 2, jobs)
    sending.claim(db, row.id, token="c" * 32, size=1)  # a live sender: heartbeat now
    before = len(jobs.jobs)
    assert recovery.recover(db)["dispatched"] == 0
    assert len(jobs.jobs) == before


def test_a_send_test_goes_to_one_number_outside_the_statistics(db, shop_us, vonage_config,
                                                              settled_jobs):
    message = composer.send_test(db, shop_us, {"body": "Hi {first_name} at {shop_name}", "discount_mode": "none"},
                                "+12125550199")
    assert get_queue().drain(10)
    db.expire_all()
    message = db.get(Message, message.id)
    assert (message.kind, message.campaign_id, message.status) == ("test", None, "sent")
    assert vonage_config.sent()[0]["to"] == "12125550199"
    assert vonage_config.sent()[0]["text"].endswith(FOOTER) and "Hi there" in vonage_config.sent()[0]["text"]
    with pytest.raises(ValueError):
        composer.send_test(db, shop_us, {"body": "x"}, "not a phone")
    assert db.scalar(select(func.count()).select_from(Message)) == 1


def test_a_send_lost_in_a_campaign_ended_meanwhile_still_becomes_unknown(db, shop_us, jobs):
    row = _started(db, shop_us, 2, jobs)
    first, second = rows(db, row)
    db.execute(update(Message).where(Message.id == first.id).values(status="sending", attempts=1))
    db.commit()
    lifecycle.end(db, db.get(Campaign, row.id))
    later = utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS + 1)
    assert recovery.recover(db, now=later) == {"released": 0, "unknown": 1, "dispatched": 0}
    assert [m.status for m in rows(db, row)] == ["unknown", "ended"]


def test_each_recipient_gets_their_own_discount_code_in_the_text(db, shop_us, scripted, monkeypatch):
    from decimal import Decimal

    from kinnekt.shopify import discounts
    monkeypatch.setattr(discounts, "create_unique_codes",
                        lambda shop, codes, **terms: discounts.CreatedDiscount("gid://shopify/DiscountCodeNode/1",
                                                                               list(codes)))
    people(db, shop_us, 3)
    us = segment(db, shop_us, "US", ["US"])
    row = wait_for(db, send_now(db, shop_us, [us], body="Your code: {discount_code}", discount_mode="unique",
                                discount_code="SPRING", discount_kind="percent", discount_value=Decimal(10)))
    assert row.status == "completed"
    by_phone = {m.to_phone: m.discount_code for m in rows(db, row)}
    assert len(set(by_phone.values())) == 3
    for to, body in scripted.sent:
        assert body.startswith(f"Your code: {by_phone[to]}") and by_phone[to].startswith("SPRING-")


# ------------------------------------------------------------------------------------------ answers on the next commit

def _statuses(ids) -> list[str]:
    """The rows' statuses as another connection sees them (committed data only)."""
    other = other_session()
    try:
        by_id = dict(other.execute(select(Message.id, Message.status).where(Message.id.in_(ids))).tuples().all())
        return [by_id[i] for i in ids]
    finally:
        other.close()


def test_an_answer_is_committed_with_the_next_move_to_sending_and_the_last_at_batch_end(db, shop_us, jobs,
                                                                                        monkeypatch):
    seen = []
    gateway = ScriptedGateway(hook=lambda n, to: seen.append(_statuses(ids)))
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 3, jobs)
    ids = [m.id for m in rows(db, row)]
    assert sending.run(db, row.id) == {"sent": 3}
    if db.get_bind().dialect.name == "postgresql":
        # The answers' own thread writes each answer while the sender moves the next message: when a request
        # leaves, the previous answer may still be on its way (at most one), every earlier one is written.
        assert seen[0] == ["sending", "claimed", "claimed"]
        assert seen[1] in (["sent", "sending", "claimed"], ["sending", "sending", "claimed"])
        assert seen[2] in (["sent", "sent", "sending"], ["sent", "sending", "sending"])
    else:
        # While each request is out, only its own row is "sending": the one before it was answered in the same
        # commit that moved this one to "sending".
        assert seen == [["sending", "claimed", "claimed"], ["sent", "sending", "claimed"],
                        ["sent", "sent", "sending"]]
    assert _statuses(ids) == ["sent", "sent", "sent"]  # the last answer was written when the batch ended
    done = rows(db, row)
    assert [m.provider_id for m in done] == ["SCRIPT1", "SCRIPT2", "SCRIPT3"]
    assert all(m.sent_at is not None for m in done)
    assert {db.get(Subscriber, m.subscriber_id).sent_count for m in done} == {1}
    assert all(db.get(Subscriber, m.subscriber_id).last_received_at == m.sent_at for m in done)


def test_a_waiting_answer_is_written_before_a_provider_error_is(db, shop_us, jobs, monkeypatch):
    answers = iter([SendResult("OK1", "sent"), SendResult(None, "failed", error_code="1", error_text="Throttled",
                                                          retryable=True), SendResult("OK3", "sent")])

    class Gateway(ScriptedGateway):
        def send(self, to, text, client_ref):
            self.sent.append((to, text))
            return next(answers)

    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: Gateway())
    row = _started(db, shop_us, 3, jobs)
    assert sending.run(db, row.id) == {"sent": 2, "retry": 1}
    first, second, third = rows(db, row)
    assert (first.status, first.provider_id) == ("sent", "OK1")
    assert (second.status, second.error_code, second.attempts) == ("pending", "1", 1) and second.due_at
    assert (third.status, third.provider_id) == ("sent", "OK3")


def test_a_retried_message_goes_out_again_with_the_short_links_of_its_first_attempt(db, shop_us, jobs, monkeypatch):
    answers = iter([SendResult(None, "failed", error_code="1", error_text="Throttled", retryable=True),
                    SendResult("OK2", "sent"), SendResult("OK1", "sent")])

    class Gateway(ScriptedGateway):
        def send(self, to, text, client_ref):
            self.sent.append((to, text))
            return next(answers)

    gateway = Gateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 2, jobs, body="Sale https://alpha.example/sale and https://alpha.example/faq")
    assert sending.run(db, row.id) == {"retry": 1, "sent": 1}
    first, second = rows(db, row)
    made = db.scalars(select(Link).where(Link.campaign_id == row.id)).all()
    assert len(made) == 4 and {link.message_id for link in made} == {first.id, second.id}  # made for the batch
    db.execute(update(Message).where(Message.id == first.id).values(due_at=None))  # its backoff is over
    db.commit()
    assert sending.run(db, row.id) == {"sent": 1}
    codes = {link.url: link.code for link in made if link.message_id == first.id}
    expected = (f"Sale {links.short_url(codes['https://alpha.example/sale'])} and "
                f"{links.short_url(codes['https://alpha.example/faq'])}\n{FOOTER}")
    assert [text for to, text in gateway.sent if to == first.to_phone] == [expected, expected]
    assert db.scalar(select(func.count()).select_from(Link).where(Link.campaign_id == row.id)) == 4
    assert rows(db, row)[0].status == "sent"


def test_a_batch_broken_off_by_an_error_still_records_the_answer_of_the_request_that_left(db, shop_us, jobs,
                                                                                           monkeypatch):
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 3, jobs)
    real_size, calls = sending.size, []

    def size(text):  # runs for each message before its move to "sending"
        calls.append(text)
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        return real_size(text)

    monkeypatch.setattr(sending, "size", size)
    with pytest.raises(RuntimeError):
        sending.run(db, row.id)
    db.rollback()
    assert [m.status for m in rows(db, row)] == ["sent", "claimed", "claimed"]  # the second was never requested
    assert len(gateway.sent) == 1


@pytest.mark.parametrize("moment", ["after the request left", "before the next message's move"])
def test_a_worker_dying_mid_send_leaves_at_most_one_row_unknown_never_resent(db, shop_us, jobs, monkeypatch, moment):
    """A kill right after the first request left leaves its row "sending". A kill while the second message
    is prepared leaves the first "sending" on SQLite, whose answer waits for the next commit, and "sent" on
    PostgreSQL, whose answers are written at once. Recovery makes a "sending" row unknown; it is never resent."""
    class Killed(BaseException):
        """The process stops here (SIGKILL): nothing after this point runs."""

    def kill_at_first_answer(n, to):
        if moment == "after the request left":
            raise Killed()

    gateway = ScriptedGateway(hook=kill_at_first_answer)
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 3, jobs)
    real_size, calls = sending.size, []

    def size(text):  # runs for the 2nd message after the 1st was answered
        calls.append(text)
        if len(calls) == 2:
            raise Killed()
        return real_size(text)

    monkeypatch.setattr(sending, "size", size)
    monkeypatch.setattr(sending, "_flush_after_error", lambda session, context: None)  # a dead process writes nothing
    with pytest.raises(Killed):
        sending.run(db, row.id)
    db.rollback()
    first_left = "sending" if moment == "after the request left" or db.get_bind().dialect.name == "sqlite" else "sent"
    assert [m.status for m in rows(db, row)] == [first_left, "claimed", "claimed"]  # at most one row "sending"
    monkeypatch.setattr(sending, "size", real_size)
    gateway.hook = None
    later = utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS + 1)
    unknown = int(first_left == "sending")
    assert recovery.recover(db, now=later) == {"released": 2, "unknown": unknown, "dispatched": 1}
    assert sending.run(db, row.id) == {"sent": 2}
    assert [m.status for m in rows(db, row)] == ["unknown" if unknown else "sent", "sent", "sent"]
    assert len(gateway.sent) == 3 and len({to for to, _ in gateway.sent}) == 3  # the first was never sent again
    assert db.get(Campaign, row.id).status == "completed"


def test_a_kill_while_an_answer_is_in_flight_leaves_at_most_two_rows_unknown_never_resent(db, shop_us, jobs,
                                                                                          monkeypatch):
    """On PostgreSQL the answers are written beside the sender, one at a time. A kill right after the second
    request left, while the first answer had not reached the database yet, leaves both rows "sending": recovery
    makes both unknown and neither is sent again. On SQLite the first answer rode on the second move's commit."""
    class Killed(BaseException):
        """The process stops here (SIGKILL): nothing after this point runs."""

    def kill_at_second_answer(n, to):
        if n == 2:
            raise Killed()

    class LostWriter(answers.Writer):
        """Its writes never reach the database before the kill."""

        def put(self, answer):
            self.wait()

        def close(self):
            self._todo.put(None)

    gateway = ScriptedGateway(hook=kill_at_second_answer)
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    monkeypatch.setattr(answers, "Writer", LostWriter)
    monkeypatch.setattr(sending, "_flush_after_error", lambda session, context: None)  # a dead process writes nothing
    row = _started(db, shop_us, 3, jobs)
    with pytest.raises(Killed):
        sending.run(db, row.id)
    db.rollback()
    on_postgresql = db.get_bind().dialect.name == "postgresql"
    first = "sending" if on_postgresql else "sent"
    assert [m.status for m in rows(db, row)] == [first, "sending", "claimed"]
    gateway.hook = None
    monkeypatch.setattr(answers, "Writer", LostWriter.__bases__[0])  # a new process: its writes arrive
    later = utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS + 1)
    assert recovery.recover(db, now=later) == {"released": 1, "unknown": 1 + on_postgresql, "dispatched": 1}
    assert sending.run(db, row.id) == {"sent": 1}
    assert [m.status for m in rows(db, row)] == ["unknown" if on_postgresql else "sent", "unknown", "sent"]
    assert len(gateway.sent) == 3 and len({to for to, _ in gateway.sent}) == 3  # none was sent twice
    assert db.get(Campaign, row.id).status == "completed"


def test_on_postgresql_answers_are_written_beside_the_sender_one_at_a_time(db, shop_us, jobs, monkeypatch):
    """Each accepted answer is handed to the writer thread only once the previous one is written (so at most one
    is in flight), and every answer is written before the batch ends."""
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite writes the answer with the next message's move")
    events = []
    real_rowcount = DriverStatement.rowcount

    def rowcount(self, connection, values):
        if "a_id" not in values:
            events.append(("move", values["m_id"], threading.current_thread().name))
            return real_rowcount(self, connection, values)
        events.append(("answer starts", values["a_id"], threading.current_thread().name))
        time.sleep(0.2)  # a slow answer: the next message's move does not wait for it
        try:
            return real_rowcount(self, connection, values)
        finally:
            events.append(("answer written", values["a_id"], threading.current_thread().name))

    gateway = ScriptedGateway(hook=lambda n, to: events.append(("request", n, threading.current_thread().name)))
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    monkeypatch.setattr(DriverStatement, "rowcount", rowcount)
    row = _started(db, shop_us, 3, jobs)
    assert sending.run(db, row.id) == {"sent": 3}
    first, second, third = [m.id for m in rows(db, row)]
    main = threading.current_thread().name
    assert [e for e in events if not e[0].startswith("answer")] == [
        ("move", first, main), ("request", 1, main), ("move", second, main), ("request", 2, main),
        ("move", third, main), ("request", 3, main)]
    assert {e[2] for e in events if e[0].startswith("answer")} == {"answers"}
    at = {e[:2]: i for i, e in enumerate(events)}
    # the second move went on while the first answer was written
    assert at["move", second] < at["answer written", first]
    assert at["answer written", first] < at["answer starts", second]  # one answer at a time
    assert at["answer written", second] < at["answer starts", third]
    assert [m.status for m in rows(db, row)] == ["sent"] * 3
    assert [m.provider_id for m in rows(db, row)] == ["SCRIPT1", "SCRIPT2", "SCRIPT3"]


def test_on_postgresql_an_answer_that_cannot_be_written_stops_the_batch_and_the_next_answer_is_still_written(
        db, shop_us, jobs, monkeypatch):
    """The writer's error reaches the sender at the next answer, whose request has left: that answer is still
    written, then the batch stops. The failed one stays "sending", later unknown; nothing is sent twice."""
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite writes the answer with the next message's move")
    from sqlalchemy.exc import OperationalError
    real_rowcount = DriverStatement.rowcount
    failing = []

    def rowcount(self, connection, values):
        if values.get("a_id") in failing:
            raise OperationalError(self.sql, values, Exception("the database went away"))
        return real_rowcount(self, connection, values)

    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    monkeypatch.setattr(DriverStatement, "rowcount", rowcount)
    row = _started(db, shop_us, 3, jobs)
    failing.append(rows(db, row)[0].id)
    with pytest.raises(OperationalError):
        sending.run(db, row.id)
    db.rollback()
    assert [m.status for m in rows(db, row)] == ["sending", "sent", "claimed"] and len(gateway.sent) == 2
    failing.clear()
    later = utcnow() + dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS + 1)
    assert recovery.recover(db, now=later) == {"released": 1, "unknown": 1, "dispatched": 1}
    assert sending.run(db, row.id) == {"sent": 1}
    assert [m.status for m in rows(db, row)] == ["unknown", "sent", "sent"]
    assert len(gateway.sent) == 3 and len({to for to, _ in gateway.sent}) == 3


def test_on_postgresql_a_lost_answers_connection_loses_no_answer_silently(db, shop_us, jobs, caplog, monkeypatch):
    """The answers connection dies after the first answer: the second answer's write fails, the third is refused
    on the lost connection (never quietly written on a new one outside autocommit and rolled back), the batch
    stops and says so. Both rows stay "sending" (later unknown, never resent); no subscriber is counted for
    an answer that was not written."""
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite has no second connection for answers")
    from sqlalchemy.exc import DBAPIError

    backends = []
    real_init = answers.Writer.__init__

    def remember_backend(self, connection):
        backends.append(connection.connection.dbapi_connection.info.backend_pid)
        real_init(self, connection)

    monkeypatch.setattr(answers.Writer, "__init__", remember_backend)

    def kill_the_answers_connection(n, to):
        if n == 2:
            # The first answer is on its way in the writer's thread: wait until its connection has run it (a busy
            # machine may not have started it yet), then cut that connection (ours only: the server is shared).
            deadline = time.monotonic() + 30
            killed = []
            while not killed and time.monotonic() < deadline:
                with engine().connect() as admin:
                    killed = admin.execute(text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid = :pid AND query LIKE 'WITH received AS%' AND state = 'idle'"),
                        {"pid": backends[-1]}).scalars().all()
                time.sleep(0 if killed else 0.01)
            assert killed == [True]

    gateway = ScriptedGateway(hook=kill_the_answers_connection)
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 3, jobs)
    with pytest.raises(DBAPIError):
        sending.run(db, row.id)
    db.rollback()
    sent = rows(db, row)
    assert [m.status for m in sent] == ["sent", "sending", "sending"] and len(gateway.sent) == 3
    assert [db.get(Subscriber, m.subscriber_id, populate_existing=True).sent_count for m in sent] == [1, 0, 0]
    assert "could not record an answer" in caplog.text


def test_answers_wait_for_the_next_commit_only_without_a_rate_limit_and_outside_automations(db, shop_us, jobs,
                                                                                          monkeypatch, app):
    class Limited(ScriptedGateway):
        rate_limited = True
        account, sender = "key", "15550100200"
        warmed = 0

        def warm(self):
            self.warmed += 1

    on_sqlite = db.get_bind().dialect.name == "sqlite"  # PostgreSQL writes every answer at once, in one statement
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 1, jobs)
    assert sending._context(db, row.id).piggyback == on_sqlite
    monkeypatch.setitem(app.config, "SMS_RATE_PER_SECOND", 0)
    monkeypatch.setitem(app.config, "SMS_SENDER_RATE_PER_SECOND", 0)
    gateway = Limited()
    context = sending._context(db, row.id)
    assert context.limiter is None and context.piggyback == on_sqlite  # every limit off: no slot to take
    assert gateway.warmed == 0
    monkeypatch.setitem(app.config, "SMS_RATE_PER_SECOND", 30)
    context = sending._context(db, row.id)
    assert context.limiter is not None and not context.piggyback  # answers written at once, as the slot is kept late
    assert gateway.warmed == 1  # connected before the first slot is taken
    gateway = ScriptedGateway()
    db.execute(update(Campaign).where(Campaign.id == row.id).values(kind="automation"))
    db.commit()
    assert not sending._context(db, row.id).piggyback  # its smart-sending check must see the previous one sent


def _rate_limited_gateway(monkeypatch, app) -> ScriptedGateway:
    """Install a scripted gateway that takes rate-limiter slots (1000/s: no real waiting) for campaign sends."""
    class Limited(ScriptedGateway):
        rate_limited = True
        account, sender = "key", "15550100200"

    gateway = Limited()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    monkeypatch.setitem(app.config, "SMS_RATE_PER_SECOND", 1000)
    monkeypatch.setitem(app.config, "SMS_SENDER_RATE_PER_SECOND", 1000)
    return gateway


def test_under_a_rate_limit_a_message_without_links_moves_to_sending_in_autocommit_on_postgresql(
        db, shop_us, jobs, monkeypatch, app):
    """PostgreSQL: with no answer waiting (a rate limit is on) and no links, the move to "sending" is one
    statement in a transaction of its own (no BEGIN and COMMIT round trips); SQLite keeps the session's
    transaction. Either way every answer is written and each subscriber counted once."""
    _rate_limited_gateway(monkeypatch, app)
    row = _started(db, shop_us, 3, jobs)
    moves = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if "SET body=" in statement:
            moves.append(conn.get_execution_options().get("isolation_level"))

    with statements_seen(monkeypatch, note):
        assert sending.run(db, row.id) == {"sent": 3}
    on_postgresql = db.get_bind().dialect.name == "postgresql"
    assert len(moves) == 3 and all((level == "AUTOCOMMIT") == on_postgresql for level in moves)
    sent = rows(db, row)
    assert [m.status for m in sent] == ["sent"] * 3 and all(m.provider_id and m.sent_at for m in sent)
    assert sorted(db.scalars(select(Subscriber.sent_count).where(
        Subscriber.id.in_([m.subscriber_id for m in sent]))).all()) == [1, 1, 1]


@contextlib.contextmanager
def statements_seen(monkeypatch, note):
    """Call `note(conn, cursor, statement, parameters, context, executemany)` for each statement run through
    the engines (the engine's and, on PostgreSQL, the no-disk-wait one) or as a hot-path DriverStatement."""
    from kinnekt.db import no_disk_wait_engine
    real_rowcount = DriverStatement.rowcount

    def driver_rowcount(self, connection, values):  # the hot path's statements bypass the engine's events
        note(connection, None, self.sql, values, None, False)
        return real_rowcount(self, connection, values)

    monkeypatch.setattr(DriverStatement, "rowcount", driver_rowcount)
    engines = [engine()] + ([no_disk_wait_engine(engine())] if engine().dialect.name == "postgresql" else [])
    for one in engines:
        event.listen(one, "before_cursor_execute", note)
    try:
        yield
    finally:
        for one in engines:
            event.remove(one, "before_cursor_execute", note)


def test_on_postgresql_a_message_costs_two_statements_the_move_and_its_answer(db, shop_us, jobs, monkeypatch):
    """Limit off: on PostgreSQL each message is the move to "sending" and the answer (message and subscriber in
    one statement), each in autocommit; only the answer's commit does not wait for the disk, on a pool of its
    own. SQLite keeps one transaction per message."""
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 3, jobs)
    statements = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith(("UPDATE", "WITH")):
            kind = "move" if "SET body=" in statement else "answer" if "sent_count" in statement else "other"
            setting = None
            if conn.dialect.name == "postgresql":
                with conn.connection.dbapi_connection.cursor() as cursor:  # not through the events: no recursion
                    cursor.execute("SHOW synchronous_commit")
                    setting = cursor.fetchone()[0]
            statements.append((kind, conn.get_execution_options().get("isolation_level"), setting))

    with statements_seen(monkeypatch, note):
        assert sending.run(db, row.id) == {"sent": 3}
    moves = [s for s in statements if s[0] == "move"]
    answers = [s for s in statements if s[0] == "answer"]
    if db.get_bind().dialect.name == "postgresql":
        assert moves == [("move", "AUTOCOMMIT", "on")] * 3
        assert answers == [("answer", "AUTOCOMMIT", "off")] * 3
        assert {setting for kind, _, setting in statements if kind != "answer"} == {"on"}
    else:
        assert len(moves) == 3 and all(level != "AUTOCOMMIT" for _, level, _ in moves)
    sent = rows(db, row)
    assert [m.status for m in sent] == ["sent"] * 3
    assert [m.provider_id for m in sent] == ["SCRIPT1", "SCRIPT2", "SCRIPT3"] and all(m.sent_at for m in sent)
    assert [db.get(Subscriber, m.subscriber_id).last_received_at for m in sent] == [m.sent_at for m in sent]
    assert sorted(db.scalars(select(Subscriber.sent_count).where(
        Subscriber.id.in_([m.subscriber_id for m in sent]))).all()) == [1, 1, 1]


def test_a_message_left_out_when_its_batch_was_loaded_is_rendered_when_it_is_allowed_after_all(db, shop_us, jobs,
                                                                                              monkeypatch):
    """Its subscriber was not subscribed when the batch was loaded (no text made), and is when its turn comes
    (the session re-read it after a rollback): it gets its text and links then."""
    gateway = ScriptedGateway()
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 1, jobs, body="Hi {first_name}: https://alpha.example/sale")
    token = "t" * 32
    [message_id] = sending.claim(db, row.id, token=token)
    message, person = db.execute(select(Message, Subscriber).join(Subscriber, Subscriber.id == Message.subscriber_id)
                                 .where(Message.id == message_id)).one()
    context = sending._context(db, row.id)
    context.texts = {}  # as if left out at load
    assert sending._send_one(db, context, message, person, token) == "sent"
    sending._flush_answer(db, context)  # SQLite: the answer waited for the next commit (the batch's end here)
    [link] = db.scalars(select(Link).where(Link.message_id == message_id)).all()
    assert gateway.sent == [(person.phone, f"Hi Ann 1: {links.short_url(link.code)}\n{FOOTER}")]
    assert rows(db, row)[0].status == "sent"


def test_a_slot_whose_grant_came_back_late_is_taken_again_before_the_request(db, shop_us, jobs, monkeypatch, app):
    """Lateness counts from before the limiter's granting attempt: a pause while the grant comes back (a
    descheduled worker, a slow Redis reply) makes the send take a fresh slot, as a slow commit does."""
    from kinnekt.sms import ratelimit

    gateway = _rate_limited_gateway(monkeypatch, app)
    grants: list[int] = []
    for cls in (ratelimit.LocalRateLimiter, ratelimit.RedisRateLimiter):
        def paused(self, max_wait, original=cls.reserve):
            result = original(self, max_wait)
            if result[0]:
                grants.append(len(gateway.sent))  # how many requests had left when this slot was granted
                if len(grants) == 1:
                    time.sleep(4 * defaults.SMS_RATE_REGRANT_AFTER_MS / 1000)  # granted, answer seen late
            return result
        monkeypatch.setattr(cls, "reserve", paused)
    row = _started(db, shop_us, 2, jobs)
    assert sending.run(db, row.id) == {"sent": 2}
    # the first message took a second slot before it left (a slow commit may make the second do so too)
    assert grants[:2] == [0, 0] and all(n >= 1 for n in grants[2:])
    assert len(gateway.sent) == 2


def test_a_receipt_that_overtook_the_answer_keeps_its_status_and_the_answer_adds_the_provider_id(db, shop_us, jobs,
                                                                                                monkeypatch):
    def receipt_first(n, to):
        if n == 1:
            other = other_session()
            other.execute(update(Message).where(Message.to_phone == to, Message.status == "sending")
                          .values(status="delivered"))
            other.commit()
            other.close()

    gateway = ScriptedGateway(hook=receipt_first)
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 2, jobs)
    assert sending.run(db, row.id) == {"sent": 2}
    first, second = rows(db, row)
    assert (first.status, first.provider_id) == ("delivered", "SCRIPT1")
    assert (second.status, second.provider_id) == ("sent", "SCRIPT2")
    assert [db.get(Subscriber, m.subscriber_id).sent_count for m in (first, second)] == [1, 1]


def test_a_failed_receipt_that_overtook_the_answer_leaves_last_received_alone(db, shop_us, jobs, monkeypatch):
    """The contract: `last_received_sms` looks at accepted messages no receipt reported failed; `sent_count` counts
    every accepted one."""
    def failed_first(n, to):
        if n == 1:
            other = other_session()
            other.execute(update(Message).where(Message.to_phone == to, Message.status == "sending")
                          .values(status="failed", error_code="dlr-2"))
            other.commit()
            other.close()

    gateway = ScriptedGateway(hook=failed_first)
    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: gateway)
    row = _started(db, shop_us, 2, jobs)
    assert sending.run(db, row.id) == {"sent": 2}
    db.expire_all()
    first, second = rows(db, row)
    assert (first.status, second.status) == ("failed", "sent")
    failed_to, sent_to = (db.get(Subscriber, m.subscriber_id) for m in (first, second))
    assert (failed_to.sent_count, failed_to.last_received_at) == (1, None)
    assert (sent_to.sent_count, sent_to.last_received_at) == (1, second.sent_at)


def test_senders_first_jobs_hand_over_at_different_times(monkeypatch):
    monkeypatch.setattr(defaults, "CAMPAIGN_JOB_SECONDS", 60)
    monkeypatch.setattr(defaults, "CAMPAIGN_SENDERS", 2)
    assert [sending.job_budget(slot, 0) for slot in (0, 1)] == [60.0, 90.0]
    assert [sending.job_budget(slot, 3) for slot in (0, 1)] == [60.0, 60.0]  # successors keep the offset


@pytest.mark.parametrize("then", ["stop", "end"])
def test_a_stop_or_end_committed_while_a_fresh_slot_is_awaited_stops_the_message(db, shop_us, jobs, monkeypatch,
                                                                                  app, then):
    """The move to "sending" was allowed, its commit was slow, and the sender waits for a fresh slot: a STOP (or
    End) committed during that wait is checked again before the request, and the message does not go out."""
    from kinnekt.sms import ratelimit

    gateway = _rate_limited_gateway(monkeypatch, app)
    row = _started(db, shop_us, 2, jobs)
    first = rows(db, row)[0]
    grants: list[int] = []
    for cls in (ratelimit.LocalRateLimiter, ratelimit.RedisRateLimiter):
        def paused(self, max_wait, original=cls.reserve):
            result = original(self, max_wait)
            if result[0]:
                grants.append(len(gateway.sent))
                if len(grants) == 1:
                    time.sleep(4 * defaults.SMS_RATE_REGRANT_AFTER_MS / 1000)  # the first slot goes stale
                elif len(grants) == 2:  # the fresh slot for the first message: the STOP / End lands now
                    other = other_session()
                    if then == "stop":
                        optin.unsubscribe(other, other.get(Subscriber, first.subscriber_id), reason="STOP",
                                          source="sms")
                    else:
                        lifecycle.end(other, other.get(Campaign, row.id))
                    other.close()
            return result
        monkeypatch.setattr(cls, "reserve", paused)
    outcomes = sending.run(db, row.id)
    assert grants[:2] == [0, 0]  # the first message took a second slot before its request
    done = rows(db, row)
    if then == "stop":
        assert outcomes == {"skipped": 1, "sent": 1}
        assert (done[0].status, done[0].skip_reason, done[0].attempts) == ("skipped", "not_subscribed", 0)
        assert [to for to, _ in gateway.sent] == [done[1].to_phone]
    else:
        assert outcomes == {"stopped": 1}
        assert [m.status for m in done] == ["ended", "ended"] and gateway.sent == []
