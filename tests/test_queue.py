"""The job queue: in-process (embedded default) and RQ on the real Redis with a real worker process."""
import datetime as dt
import os
import subprocess
import sys
import threading
import uuid

import pytest
from redis import Redis
from sqlalchemy import select

from kinnekt.config import PROJECT_ROOT
from kinnekt.db import Session, utcnow
from kinnekt.models import WebhookEvent
from kinnekt.queue import InProcessQueue, Periodic, RQJobQueue

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


def test_in_process_runs_jobs_in_order_and_survives_a_failing_job(app):
    queue = InProcessQueue(app)
    seen = []

    def boom():
        raise RuntimeError("job failed on purpose")

    queue.enqueue(seen.append, 1)
    queue.enqueue(boom)
    queue.enqueue(seen.append, 2)
    assert queue.drain(5)
    assert seen == [1, 2]
    queue.stop()


def test_in_process_job_id_is_not_queued_twice_and_delays_hold(app):
    queue = InProcessQueue(app)
    seen = []
    gate = threading.Event()
    queue.enqueue(gate.wait, 5)  # keep the thread busy so the next two stay queued
    queue.enqueue(seen.append, "a", job_id="same")
    queue.enqueue(seen.append, "b", job_id="same")
    queue.enqueue_in(dt.timedelta(seconds=30), seen.append, "later")
    gate.set()
    assert queue.drain(5)
    assert seen == ["a"]  # the delayed job is not due, and drain does not wait for it
    queue.stop()


def test_in_process_jobs_run_in_app_context_with_the_database(app, db, shop):
    queue = InProcessQueue(app)
    names = []

    def read_shop_name(shop_id):
        from kinnekt.models import Shop
        names.append(Session.get(Shop, shop_id).name)

    queue.enqueue(read_shop_name, shop.id)
    assert queue.drain(5)
    assert names == ["Alpha"]
    queue.stop()


def test_in_process_periodic_job_repeats(app):
    queue = InProcessQueue(app)
    ticks = []
    queue.start_periodic([Periodic("tick", lambda: ticks.append(1), 0)])
    deadline = dt.datetime.now() + dt.timedelta(seconds=5)
    while len(ticks) < 3 and dt.datetime.now() < deadline:
        threading.Event().wait(0.02)
    queue.stop()
    assert len(ticks) >= 3


@pytest.fixture
def redis_conn():
    conn = Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except Exception as exc:  # the suite promises real Redis; say clearly when it is not there
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield conn
    conn.close()


def test_rq_queue_does_not_duplicate_a_job_id(redis_conn):
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    from workers.jobs import prune_webhook_events
    assert queue.enqueue(prune_webhook_events, job_id=f"{name}-once") is not None
    assert queue.enqueue(prune_webhook_events, job_id=f"{name}-once") is None
    assert queue.queue.count == 1
    queue.queue.empty()


def test_worker_process_recovers_unprocessed_webhooks(app, db, shop, database_url, redis_conn):
    """`python -m workers --burst` queues start-up recovery, which finds a stored, unprocessed event."""
    stale = WebhookEvent(webhook_id="wh-1", shop_id=shop.id, shop_domain=shop.domain, topic="test/unknown_topic",
                         payload="{}", received_at=utcnow() - dt.timedelta(minutes=5))
    fresh = WebhookEvent(webhook_id="wh-2", shop_id=shop.id, shop_domain=shop.domain, topic="test/unknown_topic",
                         payload="{}", received_at=utcnow())
    db.add_all([stale, fresh])
    db.commit()
    name = f"test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "QUEUE_NAME": name,
           "SECRET_KEY": "s" * 32, "TOKEN_ENCRYPTION_KEY": app.config["TOKEN_ENCRYPTION_KEY"],
           "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "x" * 32, "KINNEKT_DEMO": ""}
    result = subprocess.run([sys.executable, "-m", "workers", "--burst"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    db.expire_all()
    events = {e.webhook_id: e for e in db.scalars(select(WebhookEvent))}
    assert events["wh-1"].processed_at is not None
    assert events["wh-1"].error == "no handler for topic test/unknown_topic"
    assert events["wh-2"].processed_at is None  # still within its grace period: left alone


def test_worker_without_redis_explains_itself(database_url):
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"DATABASE_URL": database_url, "KINNEKT_DEMO": "1"})
    result = subprocess.run([sys.executable, "-m", "workers", "--burst"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "REDIS_URL is not set" in result.stderr


def test_rq_queue_requeues_a_finished_job_id(redis_conn):
    from rq import SimpleWorker
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    job = queue.enqueue(len, [1, 2], job_id=f"{name}-len")
    SimpleWorker([queue.queue], connection=queue.redis).work(burst=True)
    assert job.get_status(refresh=True) == "finished"
    assert queue.enqueue(len, [1], job_id=f"{name}-len") is not None
    assert queue.queue.count == 1
    queue.queue.empty()


def test_in_process_start_up_recovery_processes_stored_events(app, db, shop):
    from kinnekt.queue import start_background
    db.add(WebhookEvent(webhook_id="wh-3", shop_id=shop.id, shop_domain=shop.domain, topic="test/unknown_topic",
                        payload="{}", received_at=utcnow() - dt.timedelta(minutes=5)))
    db.commit()
    queue = app.extensions["kinnekt_queue"]
    start_background(app)
    start_background(app)  # a second call (another first request) starts nothing twice
    assert queue.drain(10)
    db.expire_all()
    event = db.scalar(select(WebhookEvent).where(WebhookEvent.webhook_id == "wh-3"))
    assert event.processed_at is not None and event.attempts == 1
    assert {"prune_webhook_events", "recover_due_work"} <= {p.name for p in queue._periodic}


def test_rq_cron_config_registers_the_periodic_jobs(redis_conn):
    from rq.cron import CronScheduler
    scheduler = CronScheduler(connection=redis_conn)
    scheduler.load_config_from_file(str(PROJECT_ROOT / "workers" / "cron.py"))
    jobs = {job.name: job for job in scheduler.get_jobs()}
    from workers.schedule import periodic_jobs
    assert set(jobs) == {p.name for p in periodic_jobs()}
    assert {"recover_due_work", "prune_webhook_events"} <= set(jobs)
    assert jobs["recover_due_work"].interval == 60
    assert jobs["recover_due_work"].queue_name == "kinnekt"


def test_prune_deletes_only_old_processed_events(app, db, shop):
    from workers.jobs import prune_webhook_events
    old = utcnow() - dt.timedelta(days=45)
    db.add_all([
        WebhookEvent(webhook_id="old-done", shop_domain=shop.domain, topic="t", payload="{}", received_at=old,
                     processed_at=old),
        WebhookEvent(webhook_id="old-open", shop_domain=shop.domain, topic="t", payload="{}", received_at=old),
        WebhookEvent(webhook_id="new-done", shop_domain=shop.domain, topic="t", payload="{}", processed_at=utcnow()),
    ])
    db.commit()
    assert prune_webhook_events() == 1
    assert sorted(db.scalars(select(WebhookEvent.webhook_id))) == ["new-done", "old-open"]
