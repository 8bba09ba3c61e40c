"""Automations fired by real RQ worker processes on real Redis, sending through the fake Vonage over HTTPS.

A keyword opt-in is followed, with no other help, by the re-check job, the fire job and the backing campaign's
senders; a fire job lost with the queue (a Redis restart) is found again by a new worker's start-up recovery
and the periodic scan. Each entry gets exactly one text.
"""
from __future__ import annotations

import collections
import time

import pytest
from sqlalchemy import select

from kinnekt.campaigns import stats
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message, Segment
from tests.test_automation_engine import automation, move
from tests.test_campaign_audience import segment, subscriber
from tests.worker_env import wipe


def wait_for(db, predicate, timeout, pool=None):
    """Poll the database until `predicate()` holds; fail with the workers' errors otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.expire_all()
        try:
            if predicate():
                return
        finally:
            db.rollback()
        time.sleep(0.1)
    errors = b"".join(p.stderr.read() if p.poll() is not None else b"" for p in (pool.procs if pool else []))
    pytest.fail(f"not reached within {timeout} s; worker errors: {errors[-2000:]!r}")


def statuses(db, auto) -> collections.Counter:
    """The automation's messages by status."""
    return collections.Counter(db.scalars(select(Message.status).where(Message.campaign_id == auto.campaign_id)))


def received(fake) -> collections.Counter:
    """Texts per number at the fake Vonage."""
    return collections.Counter("+" + form["to"] for form in fake.sent())


def test_a_keyword_opt_in_is_welcomed_by_the_worker_once(db, shop, workers, slow_vonage):
    from kinnekt.subscribers import keywords, optin
    shop.quiet_hours_enabled = False
    db.commit()
    workers.start(1)
    keyword = keywords.create_keyword(db, shop, word="JOIN")
    joined = db.scalar(select(Segment).where(Segment.keyword_id == keyword.id))
    wait_for(db, lambda: db.get(Segment, joined.id).build_status == "done", 60, workers)
    auto = automation(db, shop, joined, body="Welcome to Alpha!")
    people = [optin.subscribe(db, shop, f"+1212555{n:04d}", source="keyword", keyword=keyword,
                              consent_text="Texted JOIN", double_opt_in=False) for n in (7101, 7102, 7103)]
    wait_for(db, lambda: statuses(db, auto) == {"sent": 3}, 90, workers)
    assert received(slow_vonage) == collections.Counter({p.phone: 1 for p in people})
    assert {form["text"] for form in slow_vonage.sent()} == {"Welcome to Alpha!\nReply STOP to unsubscribe"}
    figures = stats.for_campaign(db, db.get(Campaign, auto.campaign_id))
    assert (figures.recipients, figures.sent) == (3, 3)


def test_a_lost_fire_job_is_recovered_by_a_new_worker(db, shop, workers, slow_vonage, redis_queue):
    shop.quiet_hours_enabled = False
    db.commit()
    us = segment(db, shop, "US", ["US"], now=utcnow())
    auto = automation(db, shop, us, body="Hello there")
    team = [subscriber(db, shop, country="FR") for _ in range(4)]
    for person in team:
        move(db, person, "US", at=utcnow())  # the re-checks queue fire jobs: no worker runs yet
    assert wipe(redis_queue.redis, redis_queue.queue.name)  # Redis restarts without its data
    workers.start(2)  # start-up recovery queues a fire of every shop with an automation on
    wait_for(db, lambda: statuses(db, auto) == {"sent": 4}, 90, workers)
    assert received(slow_vonage) == collections.Counter({p.phone: 1 for p in team})
    # The periodic scan fires again later: nothing new, nothing sent twice.
    from kinnekt.automations.tasks import fire_all_automations
    from rq.job import Job
    assert fire_all_automations() == 1
    job = Job.fetch(redis_queue._scoped(f"automations-fire-{shop.id}"), connection=redis_queue.redis)
    wait_for(db, lambda: job.get_status(refresh=True) == "finished", 60, workers)
    assert job.return_value() == 0  # nothing new to queue
    assert statuses(db, auto) == {"sent": 4}
    assert received(slow_vonage) == collections.Counter({p.phone: 1 for p in team})


def test_a_fire_job_fires_again_for_entries_logged_while_it_ran(db, monkeypatch):
    """RQ refuses the job id of a running fire, so the job itself reads the log again before it ends."""
    from kinnekt.automations import engine
    from kinnekt.automations.tasks import fire_automations
    calls = []
    unread = iter([True, True, False])
    monkeypatch.setattr(engine, "fire", lambda session, shop_id: calls.append(shop_id) or 1)
    monkeypatch.setattr(engine, "has_unread_entries", lambda session, shop_id: next(unread))
    assert fire_automations(7) == 3
    assert calls == [7, 7, 7]
