"""The deployment's health for an operator: the database and Redis answer, and how much work waits in each lane."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from sqlalchemy import text

from kinnekt.queue import LaneState, get_queue


@dataclass
class Health:
    """What `report` found: problems (empty when healthy), the queue's lanes and, with RQ, its workers."""

    problems: list[str] = field(default_factory=list)
    queue_mode: str = ""
    lanes: list[LaneState] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the database and the queue both answered."""
        return not self.problems

    def as_dict(self) -> dict:
        """The report as JSON-ready data."""
        return {"status": "ok" if self.ok else "unavailable", "problems": self.problems, "queue": self.queue_mode,
                "lanes": [asdict(state) for state in self.lanes], "workers": self.workers}


def report(session) -> Health:
    """Ask the database and the queue; a part that does not answer is a problem, never an exception."""
    health = Health()
    try:
        session.execute(text("SELECT 1"))
        session.rollback()
    except Exception as error:  # an operator wants to read this, not a traceback
        session.rollback()
        health.problems.append(f"database: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
    queue = get_queue()
    health.queue_mode = queue.mode
    try:
        health.lanes = queue.lane_states()
        if queue.mode == "rq":
            health.workers = _workers(queue)
    except Exception as error:
        health.problems.append(f"queue: {type(error).__name__}: {str(error)[:200]}")
    return health


def _workers(queue) -> list[dict]:
    """RQ's workers on this Redis that work any of our lanes: name, state, lanes, seconds since their heartbeat."""
    from rq import Worker
    names = {q.name: lane for lane, q in queue.lanes.items()}
    now = dt.datetime.now(dt.timezone.utc)
    found = []
    for worker in Worker.all(connection=queue.redis):
        lanes = [names[n] for n in worker.queue_names() if n in names]
        if not lanes:
            continue
        beat = worker.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=dt.timezone.utc)
        found.append({"name": worker.name, "state": str(worker.get_state()), "lanes": lanes,
                      "seconds_since_heartbeat": round((now - beat).total_seconds(), 1) if beat else None})
    return sorted(found, key=lambda w: w["name"])
