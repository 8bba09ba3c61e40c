"""Campaigns sent by real RQ worker processes on real Redis, against the fake Vonage over HTTPS.

Two workers share one campaign; a worker killed with SIGKILL in the middle of a send, with the queue's
jobs wiped as a Redis restart would, is replaced by a new one that resumes from the database alone:
every recipient gets exactly one message at the provider.
"""
from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import subprocess
import time
import uuid

import pytest
from redis import Redis
from sqlalchemy import select, update

from kinnekt import defaults, queue as kqueue
from kinnekt.campaigns import lifecycle
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message
from kinnekt.queue import RQJobQueue
from tests.fake_vonage import vonage_env
from tests.test_campaign_audience import segment, subscriber
from tests.worker_env import Workers, wipe, worker_env

HANG = 300
"""Seconds these tests wait for worker processes to start and get through their work before calling them hung: a
guard, not a speed the tests assert (a worker's start-up imports alone took over a minute on a busy two-core
machine, and 280 texts through one worker over two minutes). What each test proves is asserted apart from it."""


def _campaign(db, shop, n) -> tuple[Campaign, list]:
    shop.quiet_hours_enabled = False
    db.commit()
    team = [subscriber(db, shop) for _ in range(n)]
    us = segment(db, shop, "US", ["US"])
    row = lifecycle.save(db, shop, {"name": "Now", "body": "Flash sale today", "include_segment_ids": [us.id],
                                    "send_now": True, "send_at": None, "discount_mode": "none"})
    return row, team


def _wait(db, row, predicate, timeout, workers=None) -> Campaign:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.expire_all()
        current = db.get(Campaign, row.id)
        db.rollback()
        if predicate(current):
            return current
        time.sleep(0.1)
    errors = b"".join(p.stderr.read() if p.poll() is not None else b"" for p in (workers.procs if workers else []))
    pytest.fail(f"campaign still {current.status} after {timeout} s; worker errors: {errors[-2000:]!r}")


def _received(fake) -> collections.Counter:
    return collections.Counter("+" + form["to"] for form in fake.sent())


def test_two_worker_processes_send_each_message_once(db, shop, workers, slow_vonage):
    row, team = _campaign(db, shop, 30)
    workers.start(2)
    lifecycle.schedule(db, row)
    done = _wait(db, row, lambda c: c.status == "completed", HANG, workers)
    assert done.finished_at is not None
    received = _received(slow_vonage)
    assert received == collections.Counter({p.phone: 1 for p in team})
    statuses = collections.Counter(db.scalars(select(Message.status).where(Message.campaign_id == row.id)))
    assert statuses == {"sent": 30}


def test_kill_9_mid_send_and_lost_jobs_then_a_new_worker_sends_each_message_exactly_once(db, shop, workers,
                                                                                       slow_vonage, redis_queue):
    row, team = _campaign(db, shop, 40)
    slow_vonage.hold_at = 9
    workers.start(1)
    lifecycle.schedule(db, row)
    assert slow_vonage.holding.wait(HANG), "the 9th send never arrived"
    workers.kill(workers.procs[0])  # SIGKILL to the worker and its work horse, while a request waits for its answer
    slow_vonage.release.set()
    assert len(slow_vonage.sent()) == 9
    db.expire_all()
    in_flight = db.scalars(select(Message).where(Message.campaign_id == row.id, Message.status == "sending")).all()
    db.rollback()
    assert len(in_flight) == 1  # at most one row per worker is ever "sending"
    assert in_flight[0].to_phone in _received(slow_vonage)  # ... and that request did reach the provider
    # Redis restarts without its data: every job of the queue is gone.
    wipe(redis_queue.redis, redis_queue.queue.name)
    # The clock moves past the lease, the stale-send limit and the stall limit (instead of waiting minutes).
    past = utcnow() - dt.timedelta(hours=1)
    db.execute(update(Message).where(Message.campaign_id == row.id, Message.status.in_(("claimed", "sending")))
               .values(updated_at=past))
    db.execute(update(Campaign).where(Campaign.id == row.id).values(heartbeat_at=past))
    db.commit()
    workers.start(1)  # its start-up recovery finds the campaign from the database alone
    _wait(db, row, lambda c: c.status == "completed", HANG, workers)
    received = _received(slow_vonage)
    assert set(received) == {p.phone for p in team}
    assert max(received.values()) == 1, [phone for phone, n in received.items() if n > 1]
    statuses = collections.Counter(db.scalars(select(Message.status).where(Message.campaign_id == row.id)))
    assert statuses == {"sent": 39, "unknown": 1}
    lost = db.scalar(select(Message).where(Message.campaign_id == row.id, Message.status == "unknown"))
    assert lost.id == in_flight[0].id and lost.error_code == "worker-lost"


def test_throttling_and_a_dropped_connection_with_worker_processes(db, shop, workers, slow_vonage):
    row, team = _campaign(db, shop, 6)
    slow_vonage.then("throttle", "drop")
    workers.start(1)
    lifecycle.schedule(db, row)
    done = _wait(db, row, lambda c: c.status == "completed", HANG, workers)
    assert done.status == "completed"
    received = _received(slow_vonage)
    assert sum(received.values()) == 7  # 6 recipients + the throttled request, nothing more
    messages = {m.to_phone: m for m in db.scalars(select(Message).where(Message.campaign_id == row.id))}
    statuses = collections.Counter(m.status for m in messages.values())
    assert statuses == {"sent": 5, "unknown": 1}
    retried = [m for m in messages.values() if m.attempts == 2]
    assert len(retried) == 1 and retried[0].status == "sent"
    assert received[retried[0].to_phone] == 2  # throttled, then accepted


def test_scheduled_campaign_starts_at_its_time_and_a_switched_off_one_never_does(db, shop, workers, slow_vonage):
    row, team = _campaign(db, shop, 5)
    off = lifecycle.save(db, shop, {"name": "Off", "body": "Not today", "include_segment_ids": [
        cs.segment_id for cs in db.get(Campaign, row.id).audience], "send_now": False, "send_at": None,
        "discount_mode": "none"})
    when = utcnow() + dt.timedelta(seconds=3)
    for campaign_row in (row, off):
        lifecycle.save(db, shop, {"send_now": False, "send_at": when}, campaign_row)
        lifecycle.schedule(db, campaign_row)
    lifecycle.set_enabled(db, off, False)
    workers.start(1)
    done = _wait(db, row, lambda c: c.status == "completed", HANG, workers)
    assert done.started_at >= when
    assert _received(slow_vonage) == collections.Counter({p.phone: 1 for p in team})
    time.sleep(2)  # the switched-off campaign's start job ran too, and did nothing
    db.expire_all()
    assert db.get(Campaign, off.id).status == "scheduled"
    assert db.scalars(select(Message).where(Message.campaign_id == off.id)).all() == []
    assert {form["text"] for form in slow_vonage.sent()} == {"Flash sale today\nReply STOP to unsubscribe"}


# ------------------------------------------------------------------------------------ stopping, dying, Redis going away

def _until(predicate, timeout: float, what: str):
    """Poll `predicate` until it is true (returns its value) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout} s")


def _statuses(db, row) -> collections.Counter:
    db.expire_all()
    found = collections.Counter(db.scalars(select(Message.status).where(Message.campaign_id == row.id)))
    db.rollback()
    return found


def test_sigterm_mid_send_hands_the_campaign_over_and_the_worker_exits(db, shop, workers, slow_vonage):
    """An orchestrator's SIGTERM to the worker alone: its sender stops after the message in hand and queues its
    successor; the worker exits (not after the job's minute-long budget); the next worker finishes the campaign."""
    slow_vonage.delay = 0.05
    row, team = _campaign(db, shop, 150)
    workers.start(1)
    lifecycle.schedule(db, row)
    _until(lambda: len(slow_vonage.sent()) >= 20, HANG, "the first 20 texts")
    first = workers.procs[0]
    os.kill(first.pid, signal.SIGTERM)
    first.wait(timeout=60)
    statuses = _statuses(db, row)
    assert set(statuses) <= {"sent", "pending"}, statuses  # nothing claimed, in flight or unknown was left
    assert statuses["pending"] > 0  # it stopped early, handing over (the old worker sent until the job's end)
    assert statuses["sent"] == len(slow_vonage.sent())
    workers.start(1)
    _wait(db, row, lambda c: c.status == "completed", HANG, workers)
    assert _received(slow_vonage) == collections.Counter({p.phone: 1 for p in team})


def test_a_worker_killed_mid_send_is_found_dead_and_its_batch_goes_out_long_before_its_lease(db, shop, workers,
                                                                                            slow_vonage):
    """kill -9 of a sending worker (and its horse), with another worker and `rq cron` running: the watchdog finds
    the dead sender by its missing heartbeats, releases its claimed batch and queues its slot again, so the batch
    goes out long before the 300 s claim lease would have freed it, and every recipient still gets exactly one text."""
    slow_vonage.delay = 0.03
    row, team = _campaign(db, shop, 320)
    workers.start(2)
    workers.start_cron()
    lifecycle.schedule(db, row)
    _until(lambda: len(slow_vonage.sent()) >= 40, HANG, "the first 40 texts")
    victim = workers.procs[0]
    workers.kill(victim)  # SIGKILL to the worker and its work horse
    killed_at = len(slow_vonage.sent())
    in_flight = {m.to_phone for m in db.scalars(select(Message).where(Message.campaign_id == row.id,
                                                                     Message.status == "sending"))}
    claims = db.execute(select(Message.id, Message.claim_token, Message.updated_at).where(
        Message.campaign_id == row.id, Message.status == "claimed")).all()
    db.rollback()
    claimed = {message_id: token for message_id, token, _ in claims}
    # The first of these claims' leases to run out: from then on recovery could release them without the watchdog.
    lease_ends = min((at for _, _, at in claims), default=utcnow()) + dt.timedelta(
        seconds=defaults.CAMPAIGN_CLAIM_LEASE_SECONDS)

    def still_held() -> list[int]:
        db.expire_all()
        held = [i for i, status, token in db.execute(
            select(Message.id, Message.status, Message.claim_token).where(Message.id.in_(claimed)))
            if status == "claimed" and token == claimed[i]]
        db.rollback()
        return held

    # The batches claimed when the worker died are sent (the live sender's) or released and claimed again (the dead
    # one's, by the watchdog) before any of their leases runs out. (Everyone else's text then takes what the
    # machine takes.)
    if claimed:
        _until(lambda: not still_held(), (lease_ends - utcnow()).total_seconds(),
               "the batches claimed when the worker died to be sent or released before their lease ran out")
    everyone = {p.phone for p in team}
    # Texts whose request had left when the worker died reached the provider; at most the one between its move
    # to "sending" and its request did not. Everyone else gets a text, once.
    _until(lambda: set(_received(slow_vonage)) >= everyone - in_flight, HANG, "every other recipient's text")
    received = _received(slow_vonage)
    assert max(received.values()) == 1, [phone for phone, n in received.items() if n > 1]
    assert killed_at < len(team)


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own, on a free port, that the test can stop and start again (as a restart
    without saving: its data is gone)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc = None

        def start(self):
            self.proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(tmp_path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client = Redis.from_url(self.url)
            _until(lambda: _pings(client), 30, "the private Redis to answer")
            client.close()

        def stop(self):
            self.proc.kill()
            self.proc.wait(timeout=30)

    server = Server()
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False


def test_workers_outlive_a_redis_restart_and_finish_the_campaign_exactly_once(app, db, shop, database_url,
                                                                             slow_vonage, vonage_ca, private_redis,
                                                                             monkeypatch):
    """Redis restarts without its data in the middle of a campaign: the workers wait for it, reconnect and go on
    (they used to exit), their start-up recovery finds the campaign again, and no recipient gets two texts."""
    _, ca_path = vonage_ca
    rq_queue = RQJobQueue(private_redis.url, f"test-restart-{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(app.extensions, "kinnekt_queue", rq_queue)
    monkeypatch.setattr(kqueue, "_queue", rq_queue)
    env = worker_env(app, database_url, rq_queue.queue.name, REDIS_URL=private_redis.url,
                     **vonage_env(), VONAGE_SENDER="15550100200",
                     VONAGE_HOST_OVERRIDE=slow_vonage.host, REQUESTS_CA_BUNDLE=ca_path, LOG_LEVEL="WARNING",
                     SMS_RATE_PER_SECOND="40")
    pool = Workers(env)
    try:
        slow_vonage.delay = 0.02
        row, team = _campaign(db, shop, 200)
        pool.start(2)
        lifecycle.schedule(db, row)
        _until(lambda: len(slow_vonage.sent()) >= 30, HANG, "the first 30 texts")
        private_redis.stop()
        time.sleep(2)
        private_redis.start()
        _wait(db, row, lambda c: c.status == "completed", HANG, pool)
        assert all(proc.poll() is None for proc in pool.procs), "a worker exited when Redis went away"
        assert _received(slow_vonage) == collections.Counter({p.phone: 1 for p in team})
        assert _statuses(db, row) == {"sent": 200}
    finally:
        pool.stop_all()


def test_an_inbound_text_is_handled_while_the_only_worker_is_sending_a_campaign(app, db, shop, workers,
                                                                                slow_vonage, redis_queue):
    """Lanes: the sender hands over between messages when an urgent job has waited, so the inbound text is
    handled in seconds, while the campaign is still going (before, it waited for the send job's end)."""
    from kinnekt.models import InboundMessage
    slow_vonage.delay = 0.05
    row, team = _campaign(db, shop, 240)
    workers.start(1)
    lifecycle.schedule(db, row)
    _until(lambda: len(slow_vonage.sent()) >= 10, HANG, "the first 10 texts")
    inbound = InboundMessage(shop_id=shop.id, provider_id=f"in-{uuid.uuid4().hex[:8]}", from_phone="+12125550199",
                             to_number="15550100200", text="What time do you open?")
    db.add(inbound)
    db.commit()
    from kinnekt.subscribers.tasks import process_inbound
    redis_queue.enqueue(process_inbound, inbound.id, job_id=f"sms-inbound-{inbound.id}")

    def handled():
        db.expire_all()
        done = db.get(InboundMessage, inbound.id).intent not in (None, "handling")
        db.rollback()
        return done

    _until(handled, HANG, "the inbound text to be handled")  # proved in time by the pending rows below
    assert _statuses(db, row)["pending"] > 0  # handled while the campaign still had texts to send
    _wait(db, row, lambda c: c.status == "completed", HANG, workers)
    assert _received(slow_vonage) == collections.Counter({p.phone: 1 for p in team})
