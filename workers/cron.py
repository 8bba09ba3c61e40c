"""`rq cron workers/cron.py --url $REDIS_URL`: enqueue the periodic jobs on the app's queue, each on its lane."""
from __future__ import annotations

import os

from rq import cron

from kinnekt.queue import lane_for, lane_queue_name
from kinnekt.schedule import periodic_jobs

QUEUE = os.environ.get("QUEUE_NAME") or "kinnekt"

for periodic in periodic_jobs():
    cron.register(periodic.func, queue_name=lane_queue_name(QUEUE, lane_for(periodic.func)),
                  interval=periodic.interval, name=periodic.name)
