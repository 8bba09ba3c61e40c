"""Gunicorn settings of the web process: `gunicorn -c gunicorn.conf.py app:app` (README, "Production deployment").

Sync workers, as benchmarked (docs/benchmarks.md). The timeouts are the app's: every request it answers in the
request is short, except a 100,000-row static list upload (about 15 s on two busy cores) and the CSV export of a
large segment, which streams. Subscriber CSV imports over defaults.SUBSCRIBER_IMPORT_INLINE_ROWS rows run as jobs.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "sync"

# A worker silent this long is killed (its request answered 502). Gunicorn's 30 s default is too close to the
# slowest answers above on a loaded server; two minutes leaves them room and still frees a hung worker.
timeout = 120

# On SIGTERM, requests in progress get this long to finish: within an orchestrator's usual 30 s grace.
graceful_timeout = 25

# Behind a load balancer or reverse proxy that reuses connections (it must keep them open longer than this).
keepalive = 5
