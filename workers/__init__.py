"""The processes that run background jobs: `python -m workers` (__main__.py, worker.py) and `rq cron
workers/cron.py` (cron.py). The jobs themselves live beside their domain code (kinnekt/<domain>/tasks.py,
kinnekt/jobs.py); this package imports the domain, never the other way round.

The modules workers.automations, workers.campaigns, workers.jobs, workers.schedule, workers.segments,
workers.settings, workers.shopify, workers.sms, workers.subscribers and workers.webhooks only keep the jobs'
dotted paths of the previous release importable (RQ stores a queued job by its path): each name there is the
job itself. They go in the next release.
"""
from __future__ import annotations

from kinnekt.jobs import job, set_worker_app, worker_app  # noqa: F401  (the old import path of these)
