"""Background jobs: RQ on Redis when REDIS_URL is set, else an in-process queue (the embedded default)."""
from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    """A job run every `interval` seconds (by `rq cron` with Redis, by a timer in-process)."""

    name: str
    func: Callable
    interval: int


class RQJobQueue:
    """Jobs go to Redis; `rq worker --with-scheduler` processes them (see workers/)."""

    mode = "rq"

    def __init__(self, redis_url: str, name: str):
        from redis import Redis
        from rq import Queue
        self.redis = Redis.from_url(redis_url)
        self.queue = Queue(name, connection=self.redis)

    def enqueue(self, func: Callable, *args, job_id: str | None = None, **kwargs) -> Any:
        """Queue `func(*args, **kwargs)` now; a job_id already queued or running is not queued twice."""
        from rq.exceptions import DuplicateJobError
        from rq.job import Job, JobStatus
        job_id = self._scoped(job_id)
        for _ in range(2):
            try:
                return self.queue.enqueue_call(func, args=args, kwargs=kwargs, job_id=job_id,
                                               unique=job_id is not None)
            except DuplicateJobError:
                # RQ keeps a finished job's id for its result TTL; only a pending or running one is a duplicate.
                old = Job.fetch(job_id, connection=self.redis)
                if old.get_status(refresh=False) not in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED,
                                                         JobStatus.CANCELED):
                    return None
                old.delete()
        return None

    def enqueue_at(self, when: dt.datetime, func: Callable, *args, job_id: str | None = None, **kwargs) -> Any:
        """Queue `func` to run at an aware instant (needs a worker started with --with-scheduler)."""
        return self.queue.enqueue_at(when, func, *args, job_id=self._scoped(job_id), **kwargs)

    def enqueue_in(self, delay: dt.timedelta, func: Callable, *args, job_id: str | None = None, **kwargs) -> Any:
        """Queue `func` to run after `delay`."""
        return self.enqueue_at(dt.datetime.now(dt.timezone.utc) + delay, func, *args, job_id=job_id, **kwargs)

    def _scoped(self, job_id: str | None) -> str | None:
        """RQ job ids are global to a Redis database; prefix ours with the queue name so queues never collide."""
        return None if job_id is None else f"{self.queue.name}--{job_id}"


class InProcessQueue:
    """A small thread-backed queue with delayed and periodic jobs, so the demo needs nothing but Python.

    Jobs run one at a time in a background thread inside the app context. Nothing survives a restart:
    due work is found again from the database by `workers.jobs.recover_due_work` at start-up.
    """

    mode = "in-process"

    def __init__(self, app=None):
        self.app = app
        self._heap: list[tuple[float, int, Callable, tuple, dict, str | None]] = []
        self._pending_ids: set[str] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._stopping = False
        self._periodic: list[Periodic] = []

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
            self._push(p.interval, self._run_periodic, (p,), {}, f"periodic:{p.name}")

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until no job is due or running (tests and scripts); True when drained in time."""
        import time
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                due = any(item[0] <= now and not (item[5] or "").startswith("periodic:") for item in self._heap)
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
    def _push(self, delay: float, func, args, kwargs, job_id):
        import time
        with self._cond:
            if job_id is not None and job_id in self._pending_ids:
                return None
            if job_id is not None:
                self._pending_ids.add(job_id)
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), func, args, kwargs, job_id))
            self._ensure_thread()
            self._cond.notify_all()
        return job_id

    def _run_periodic(self, p: Periodic) -> None:
        try:
            p.func()
        finally:
            self._push(p.interval, self._run_periodic, (p,), {}, f"periodic:{p.name}")

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="kinnekt-jobs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        import time
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    wait = (self._heap[0][0] - time.monotonic()) if self._heap else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _, _, func, args, kwargs, job_id = heapq.heappop(self._heap)
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


def start_background(app) -> None:
    """In-process mode: start the periodic jobs and queue start-up recovery (RQ workers do this themselves)."""
    queue = app.extensions.get("kinnekt_queue")
    if not isinstance(queue, InProcessQueue) or app.extensions.get("kinnekt_background_started"):
        return
    app.extensions["kinnekt_background_started"] = True
    from workers.jobs import recover_due_work
    from workers.schedule import periodic_jobs
    queue.start_periodic(periodic_jobs())
    queue.enqueue(recover_due_work, job_id="recover-due-work")
