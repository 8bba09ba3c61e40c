"""The job queue: in-process (embedded default) and RQ on the real Redis with a real worker process."""
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from redis import Redis
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.config import PROJECT_ROOT
from kinnekt.db import Session, utcnow
from kinnekt.models import WebhookEvent
from kinnekt.queue import InProcessQueue, Periodic, RQJobQueue
from tests.worker_env import worker_env

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")
WORKER_RUN_LIMIT = 300
"""Seconds a `python -m workers` run of these tests may take before it counts as hung: only a guard against a hang
(the start-up imports alone took over 60 s on a busy two-core machine); no test asserts how fast a worker is."""


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
    from kinnekt.shopify.tasks import prune_webhook_events
    assert queue.enqueue(prune_webhook_events, job_id=f"{name}-once") is not None
    assert queue.enqueue(prune_webhook_events, job_id=f"{name}-once") is None
    assert queue.queue.count == 1
    queue.queue.empty()


def test_rq_queue_enqueues_again_over_what_a_finished_job_left(redis_conn):
    """Processes racing on one job id (gunicorn's workers announcing one shop's storefront activity): a finished
    job another process deleted first, after which a late status write left a hash without the job's data, or a
    job that vanished between the duplicate and the look at it, must not fail the request that enqueues."""
    from rq.job import Job
    from kinnekt.shopify.tasks import prune_webhook_events
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    key = Job.key_for(queue._scoped("flows"))
    redis_conn.hset(key, mapping={"status": "finished", "ended_at": "2026-12-07T17:17:55.000000Z"})  # no data
    assert queue.enqueue(prune_webhook_events, job_id="flows") is not None
    assert queue.queue.count == 1 and queue.enqueue(prune_webhook_events, job_id="flows") is None  # now pending
    queue.queue.empty()
    redis_conn.delete(key)
    redis_conn.hset(key, mapping={"ended_at": "2026-12-07T17:17:55.000000Z"})  # not even a status
    assert queue.enqueue(prune_webhook_events, job_id="flows") is not None
    queue.queue.empty()
    redis_conn.delete(key)


def test_rq_queue_enqueues_when_the_duplicate_vanishes_before_it_is_read(redis_conn, monkeypatch):
    from rq.job import Job
    from kinnekt.shopify.tasks import prune_webhook_events
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    key = Job.key_for(queue._scoped("flows"))
    redis_conn.hset(key, mapping={"status": "finished"})
    real_fetch = Job.fetch

    def fetch_after_another_process_deleted_it(job_id, connection=None, **kwargs):
        redis_conn.delete(key)
        return real_fetch(job_id, connection=connection, **kwargs)

    monkeypatch.setattr(Job, "fetch", staticmethod(fetch_after_another_process_deleted_it))
    assert queue.enqueue(prune_webhook_events, job_id="flows") is not None
    assert queue.queue.count == 1
    queue.queue.empty()
    redis_conn.delete(key)


def test_worker_process_recovers_unprocessed_webhooks(app, db, shop, database_url, redis_conn):
    """`python -m workers --burst` queues start-up recovery, which finds a stored, unprocessed event."""
    stale = WebhookEvent(webhook_id="wh-1", shop_id=shop.id, shop_domain=shop.domain, topic="test/unknown_topic",
                         payload="{}", received_at=utcnow() - dt.timedelta(minutes=5))
    # Younger than the grace period at any moment the worker may run: stamped at the test's start, it had aged out
    # of its 60 s by the time a slow start (90 s on a busy machine) got to recovery, and was rightly processed.
    fresh = WebhookEvent(webhook_id="wh-2", shop_id=shop.id, shop_domain=shop.domain, topic="test/unknown_topic",
                         payload="{}", received_at=utcnow() + dt.timedelta(seconds=WORKER_RUN_LIMIT))
    db.add_all([stale, fresh])
    db.commit()
    name = f"test-{uuid.uuid4().hex[:8]}"
    env = worker_env(app, database_url, name)
    result = subprocess.run([sys.executable, "-m", "workers", "--burst"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=WORKER_RUN_LIMIT)
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
                            capture_output=True, text=True, timeout=WORKER_RUN_LIMIT)
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


def test_in_process_start_up_recovery_processes_stored_events(app, db, shop, monkeypatch):
    from kinnekt.schedule import start_background
    db.add(WebhookEvent(webhook_id="wh-3", shop_id=shop.id, shop_domain=shop.domain, topic="test/unknown_topic",
                        payload="{}", received_at=utcnow() - dt.timedelta(minutes=5)))
    db.commit()
    queue = app.extensions["kinnekt_queue"]
    # The periodic jobs are recorded, not started: started on the session's app, their timers went on firing for
    # the rest of the suite (recovery queued a second browsing re-check run inside test_segment_browsing's burst
    # test, on a busy machine where a test lasts long enough for a tick to land in it).
    started = []
    monkeypatch.setitem(app.extensions, "kinnekt_background_started", False)
    monkeypatch.setattr(queue, "start_periodic", lambda periodic: started.append([p.name for p in periodic]))
    start_background(app)
    start_background(app)  # a second call (another first request) starts nothing twice
    assert queue.drain(10)
    db.expire_all()
    event = db.scalar(select(WebhookEvent).where(WebhookEvent.webhook_id == "wh-3"))
    assert event.processed_at is not None and event.attempts == 1
    assert len(started) == 1 and {"prune_webhook_events", "recover_due_work"} <= set(started[0])


def test_rq_cron_config_registers_the_periodic_jobs(redis_conn):
    from rq.cron import CronScheduler
    scheduler = CronScheduler(connection=redis_conn)
    scheduler.load_config_from_file(str(PROJECT_ROOT / "workers" / "cron.py"))
    jobs = {job.name: job for job in scheduler.get_jobs()}
    from kinnekt.schedule import periodic_jobs
    assert set(jobs) == {p.name for p in periodic_jobs()}
    assert {"recover_due_work", "prune_webhook_events"} <= set(jobs)
    assert jobs["recover_due_work"].interval == 60
    assert jobs["recover_due_work"].queue_name == "kinnekt"


def test_prune_deletes_only_old_processed_events(app, db, shop):
    from kinnekt.shopify.tasks import prune_webhook_events
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


# ------------------------------------------------------------------------------------------------------- lanes

def test_every_job_names_a_known_lane_and_unnamed_jobs_go_to_default():
    from kinnekt.jobs import JOBS, import_task_modules
    from kinnekt.queue import LANES, job_path, lane_for
    import_task_modules()
    assert len(JOBS) > 20
    for path, func in JOBS.items():
        assert job_path(func) == path and lane_for(func) in LANES
    from kinnekt.shopify.tasks import process_webhook_event
    assert lane_for(process_webhook_event) == "default"
    assert lane_for(lambda: None) == "default"
    with pytest.raises(ValueError, match="unknown lane"):
        from kinnekt.jobs import job
        job(lane="fast")


def test_in_process_runs_the_highest_lane_first_among_due_jobs(app):
    queue = InProcessQueue(app)
    seen = []
    gate, busy = threading.Event(), threading.Event()
    queue.enqueue(lambda: (busy.set(), gate.wait(5)))  # busy: the next ones wait, then run by lane
    assert busy.wait(5)
    for lane in ("bulk", "sends", "default", "urgent"):
        def record(lane=lane):
            seen.append(lane)
        record.lane = lane  # as kinnekt.jobs.job(lane=…) marks a job
        queue.enqueue(record)
    states = {state.lane: state for state in queue.lane_states()}
    assert {lane: states[lane].waiting for lane in states} == {"urgent": 1, "default": 1, "sends": 1, "bulk": 1}
    assert states["urgent"].oldest_seconds is not None and states["urgent"].oldest_seconds >= 0
    gate.set()
    assert queue.drain(5)
    assert seen == ["urgent", "default", "sends", "bulk"]
    queue.stop()


def test_rq_jobs_go_to_their_lanes_and_report_their_waiting(redis_conn):
    from kinnekt.campaigns.tasks import send_campaign
    from kinnekt.shopify.tasks import process_webhook_event
    from kinnekt.subscribers.tasks import process_inbound
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    try:
        queue.enqueue(process_inbound, 1, job_id="a")
        queue.enqueue(process_webhook_event, 2, job_id="b")
        queue.enqueue(send_campaign, 3, job_id="c")
        assert {lane: q.count for lane, q in queue.lanes.items()} == {"urgent": 1, "default": 1, "sends": 1,
                                                                       "bulk": 0}
        assert queue.lanes["default"].name == name and queue.lanes["urgent"].name == f"{name}-urgent"
        states = {state.lane: state for state in queue.lane_states()}
        assert states["bulk"].waiting == 0 and states["bulk"].oldest_seconds is None
        assert states["urgent"].waiting == 1 and 0 <= states["urgent"].oldest_seconds < 3600
    finally:
        for q in queue.lanes.values():
            q.empty()


def test_a_worker_takes_jobs_lane_by_lane(app, db, shop, database_url, redis_conn):
    """Real jobs of four lanes queued in the wrong order: `python -m workers --burst` runs them by lane."""
    from rq.job import Job

    from kinnekt.campaigns.tasks import start_campaign
    from kinnekt.segments.tasks import build_segment
    from kinnekt.shopify.tasks import prune_webhook_events
    from kinnekt.subscribers.tasks import process_inbound
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    jobs = [queue.enqueue(build_segment, 10 ** 9, job_id="bulk"),
            queue.enqueue(start_campaign, 10 ** 9, job_id="sends"),
            queue.enqueue(prune_webhook_events, job_id="default"),
            queue.enqueue(process_inbound, 10 ** 9, job_id="urgent")]
    env = worker_env(app, database_url, name)
    result = subprocess.run([sys.executable, "-m", "workers", "--burst", "--no-recover"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=WORKER_RUN_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    done = [Job.fetch(job.id, connection=queue.redis) for job in jobs]
    assert all(job.get_status() == "finished" for job in done), [(j.id, j.get_status(), j.exc_info) for j in done]
    order = [job.id.rsplit("--", 1)[1] for job in sorted(done, key=lambda j: j.ended_at)]
    # A send job that has waited WORKER_SLICE_SECONDS goes before default jobs: on a busy machine the worker
    # can take that long to start. Near that boundary either order is right.
    waited = (min(done[1].started_at, done[2].started_at) - done[1].enqueued_at).total_seconds()
    expected = {("urgent", "default", "sends", "bulk")} if waited < defaults.WORKER_SLICE_SECONDS - 1 else \
        {("urgent", "sends", "default", "bulk")} if waited > defaults.WORKER_SLICE_SECONDS + 1 else \
        {("urgent", "default", "sends", "bulk"), ("urgent", "sends", "default", "bulk")}
    assert tuple(order) in expected, (order, waited)
    assert done[3].return_value() == "missing" and done[0].return_value() is None


def test_a_worker_for_some_lanes_leaves_the_others(app, database_url, redis_conn):
    from kinnekt.segments.tasks import build_segment
    from kinnekt.shopify.tasks import prune_webhook_events
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    bulk = queue.enqueue(build_segment, 10 ** 9, job_id="bulk")
    default = queue.enqueue(prune_webhook_events, job_id="default")
    env = worker_env(app, database_url, name)
    result = subprocess.run([sys.executable, "-m", "workers", "--burst", "--no-recover", "--lanes", "urgent,default"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=WORKER_RUN_LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert default.get_status(refresh=True) == "finished" and bulk.get_status(refresh=True) == "queued"
    bad = subprocess.run([sys.executable, "-m", "workers", "--lanes", "urgent,nope"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=WORKER_RUN_LIMIT)
    assert bad.returncode == 2 and "lanes are a comma-separated list of urgent, default, sends, bulk" in bad.stderr
    queue.lanes["bulk"].empty()


def test_a_sender_yields_only_to_work_that_waited_long_enough(app, monkeypatch):
    from kinnekt import defaults
    from kinnekt.campaigns.sending import higher_lanes_waiting
    from kinnekt.queue import LaneState
    states = []

    class Queue:
        def lane_states(self, lanes):
            assert lanes == ("urgent", "default")
            return states

    monkeypatch.setattr("kinnekt.queue.get_queue", lambda: Queue())
    monkeypatch.setattr(defaults, "SEND_YIELD_AFTER_SECONDS", {"urgent": 1.0, "default": 3.0})
    states[:] = [LaneState("urgent", 0, None), LaneState("default", 40, 2.9)]
    assert not higher_lanes_waiting()
    states[:] = [LaneState("urgent", 1, 1.0), LaneState("default", 0, None)]
    assert higher_lanes_waiting()
    states[:] = [LaneState("urgent", 0, None), LaneState("default", 1, 3.5)]
    assert higher_lanes_waiting()


def test_a_stop_request_makes_a_sender_hand_over_after_the_message_in_hand(app, db, shop, monkeypatch):
    """The work horse's stop flag (set by the worker on SIGTERM): the sender sends the message in hand, releases
    the rest of its batch and queues its successor."""
    from kinnekt import queue as kqueue
    from kinnekt.campaigns import sending
    from kinnekt.models import Message
    from kinnekt.sms.gateway import SendResult
    from tests.helpers import RecordingQueue
    from tests.test_campaign_audience import segment, subscriber
    recorder = RecordingQueue()
    monkeypatch.setitem(app.extensions, "kinnekt_queue", recorder)
    monkeypatch.setattr(kqueue, "_queue", recorder)
    monkeypatch.setattr(kqueue, "_stop", threading.Event())

    class Gateway:
        name, rate_limited = "scripted", False
        sent = []

        def send(self, to, text, client_ref):
            self.sent.append(to)
            kqueue.request_stop()  # the signal arrives while the first request is out
            return SendResult(provider_id=f"P{len(self.sent)}", status="sent")

    monkeypatch.setattr(sending, "get_gateway", lambda shop, session=None: Gateway())
    shop.quiet_hours_enabled = False
    db.commit()
    for _ in range(3):
        subscriber(db, shop)
    from kinnekt.campaigns import lifecycle
    us = segment(db, shop, "US", ["US"])
    row = lifecycle.save(db, shop, {"name": "Now", "body": "Hello", "include_segment_ids": [us.id],
                                    "send_now": True, "send_at": None, "discount_mode": "none"})
    lifecycle.schedule(db, row)
    lifecycle.start(db, row.id)
    assert sending.run(db, row.id, slot=1, seq=4) == {"sent": 1, sending.HANDED_OVER: 1}
    statuses = sorted(db.scalars(select(Message.status).where(Message.campaign_id == row.id)))
    assert statuses == ["pending", "pending", "sent"]
    assert recorder.jobs[-1][0] == "send_campaign" and recorder.jobs[-1][1] == (row.id, 1, 5)


# ------------------------------------------------------------------------------------------------ batched jobs

def _forget(queue: RQJobQueue) -> None:
    """Empty the queue's lanes and delete its batched items."""
    for q in queue.lanes.values():
        q.empty()
    for key in queue.redis.scan_iter(match=f"kinnekt:batch:{queue.name}:*"):
        queue.redis.delete(key)


def test_rq_batched_items_pile_up_for_one_run_and_a_late_item_queues_the_next(redis_conn):
    from kinnekt.segments.tasks import recheck_pending
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    try:
        assert queue.enqueue_batched(recheck_pending, "recheck:7", 7, [3, 1]) is True
        assert queue.enqueue_batched(recheck_pending, "recheck:7", 7, [2, 3]) is False  # the queued run takes them
        assert queue.lanes["default"].count == 1
        assert queue.pending_batches("recheck:") == ["recheck:7"]
        assert sorted(queue.take_batch("recheck:7", size=2) + queue.take_batch("recheck:7")) == [1, 2, 3]
        # While the run is still going, a new item waits for it; once it took nothing, the next item queues a run.
        assert queue.enqueue_batched(recheck_pending, "recheck:7", 7, [4]) is False
        assert queue.take_batch("recheck:7") == [4]
        assert queue.take_batch("recheck:7") == []
        assert queue.pending_batches("recheck:") == []
        assert queue.enqueue_batched(recheck_pending, "recheck:7", 7, [5]) is True
        assert queue.lanes["default"].count == 2
    finally:
        _forget(queue)


def test_rq_batched_items_are_never_left_without_a_run_under_racing_producers(redis_conn):
    """Producers adding while a run takes batches: every item is taken by some run (counted by its queued job)."""
    from kinnekt.segments.tasks import recheck_pending
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue = RQJobQueue(REDIS_URL, name)
    taken: list[int] = []
    runs = [0]
    stop = threading.Event()

    def producer(base):
        for i in range(300):
            if queue.enqueue_batched(recheck_pending, "recheck:9", 9, [base + i]):
                runs[0] += 1

    def consumer():  # a worker: takes a queued run, and the run takes batches until none is left
        while True:
            if queue.redis.lpop(queue.lanes["default"].key) is None:
                if stop.is_set():
                    return
                time.sleep(0.001)
                continue
            while items := queue.take_batch("recheck:9", size=7):
                taken.extend(items)

    try:
        threads = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(3)]
        reader = threading.Thread(target=consumer)
        reader.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        reader.join(30)
        assert sorted(taken) == sorted(k * 1000 + i for k in range(3) for i in range(300))
        assert queue.pending_batches("recheck:") == [] and runs[0] >= 1
    finally:
        _forget(queue)


def test_in_process_batched_items_pile_up_for_one_run(app):
    queue = InProcessQueue(app)
    taken = []
    gate, busy = threading.Event(), threading.Event()
    queue.enqueue(lambda: (busy.set(), gate.wait(5)))
    assert busy.wait(5)

    def run(group_arg):
        while items := queue.take_batch(f"g:{group_arg}"):
            taken.append(items)

    assert queue.enqueue_batched(run, "g:1", 1, [3, 1]) is True
    assert queue.enqueue_batched(run, "g:1", 1, [2]) is False
    assert queue.pending_batches("g:") == ["g:1"]
    gate.set()
    assert queue.drain(5)
    assert taken == [[1, 2, 3]]
    assert queue.enqueue_batched(run, "g:1", 1, [4]) is True and queue.drain(5) and taken[-1] == [4]
    queue.stop()


def test_a_long_run_of_piled_up_rechecks_hands_the_rest_to_a_successor(app, db, shop, monkeypatch):
    """While changes keep coming the pile never empties: a run stops after RECHECK_RUN_SECONDS and queues its
    successor, which takes the rest."""
    from kinnekt import defaults
    from kinnekt import queue as kqueue
    from kinnekt.segments import membership
    from kinnekt.segments.tasks import recheck_pending
    queue = InProcessQueue(app)
    monkeypatch.setitem(app.extensions, "kinnekt_queue", queue)
    monkeypatch.setattr(kqueue, "_queue", queue)
    monkeypatch.setattr(defaults, "RECHECK_RUN_SECONDS", 0)
    taken = []
    monkeypatch.setattr(membership, "recheck", lambda session, shop_id, ids: taken.append(list(ids)) or [])
    gate, busy = threading.Event(), threading.Event()
    queue.enqueue(lambda: (busy.set(), gate.wait(5)))
    assert busy.wait(5)
    runs = []
    real_enqueue = queue.enqueue

    def counted(func, *args, **kwargs):
        if func is recheck_pending:
            runs.append(args)
        return real_enqueue(func, *args, **kwargs)

    monkeypatch.setattr(queue, "enqueue", counted)
    queue.enqueue_batched(recheck_pending, membership.recheck_group(shop.id), shop.id, range(1, 4001))
    gate.set()
    assert queue.drain(10)
    assert [len(batch) for batch in taken] == [2000, 2000]
    assert len(runs) == 3  # the first run and two successors (the last finds the pile empty)
    queue.stop()


def test_recovery_leaves_a_webhook_backlog_alone_and_queues_only_lost_events(app, db, shop, redis_conn, monkeypatch):
    # Under a backlog every queued event is older than the grace period: recovery asked Redis about each (4.6 s
    # in bench.mixed, on the worker that also answers inbound texts); now one round trip a thousand events.
    from kinnekt.shopify import tasks as jobs
    from kinnekt.shopify.tasks import process_webhook_event
    queue = RQJobQueue(REDIS_URL, f"test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(jobs, "get_queue", lambda: queue)
    old = utcnow() - dt.timedelta(minutes=5)
    events = [WebhookEvent(webhook_id=f"backlog-{i}", shop_id=shop.id, shop_domain=shop.domain,
                           topic="test/unknown_topic", payload="{}", received_at=old) for i in range(6)]
    db.add_all(events)
    db.commit()
    for event in events[:4]:  # queued, not yet run: a backlog
        queue.enqueue(process_webhook_event, event.id, job_id=f"webhook-{event.id}")
    try:
        assert queue.unfinished([f"webhook-{e.id}" for e in events]) == {f"webhook-{e.id}" for e in events[:4]}
        assert jobs.requeue_unprocessed_webhooks() == 2
        assert sorted(queue.lanes["default"].get_job_ids()) == sorted(queue._scoped(f"webhook-{e.id}") for e in events)
        assert jobs.requeue_unprocessed_webhooks() == 0
    finally:
        _forget(queue)
