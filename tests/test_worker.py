"""workers/worker.py: the lanes' order when sends are owed a turn, and when a sender hands over; workers/__main__.py:
the wait for Redis."""
from __future__ import annotations

import os
import time
import uuid

import pytest

from kinnekt import defaults
from kinnekt.campaigns import sending
from kinnekt.queue import LaneState, RQJobQueue

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def rq_queue():
    queue = RQJobQueue(REDIS_URL, f"test-worker-{uuid.uuid4().hex[:8]}")
    yield queue
    for q in queue.lanes.values():
        q.empty()


def test_after_a_slice_of_other_work_the_waiting_send_job_goes_before_default_ones(rq_queue):
    from workers.worker import make_worker
    worker = make_worker(rq_queue)
    lanes = {q.name: lane for lane, q in rq_queue.lanes.items()}
    assert [lanes[q.name] for q in worker._lane_order()] == ["urgent", "default", "sends", "bulk"]
    worker._sends_owed_since = time.monotonic()  # a send job just handed over, sends wait
    assert [lanes[q.name] for q in worker._lane_order()] == ["urgent", "default", "sends", "bulk"]
    worker._sends_owed_since = time.monotonic() - defaults.WORKER_SLICE_SECONDS
    assert [lanes[q.name] for q in worker._lane_order()] == ["urgent", "sends", "default", "bulk"]


def test_any_worker_takes_a_send_job_that_waited_a_slice_before_default_ones(rq_queue):
    # bench.mixed: the worker left after a sender's worker died had never sent, so it owed sends nothing and
    # worked through a webhook backlog for minutes while the campaign's jobs waited.
    import datetime as dt
    from workers.worker import make_worker
    worker = make_worker(rq_queue)
    lanes = {q.name: lane for lane, q in rq_queue.lanes.items()}
    from kinnekt.campaigns.tasks import send_campaign
    rq_queue.enqueue(send_campaign, 1, 0, 0)  # it waits in "sends" (nothing runs it here)
    sends = rq_queue.lanes["sends"]
    [job_id] = sends.get_job_ids()
    assert [lanes[q.name] for q in worker._lane_order()] == ["urgent", "default", "sends", "bulk"]  # just queued
    job = sends.fetch_job(job_id)
    job.enqueued_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=defaults.WORKER_SLICE_SECONDS + 1)
    job.save()
    worker._sends_head_checked_at = float("-inf")
    assert [lanes[q.name] for q in worker._lane_order()] == ["urgent", "sends", "default", "bulk"]
    sends.empty()
    worker._sends_head_checked_at = float("-inf")
    assert [lanes[q.name] for q in worker._lane_order()] == ["urgent", "default", "sends", "bulk"]


def test_a_worker_of_the_short_lanes_has_no_sends_to_owe(rq_queue):
    from workers.worker import make_worker
    worker = make_worker(rq_queue, ("urgent", "default"))
    worker._sends_owed_since = time.monotonic() - 60
    assert [q.name for q in worker._lane_order()] == [rq_queue.lanes["urgent"].name, rq_queue.lanes["default"].name]
    assert worker.inline_queue_names == {rq_queue.lanes["urgent"].name, rq_queue.lanes["default"].name}


def test_a_sender_hands_over_to_urgent_work_at_once_and_to_default_work_after_its_minimum(monkeypatch):
    waiting = {"urgent": None, "default": 10.0}

    class Queue:
        def lane_states(self, lanes):
            return [LaneState(lane, 1 if waiting[lane] is not None else 0, waiting[lane]) for lane in lanes]

    monkeypatch.setattr("kinnekt.queue.get_queue", lambda: Queue())
    yielding = sending._Yielding(may_yield=True)
    assert not yielding.due()  # default work waits 10 s, but this job has not sent its minimum yet
    waiting["urgent"] = 5.0
    yielding.next_check = 0
    assert yielding.due()  # urgent work goes first whatever
    waiting["urgent"] = None
    yielding.next_check = 0
    yielding.started -= defaults.SEND_YIELD_MIN_SECONDS
    assert yielding.due()  # now default work has its turn too
    assert not sending._Yielding(may_yield=False).due()  # a sender called directly (not as a job) never yields


def test_a_stop_ends_the_wait_for_redis_and_then_the_signals_act_as_at_start_up_again():
    """workers/__main__.py: SIGTERM while Redis is away ends the wait; afterwards the start-up handler is back, so
    a stop before the next worker installs its own is not swallowed by the wait's (it used to be)."""
    import signal

    import redis

    from workers.__main__ import _wait_for_redis

    class Away:
        def ping(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the stop comes while Redis cannot be reached
            raise redis.exceptions.ConnectionError("Redis went away")

    seen = []

    def at_start_up(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, at_start_up)
    try:
        assert _wait_for_redis(Away(), {signal.SIGTERM: at_start_up}) is False
        assert seen == []  # the wait's own handler took this stop
        assert signal.getsignal(signal.SIGTERM) is at_start_up
    finally:
        signal.signal(signal.SIGTERM, previous)
