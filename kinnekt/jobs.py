"""Background jobs: the `job` decorator (each job names its lane), the worker's app, and start-up recovery.

Every job lives beside the domain code that owns it, in `kinnekt/<domain>/tasks.py` (listed in TASK_MODULES),
with one `enqueue_<job>(…)` helper that builds its job id; domain code queues work through those helpers only.
`workers/` starts the processes that run the jobs (`python -m workers`, `rq cron workers/cron.py`) and imports
the domain, never the other way round.
"""
from __future__ import annotations

import functools
import importlib
import logging
from typing import Callable

from kinnekt import db_statistics
from kinnekt.db import Session, after_fork
from kinnekt.queue import LANES, get_queue, job_path

log = logging.getLogger(__name__)

TASK_MODULES = (
    "kinnekt.jobs",
    "kinnekt.audiences.tasks",
    "kinnekt.automations.tasks",
    "kinnekt.billing.tasks",
    "kinnekt.campaigns.tasks",
    "kinnekt.flows.tasks",
    "kinnekt.segments.tasks",
    "kinnekt.shopify.tasks",
    "kinnekt.sms.tasks",
    "kinnekt.subscribers.tasks",
    "kinnekt.storefront.tasks",
)
"""The modules that define jobs and recoverers; importing them all registers every one (recovery, the schedule)."""

JOBS: dict[str, Callable] = {}
"""Every job defined so far, by the dotted path RQ stores it by (filled by `job`)."""

RECOVERERS: list = []
"""Functions that find unfinished work in the database and queue it again; each returns how many jobs it queued."""

_app = None


def set_worker_app(app) -> None:
    """Use this app for jobs run by this process (the worker entry point sets it)."""
    global _app
    _app = app


def worker_app():
    """The Flask app of this worker process, created once from the environment."""
    global _app
    if _app is None:
        from kinnekt import create_app  # the app factory sits above every module: only when no app was set
        _app = create_app()
    return _app


def job(func: Callable | None = None, *, lane: str = "default") -> Callable:
    """Make `func` an RQ-importable job that runs in an app context and releases its DB session.

    `lane` is the queue its jobs go to (kinnekt.queue.LANES): `@job` for "default", `@job(lane="bulk")` else.
    """
    if lane not in LANES:
        raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
    if func is None:
        return functools.partial(job, lane=lane)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from flask import has_app_context
        after_fork()
        if has_app_context():
            return func(*args, **kwargs)
        with worker_app().app_context():
            try:
                return func(*args, **kwargs)
            finally:
                Session.remove()

    wrapper.lane = lane
    JOBS[job_path(wrapper)] = wrapper
    return wrapper


def import_task_modules() -> None:
    """Import every module of TASK_MODULES, so that each job and recoverer is registered."""
    for name in TASK_MODULES:
        importlib.import_module(name)


def register_recoverer(func):
    """Add a function that finds unfinished work in the database and queues it again (used at start-up)."""
    RECOVERERS.append(func)
    return func


@job
def recover_due_work() -> dict[str, int]:
    """Queue again everything the database says is due or unfinished; safe to run any number of times."""
    import_task_modules()
    counts = {}
    for func in RECOVERERS:
        counts[func.__name__] = func()
    log.info("start-up recovery queued: %s", counts)
    return counts


def enqueue_recover_due_work(queue=None) -> None:
    """Queue start-up recovery (one at a time) on `queue`, by default the current app's."""
    (queue or get_queue()).enqueue(recover_due_work, job_id="recover-due-work")


@job
def refresh_statistics() -> float | None:
    """Gather SQLite's planner statistics again (PostgreSQL: nothing, autovacuum does it); seconds taken."""
    return db_statistics.refresh(Session)


def enqueue_refresh_statistics(queue=None) -> None:
    """Queue a refresh of the planner statistics now (one at a time) on `queue`, by default the current app's."""
    (queue or get_queue()).enqueue(refresh_statistics, job_id="refresh-statistics")
