"""STOPs texted while real RQ worker processes send a campaign at full rate: each is in force when the webhook answers.

Two `python -m workers` processes send a Send now campaign with the rate limit off against the fake Vonage,
its send jobs holding both workers, while recipients the campaign has not reached yet text STOP to
/sms/inbound (the test app, whose jobs go to the same Redis queue: a STOP handled by a job would wait behind
the send jobs). After each 204 the fake receives no campaign text for that number, only its confirmation,
which a worker sends once the campaign's jobs let it.
"""
from __future__ import annotations

import collections
import itertools
import signal
import subprocess
import time

import pytest
from sqlalchemy import insert, select

from kinnekt.campaigns import lifecycle
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message, Subscriber
from tests.fake_vonage import FakeVonage, inbound_body, vonage_env
from tests.test_campaign_audience import segment
from tests.worker_env import Workers, worker_env

SENDER = "15550100200"
RECIPIENTS = 1500
STOPPING = (600, 900, 1200)
"""Ranks of the recipients who text STOP (in the campaign's sending order), as in issue 18's reproduction."""
CONFIRMATION = "Alpha: You are unsubscribed and will get no more messages. Reply START to resubscribe."
_serial = itertools.count(1)


class TimedVonage(FakeVonage):
    """The fake, noting when each send arrived (time.monotonic, the test's clock), its number and text."""

    def __init__(self, ca):
        super().__init__(ca)
        self.arrivals: list[tuple[float, str, str]] = []

    def _answer(self, message, authorization):
        with self._lock:
            self.arrivals.append((time.monotonic(), "+" + message.get("to", ""), message.get("text", "")))
        return super()._answer(message, authorization)


@pytest.fixture
def timed_vonage(vonage_ca):
    ca, _ = vonage_ca
    server = TimedVonage(ca).start()
    yield server
    server.stop()


@pytest.fixture
def senders(app, database_url, redis_queue, timed_vonage, vonage_ca):
    """Worker processes for the test's queue, sending through the timed fake with the rate limit off."""
    _, ca_path = vonage_ca
    env = worker_env(app, database_url, redis_queue.queue.name,
                     **vonage_env(), VONAGE_SENDER=SENDER,
                     VONAGE_HOST_OVERRIDE=timed_vonage.host, REQUESTS_CA_BUNDLE=ca_path, LOG_LEVEL="WARNING",
                     SMS_RATE_PER_SECOND="0", SMS_SENDER_RATE_PER_SECOND="0")
    pool = Workers(env)
    yield pool
    for proc in pool.procs:
        proc.send_signal(signal.SIGTERM)  # RQ's warm shutdown: the job in hand finishes
    for proc in pool.procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # now and then a worker outlasts it (main's worker tests too): cut it off
            pool.kill(proc)


def wait_for(db, predicate, timeout, pool, what):
    """Poll until `predicate()` holds; fail with the workers' errors otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.expire_all()
        try:
            if predicate():
                return
        finally:
            db.rollback()
        time.sleep(0.05)
    errors = b"".join(p.stderr.read() if p.poll() is not None else b"" for p in pool.procs)
    pytest.fail(f"{what}: not within {timeout} s; worker errors: {errors[-2000:]!r}")


def inbound(msisdn: str, text: str) -> dict:
    """An inbound webhook as the Messages API posts it."""
    return inbound_body(text, from_=msisdn, to=SENDER)


def test_a_stop_during_a_full_rate_campaign_is_in_force_when_the_webhook_answers(
        client, db, shop, senders, timed_vonage, record_property):
    shop.quiet_hours_enabled, shop.sender = False, SENDER
    db.commit()
    now = utcnow()
    db.execute(insert(Subscriber), [
        {"shop_id": shop.id, "phone": f"+1212{n:07d}", "status": "subscribed", "source": "manual", "country": "US",
         "sent_count": 0, "clicks_count": 0, "created_at": now, "updated_at": now} for n in range(RECIPIENTS)])
    db.commit()
    us = segment(db, shop, "US", ["US"])
    row = lifecycle.save(db, shop, {"name": "Flash", "body": "Flash sale today", "include_segment_ids": [us.id],
                                    "send_now": True, "send_at": None, "discount_mode": "none"})
    senders.start(2)
    lifecycle.schedule(db, row)
    # The waits are guards against a hang, not speeds (two workers' start-up took minutes on a busy two-core
    # machine, and 1,500 texts through them several more): what the test proves is the order of texts and 204s.
    wait_for(db, lambda: len(timed_vonage.arrivals) >= 20, 300, senders, "the campaign's first sends")

    order = db.execute(select(Message.id, Message.to_phone).where(Message.campaign_id == row.id)
                       .order_by(Message.id)).all()  # the order in which the senders claim them
    db.rollback()
    answered: dict[str, float] = {}
    for rank in STOPPING:
        message_id, phone = order[rank - 1]
        status = db.scalar(select(Message.status).where(Message.id == message_id))
        db.rollback()
        assert status in ("pending", "claimed"), f"rank {rank} was reached before its STOP: the campaign is too short"
        assert client.post("/sms/inbound", json=inbound(phone.lstrip("+"), "STOP")).status_code == 204
        answered[phone] = time.monotonic()

    def finished():
        confirmations = db.scalars(select(Message.status).where(Message.kind == "stop_confirm")).all()
        return db.get(Campaign, row.id).status == "completed" and confirmations == ["sent"] * len(STOPPING)

    wait_for(db, finished, 900, senders, "the campaign and the confirmations")
    texts = collections.defaultdict(list)
    for at, phone, text in list(timed_vonage.arrivals):
        texts[phone].append((at, text))
    figures = {}
    for phone, at_204 in answered.items():
        campaign = [at for at, text in texts[phone] if text != CONFIRMATION]
        confirmed = [at for at, text in texts[phone] if text == CONFIRMATION]
        figures[phone] = {"last_campaign_text_after_204_s": round(max(campaign) - at_204, 3) if campaign else None,
                          "confirmation_after_204_s": round(confirmed[0] - at_204, 3) if confirmed else None}
    record_property("stop_to_last_campaign_text", figures)
    print(figures)
    for phone, at_204 in answered.items():
        assert [at for at, text in texts[phone] if text != CONFIRMATION and at > at_204] == [], phone
        assert [text for _, text in texts[phone]] == [CONFIRMATION], phone  # not reached before the STOP either
        message = db.scalar(select(Message).where(Message.campaign_id == row.id, Message.to_phone == phone))
        assert (message.status, message.skip_reason) == ("skipped", "not_subscribed")
        assert db.scalar(select(Subscriber.status).where(Subscriber.phone == phone)) == "unsubscribed"
    others = {phone for _, phone in order} - set(answered)
    assert {phone: len(got) for phone, got in texts.items() if phone in others} == {phone: 1 for phone in others}
    statuses = collections.Counter(db.scalars(select(Message.status).where(Message.campaign_id == row.id)))
    assert statuses == {"sent": RECIPIENTS - len(STOPPING), "skipped": len(STOPPING)}
