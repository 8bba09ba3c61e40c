"""Background jobs: RQ on Redis when REDIS_URL is set, else an in-process queue (the embedded default).

Work goes to four queues, the lanes, in priority order (`LANES`): a worker always takes the next job of the
first lane that has one, so a backlog of sends or bulk work never holds up an inbound text or a webhook.
Each job names its lane where it is defined (`kinnekt.jobs.job(lane=…)`); `lane_for` reads it.
"""
from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

LANES = ("urgent", "default", "sends", "bulk")
"""The queues in priority order: inbound texts and replies; webhooks, segment re-checks and periodic jobs;
campaign sends; bulk sync, segment builds and other long jobs."""

FORKED_LANES = frozenset({"sends", "bulk"})
"""Lanes whose jobs run long: an RQ worker runs each in a forked work horse it can stop and watch. Jobs of the
other lanes are short and run in the worker process itself (no fork, no new database connection per job)."""


def job_path(func: Callable) -> str:
    """The dotted path RQ stores a job function by (module and qualified name)."""
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', getattr(func, '__name__', ''))}"


def lane_for(func: Callable) -> str:
    """The lane a job function's jobs go to: the one its `job` decorator names, else "default"."""
    return getattr(func, "lane", "default")


def lane_queue_name(base: str, lane: str) -> str:
    """The RQ queue name of a lane: the base name (QUEUE_NAME) for "default", `<base>-<lane>` for the others."""
    return base if lane == "default" else f"{base}-{lane}"


@dataclass(frozen=True)
class LaneState:
    """How much work waits in one lane: jobs waiting to start, and how long the oldest has waited (seconds)."""

    lane: str
    waiting: int
    oldest_seconds: float | None


@dataclass(frozen=True)
class Periodic:
    """A job run every `interval` seconds (by `rq cron` with Redis, by a timer in-process)."""

    name: str
    func: Callable
    interval: int


BATCH_RUN_TTL_SECONDS = 600
"""A batched group's "a run is queued or running" mark outlives a lost run by this long at most (recovery also
queues a run for every group with pending items)."""

_BATCH_ADD = """
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 1 end
return 0
"""

_BATCH_TAKE = """
local items = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
if #items == 0 then
  redis.call('DEL', KEYS[2])
else
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
end
return items
"""
"""Both atomic: an item added while a run takes its last batch is either taken by it, or finds the mark gone and
queues a new run."""


class RQJobQueue:
    """Jobs go to Redis, one RQ queue per lane; `python -m workers` processes them (see workers/)."""

    mode = "rq"

    def __init__(self, redis_url: str, name: str):
        from redis import Redis
        from rq import Queue
        self.redis = Redis.from_url(redis_url)
        self.name = name
        self.lanes = {lane: Queue(lane_queue_name(name, lane), connection=self.redis) for lane in LANES}
        self.queue = self.lanes["default"]
        """The "default" lane's RQ queue (its name is QUEUE_NAME, as before there were lanes)."""
        self._batch_add = self.redis.register_script(_BATCH_ADD)
        self._batch_take = self.redis.register_script(_BATCH_TAKE)

    def rq_queues(self, lanes=LANES) -> list:
        """The RQ queues of these lanes, in priority order."""
        return [self.lanes[lane] for lane in LANES if lane in lanes]

    def enqueue(self, func: Callable, *args, job_id: str | None = None, **kwargs) -> Any:
        """Queue `func(*args, **kwargs)` now on its lane; a job_id already queued or running is not queued twice."""
        from rq.exceptions import DuplicateJobError
        job_id = self._scoped(job_id)
        queue = self.lanes[lane_for(func)]
        for _ in range(3):
            try:
                return queue.enqueue_call(func, args=args, kwargs=kwargs, job_id=job_id, unique=job_id is not None)
            except DuplicateJobError:
                # RQ keeps a finished job's id for its result TTL; only a pending or running one is a duplicate.
                if not self._clear_ended(job_id):
                    return None
        return None

    def _clear_ended(self, job_id: str) -> bool:
        """After a duplicate id: False when that job is pending or running (it covers the request); else remove
        what is left of it (ended, or already gone) and return True, to enqueue again.

        Several processes do this for the same id at once (gunicorn's workers announcing storefront activity for
        one shop): the job can vanish between reading and deleting it, or another process can delete it first and
        a late status write then leaves a hash without the job's data. Only the status field is read (never the
        whole job, which such a leftover cannot be restored from), and a vanished job is simply enqueued again."""
        from rq.job import Job, JobStatus
        key = Job.key_for(job_id)
        status = self.redis.hget(key, "status")
        if status is not None and status.decode() not in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED,
                                                          JobStatus.CANCELED):
            return False
        try:
            Job.fetch(job_id, connection=self.redis).delete()  # and out of its registries
        except Exception:  # noqa: BLE001 - gone already, or a leftover no job can be restored from
            self.redis.delete(key)
        return True

    def enqueue_at(self, when: dt.datetime, func: Callable, *args, job_id: str | None = None, **kwargs) -> Any:
        """Queue `func` on its lane to run at an aware instant (needs a worker started with its scheduler)."""
        return self.lanes[lane_for(func)].enqueue_at(when, func, *args, job_id=self._scoped(job_id), **kwargs)

    def enqueue_in(self, delay: dt.timedelta, func: Callable, *args, job_id: str | None = None, **kwargs) -> Any:
        """Queue `func` to run after `delay`."""
        return self.enqueue_at(dt.datetime.now(dt.timezone.utc) + delay, func, *args, job_id=job_id, **kwargs)

    def enqueue_batched(self, func: Callable, group: str, arg, items, *, delay: float = 0.0) -> bool:
        """Add `items` to the group's pending set and queue `func(arg)` (to run `delay` seconds from now) unless a
        run for the group is queued or running already (that run takes the items); True when a job was queued.
        The job takes the items with `take_batch(group)` until it gets none."""
        key = self._batch_key(group)
        if not self._batch_add(keys=[key, key + ":run"], args=[BATCH_RUN_TTL_SECONDS, *items]):
            return False
        if delay > 0:
            self.enqueue_in(dt.timedelta(seconds=delay), func, arg)
        else:
            self.enqueue(func, arg)
        return True

    def take_batch(self, group: str, size: int = 2000) -> list[int]:
        """Up to `size` of the group's pending items; none means the group's run is over (a new one is queued
        for items added from then on)."""
        key = self._batch_key(group)
        return [int(item) for item in self._batch_take(keys=[key, key + ":run"], args=[size, BATCH_RUN_TTL_SECONDS])]

    def unfinished(self, job_ids) -> set[str]:
        """Those of `job_ids` whose job is queued, scheduled, deferred or running (one round trip a thousand), so
        that a recovery pass over a backlog queues only what is really lost, not thousands of duplicates."""
        job_ids = list(job_ids)
        found: set[str] = set()
        for start in range(0, len(job_ids), 1000):
            chunk = job_ids[start:start + 1000]
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in chunk:
                    pipe.hget(f"rq:job:{self._scoped(job_id)}", "status")
                statuses = pipe.execute()
            found.update(job_id for job_id, status in zip(chunk, statuses)
                         if status in (b"queued", b"scheduled", b"deferred", b"started"))
        return found

    def pending_batches(self, prefix: str) -> list[str]:
        """Groups starting with `prefix` that hold pending items (recovery queues a run for each)."""
        start = len(self._batch_key(""))
        return sorted({key.decode()[start:] for key in self.redis.scan_iter(match=self._batch_key(prefix) + "*")
                       if not key.endswith(b":run")})

    def _batch_key(self, group: str) -> str:
        return f"kinnekt:batch:{self.name}:{group}"

    def lane_states(self, lanes=LANES) -> list[LaneState]:
        """Each lane's waiting jobs and the age of its oldest (two round trips to Redis for all lanes)."""
        from rq.utils import utcparse
        queues = self.rq_queues(lanes)
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue.key)
                pipe.lindex(queue.key, 0)
            found = pipe.execute()
        counts, heads = found[0::2], found[1::2]
        with self.redis.pipeline(transaction=False) as pipe:
            for head in heads:
                pipe.hget(f"rq:job:{head.decode()}", "enqueued_at") if head else pipe.echo("")
            stamps = pipe.execute()
        now = dt.datetime.now(dt.timezone.utc)
        states = []
        for queue, count, stamp in zip(queues, counts, stamps):
            age = None
            if count and stamp:
                try:
                    age = max(0.0, (now - utcparse(stamp.decode())).total_seconds())
                except (ValueError, AttributeError):
                    age = None
            lane = next(lane for lane, q in self.lanes.items() if q is queue)
            states.append(LaneState(lane, int(count or 0), age))
        return states

    def _scoped(self, job_id: str | None) -> str | None:
        """RQ job ids are global to a Redis database; prefix ours with the queue name so queues never collide."""
        return None if job_id is None else f"{self.name}--{job_id}"


class InProcessQueue:
    """A small thread-backed queue with delayed and periodic jobs, so the demo needs nothing but Python.

    Jobs run one at a time in a background thread inside the app context; among the jobs that are due, the
    one of the highest lane goes first (in the order they were queued within a lane). Nothing survives a
    restart: due work is found again from the database by `kinnekt.jobs.recover_due_work` at start-up.
    """

    mode = "in-process"

    def __init__(self, app=None):
        self.app = app
        self._heap: list[tuple[float, int, Callable, tuple, dict, str | None, int]] = []
        self._pending_ids: set[str] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopping = False
        self._periodic: list[Periodic] = []
        self._batches: dict[str, set[int]] = {}

    # -- public API (same shape as RQJobQueue) --
    def enqueue(self, func: Callable, *args, job_id: str | None = None, **kwargs) -> str | None:
        """Run `func(*args, **kwargs)` soon in the background thread."""
        return self._push(0.0, func, args, kwargs, job_id)

    def enqueue_at(self, when: dt.datetime, func: Callable, *args, job_id: str | None = None, **kwargs):
        """Run `func` at an aware instant."""
        delay = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
        return self._push(max(delay, 0.0), func, args, kwargs, job_id)

    def enqueue_in(self, delay: dt.timedelta, func: Callable, *args, job_id: str | None = None, **kwargs):
        """Run `func` after `delay`."""
        return self._push(max(delay.total_seconds(), 0.0), func, args, kwargs, job_id)

    def start_periodic(self, periodic: list[Periodic]) -> None:
        """Schedule each periodic job (first run after one interval)."""
        for p in periodic:
            self._periodic.append(p)
            self._push(p.interval, self._run_periodic, (p,), {}, f"periodic:{p.name}", lane=lane_for(p.func))

    def enqueue_batched(self, func: Callable, group: str, arg, items, *, delay: float = 0.0) -> bool:
        """As RQJobQueue.enqueue_batched, in this process: one queued run per group takes what has piled up."""
        with self._cond:
            self._batches.setdefault(group, set()).update(int(item) for item in items)
        if delay > 0:
            return self.enqueue_in(dt.timedelta(seconds=delay), func, arg, job_id=f"batch:{group}") is not None
        return self.enqueue(func, arg, job_id=f"batch:{group}") is not None

    def take_batch(self, group: str, size: int = 2000) -> list[int]:
        """Up to `size` of the group's pending items (an item added later queues a new run: see _push)."""
        with self._cond:
            pending = self._batches.get(group) or set()
            taken = sorted(pending)[:size]
            pending.difference_update(taken)
            return taken

    def unfinished(self, job_ids) -> set[str]:
        """Those of `job_ids` queued and not yet run."""
        with self._cond:
            return {job_id for job_id in job_ids if job_id in self._pending_ids}

    def pending_batches(self, prefix: str) -> list[str]:
        """Groups starting with `prefix` that hold pending items."""
        with self._cond:
            return sorted(group for group, items in self._batches.items() if group.startswith(prefix) and items)

    def lane_states(self, lanes=LANES) -> list[LaneState]:
        """Each lane's due jobs waiting to start, and how long the oldest has been due (periodic timers aside)."""
        now = time.monotonic()
        with self._cond:
            due = [(item[6], now - item[0]) for item in self._heap
                   if item[0] <= now and not (item[5] or "").startswith("periodic:")]
        states = []
        for rank, lane in enumerate(LANES):
            if lane in lanes:
                ages = [age for r, age in due if r == rank]
                states.append(LaneState(lane, len(ages), max(ages) if ages else None))
        return states

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until no job is due or running (tests and scripts); True when drained in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                # A batched run waiting out its delay counts: what a test or script queued has run when this returns.
                due = any((item[0] <= now or (item[5] or "").startswith("batch:"))
                          and not (item[5] or "").startswith("periodic:") for item in self._heap)
                if not due and not self._busy:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))

    def stop(self) -> None:
        """Stop the background thread after the running job."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # -- internals --
    def _push(self, delay: float, func, args, kwargs, job_id, *, lane: str | None = None):
        with self._cond:
            if job_id is not None and job_id in self._pending_ids:
                return None
            if job_id is not None:
                self._pending_ids.add(job_id)
            rank = LANES.index(lane or lane_for(func))
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), func, args, kwargs, job_id, rank))
            self._ensure_thread()
            self._cond.notify_all()
        return job_id

    def _run_periodic(self, p: Periodic) -> None:
        try:
            p.func()
        finally:
            self._push(p.interval, self._run_periodic, (p,), {}, f"periodic:{p.name}", lane=lane_for(p.func))

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="kinnekt-jobs", daemon=True)
            self._thread.start()

    def _next_due(self, now: float) -> int | None:
        """Index in the heap of the due job to run next: the highest lane first, then the order queued."""
        best = None
        for index, item in enumerate(self._heap):
            if item[0] <= now and (best is None or (item[6], item[1]) < (self._heap[best][6], self._heap[best][1])):
                best = index
        return best

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    wait = (self._heap[0][0] - time.monotonic()) if self._heap else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                index = self._next_due(time.monotonic())
                _, _, func, args, kwargs, job_id, _ = self._heap[index]
                self._heap[index] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                if job_id is not None:
                    self._pending_ids.discard(job_id)
                self._busy = True
            try:
                self._run(func, args, kwargs)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _run(self, func, args, kwargs) -> None:
        from kinnekt.db import Session
        try:
            if self.app is not None:
                with self.app.app_context():
                    func(*args, **kwargs)
            else:
                func(*args, **kwargs)
        except Exception:  # a failing job must not kill the queue thread
            log.exception("job %s failed", getattr(func, "__name__", func))
        finally:
            Session.remove()


_stop = threading.Event()


def request_stop() -> None:
    """Ask the long job running in this process to stop soon (a worker's warm shutdown, workers/worker.py)."""
    _stop.set()


def stop_requested() -> bool:
    """True once this process was asked to stop: a long job hands its work over and returns."""
    return _stop.is_set()


_queue: RQJobQueue | InProcessQueue | None = None


def init_queue(app) -> RQJobQueue | InProcessQueue:
    """Create the app's queue from its config and make it the current one."""
    global _queue
    if app.config.get("REDIS_URL"):
        _queue = RQJobQueue(app.config["REDIS_URL"], app.config["QUEUE_NAME"])
        log.info("Background jobs go to Redis at %s (queue %r); run RQ workers to process them.",
                 _redacted(app.config["REDIS_URL"]), app.config["QUEUE_NAME"])
    else:
        _queue = InProcessQueue(app)
        log.warning("No REDIS_URL set: background jobs run in this process (in-process queue). "
                    "Use Redis and RQ workers in production.")
    app.extensions["kinnekt_queue"] = _queue
    return _queue


def get_queue() -> RQJobQueue | InProcessQueue:
    """The current app's queue (the last one created when there is no app context, as in RQ work horses)."""
    from flask import current_app, has_app_context
    if has_app_context():
        queue = current_app.extensions.get("kinnekt_queue")
        if queue is not None:
            return queue
    if _queue is None:
        raise RuntimeError("queue not initialised; create the app first")
    return _queue


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(parts.password, "***")
        return urlunsplit(parts._replace(netloc=netloc))
    return url

