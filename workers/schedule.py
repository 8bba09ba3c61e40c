"""The periodic jobs, in one list used by `rq cron` (workers/cron.py) and by the in-process queue."""
from __future__ import annotations

from kinnekt import defaults
from kinnekt.queue import Periodic
from workers.jobs import prune_webhook_events, recover_due_work


def periodic_jobs() -> list[Periodic]:
    """Every job that runs on a timer, with its interval in seconds."""
    return [
        Periodic("recover_due_work", recover_due_work, defaults.RECOVERY_INTERVAL_SECONDS),
        Periodic("prune_webhook_events", prune_webhook_events, defaults.PRUNE_INTERVAL_SECONDS),
    ]
