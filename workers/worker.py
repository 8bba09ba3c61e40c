"""The RQ worker `python -m workers` runs: lanes in priority order, short jobs in-process, a prompt stop on SIGTERM.

- **Lanes** (kinnekt.queue.LANES): the worker takes the next job from the first of its queues that has one.
  A campaign sender hands over when higher-lane work waits (kinnekt.campaigns.sending); its worker then
  takes higher-lane jobs for at most WORKER_SLICE_SECONDS before the waiting send job (urgent jobs still go
  first), and any worker takes a send job that has waited that long before default jobs, so that under a backlog
  sends and webhooks take turns instead of one starving the other.
- **Short jobs** (the "urgent" and "default" lanes: inbound texts, replies, webhooks, re-checks) run in the
  worker process itself, as RQ's SimpleWorker does: no fork and no new database connection per job, which
  cost more than most of these jobs do. **Long jobs** ("sends", "bulk") run in a forked work horse, which
  the worker watches and can stop.
- **Stopping** (SIGTERM or SIGINT, as orchestrators send before they kill): a short job finishes; a work
  horse is asked to stop (`HORSE_STOP_SIGNAL`; a campaign sender then hands its campaign over to a successor
  job after the message in hand) and is killed if it has not stopped within WORKER_STOP_GRACE_SECONDS. RQ's
  own teardown could wait up to a minute for its pub/sub thread; here it waits a second at most.
- **Heartbeats** every WORKER_MONITOR_SECONDS while a work horse runs, so that a worker that died with its job
  is noticed within seconds (kinnekt.campaigns.tasks.watch_senders); a Redis outage does not make the worker
  abandon a running horse: it keeps watching it and `workers.__main__` reconnects afterwards.
"""
from __future__ import annotations

import logging
import os
import signal
import time

import redis
from rq import Worker
from rq.worker import WorkerStatus

from kinnekt import defaults
from kinnekt.campaigns import tasks as campaign_tasks
from kinnekt.queue import FORKED_LANES, LANES, request_stop

log = logging.getLogger(__name__)

HORSE_STOP_SIGNAL = signal.SIGUSR1
"""Sent by the worker to its work horse on a warm shutdown: the job in hand is asked to stop soon."""


def _horse_stop(signum, frame) -> None:
    """In a work horse: a stop was asked for (by the worker, or a SIGTERM sent to the whole process group)."""
    request_stop()


class KinnektWorker(Worker):
    """RQ's forking worker, with short jobs run in-process, a bounded warm shutdown and Redis-proof watching."""

    def __init__(self, queues, *args, job_queue=None, inline_queue_names=(), sends_queue_name=None, **kwargs):
        kwargs.setdefault("job_monitoring_interval", defaults.WORKER_MONITOR_SECONDS)
        super().__init__(queues, *args, **kwargs)
        self.inline_queue_names = frozenset(inline_queue_names)
        self.job_queue = job_queue
        """The app's kinnekt.queue.RQJobQueue these lanes belong to (its `lane_states`)."""
        self.sends_queue_name = sends_queue_name
        self.stop_signalled = False
        """True once SIGTERM/SIGINT asked this worker to stop (as opposed to quitting on an error)."""
        self._horse_deadline: float | None = None
        self._sends_owed_since: float | None = None
        self._sends_head_checked_at = float("-inf")
        self._sends_head_waited = False
        """When a send job of this worker handed over with sends still waiting: after WORKER_SLICE_SECONDS of
        higher-lane jobs, the waiting send job goes next (after urgent ones)."""

    # -- taking turns --
    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """Take the next job lane by lane; once sends are owed a turn, the sends lane goes before the default one."""
        self._ordered_queues = self._lane_order()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _lane_order(self) -> list:
        order = list(self.queues)
        if not self._sends_turn_due():
            return order
        sends = [q for q in order if q.name == self.sends_queue_name]
        urgent = [q for q in order if q.name.endswith("-urgent")]
        return urgent + sends + [q for q in order if q not in sends and q not in urgent]

    def _sends_turn_due(self) -> bool:
        """True when the sends lane goes before the default one: this worker's send job handed over a slice ago,
        or (whichever worker ran it) the send job at the head of the sends lane has waited a slice. The second
        keeps a campaign going under a webhook backlog on a worker that has sent nothing yet (a new one, or the
        one left when the sender's worker died)."""
        if self.sends_queue_name is None or self.job_queue is None:
            return False
        now = time.monotonic()
        owed = self._sends_owed_since
        if owed is not None and now - owed >= defaults.WORKER_SLICE_SECONDS:
            return True
        if now >= self._sends_head_checked_at + defaults.SEND_YIELD_CHECK_SECONDS:
            self._sends_head_checked_at = now
            self._sends_head_waited = self._sends_head_age() >= defaults.WORKER_SLICE_SECONDS
        return self._sends_head_waited

    def _sends_head_age(self) -> float:
        """Seconds the oldest waiting send job has waited (0 when none waits or Redis cannot say)."""
        try:
            [state] = self.job_queue.lane_states(("sends",))
        except redis.RedisError:
            return 0.0
        return state.oldest_seconds or 0.0

    # -- running jobs --
    def execute_job(self, job, queue):
        """A short job runs here (no fork); a long one in a forked work horse."""
        if queue.name not in self.inline_queue_names:
            from kinnekt.db import before_fork
            before_fork()  # the horse must not inherit the connections the short jobs left in the pool
            if queue.name == self.sends_queue_name:
                self._sends_owed_since = None
            super().execute_job(job, queue)
            if queue.name == self.sends_queue_name and queue.count:
                self._sends_owed_since = time.monotonic()  # more sends wait: they get their turn after a slice
            return None
        from kinnekt.db import Session
        self.prepare_execution(job)
        try:
            self.perform_job(job, queue)
        finally:
            Session.remove()  # the next job starts with a fresh session (its pooled connection is kept)
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job) -> int:
        """As RQ's SimpleWorker for a job without a timeout (-1 must not become 59 seconds)."""
        if job.timeout == -1:
            from rq.defaults import DEFAULT_WORKER_TTL
            return DEFAULT_WORKER_TTL
        return super().get_heartbeat_ttl(job)

    def setup_work_horse_signals(self):
        """In the work horse: SIGINT is the worker's business; SIGTERM or HORSE_STOP_SIGNAL ask the job to stop."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _horse_stop)
        signal.signal(HORSE_STOP_SIGNAL, _horse_stop)

    # -- stopping --
    def request_stop(self, signum, frame):
        """Warm shutdown: remember that it was asked for, then RQ's (which calls handle_warm_shutdown_request)."""
        self.stop_signalled = True
        super().request_stop(signum, frame)

    def handle_warm_shutdown_request(self):
        """Ask the work horse, if any, to stop soon; it is killed after WORKER_STOP_GRACE_SECONDS."""
        log.info("worker %s: stopping", self.name)
        if self.horse_pid:
            self._horse_deadline = time.monotonic() + defaults.WORKER_STOP_GRACE_SECONDS
            try:
                os.kill(self.horse_pid, HORSE_STOP_SIGNAL)
            except ProcessLookupError:
                pass

    def maintain_heartbeats(self, job):
        """Called every WORKER_MONITOR_SECONDS while a horse works: kill a horse past its stop deadline, and keep
        watching (not quitting) while Redis cannot be reached."""
        if self._horse_deadline is not None and time.monotonic() >= self._horse_deadline and self.horse_pid:
            log.warning("worker %s: the work horse did not stop within %s s; killing it", self.name,
                        defaults.WORKER_STOP_GRACE_SECONDS)
            self._horse_deadline = None
            self.kill_horse()
        try:
            super().maintain_heartbeats(job)
        except redis.exceptions.RedisError as error:
            log.warning("worker %s: heartbeat failed (%s); still watching the work horse", self.name, error)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        """A work horse died without finishing its job: let the job's owner clean up (a sender's claims)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        try:
            campaign_tasks.after_lost_sender(job)
        except Exception:  # the watchdog (kinnekt.campaigns.tasks.watch_senders) catches it up later
            log.exception("worker %s: could not hand over the lost job %s", self.name, job.id)

    def subscribe(self):
        """RQ's command channel, with a thread that wakes every second (RQ's waits 60 s, and so did its stop)."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=1, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def unsubscribe(self):
        """Leave the command channel without waiting more than a second or two for its thread."""
        if not self.pubsub_thread:
            return
        try:
            self.pubsub.unsubscribe()
        except redis.exceptions.RedisError:
            pass
        self.pubsub_thread.stop(timeout=2)
        try:
            self.pubsub.close()
        except redis.exceptions.RedisError:
            pass


def make_worker(queue, lanes=LANES, *, name: str | None = None) -> KinnektWorker:
    """A worker for these lanes of the app's RQ queue, short lanes run in-process."""
    queues = queue.rq_queues(lanes)
    inline = [queue.lanes[lane].name for lane in lanes if lane not in FORKED_LANES]
    return KinnektWorker(queues, connection=queue.redis, name=name, job_queue=queue, inline_queue_names=inline,
                         sends_queue_name=queue.lanes["sends"].name if "sends" in lanes else None)


def wait_for_redis(connection, *, stop=lambda: False) -> bool:
    """Wait until Redis answers again, backing off from 0.5 s to WORKER_RECONNECT_MAX_SECONDS; False if `stop()`."""
    delay = 0.5
    while not stop():
        try:
            connection.ping()
            return True
        except redis.exceptions.RedisError as error:
            log.warning("Redis cannot be reached (%s); trying again in %.1f s", error, delay)
            until = time.monotonic() + delay
            while time.monotonic() < until and not stop():
                time.sleep(0.1)
            delay = min(delay * 2, defaults.WORKER_RECONNECT_MAX_SECONDS)
    return False
