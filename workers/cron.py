"""`rq cron workers/cron.py --url $REDIS_URL`: enqueue the periodic jobs on the app's queue."""
from __future__ import annotations

import os

from rq import cron

from workers.schedule import periodic_jobs

QUEUE = os.environ.get("QUEUE_NAME") or "kinnekt"

for periodic in periodic_jobs():
    cron.register(periodic.func, queue_name=QUEUE, interval=periodic.interval, name=periodic.name)
