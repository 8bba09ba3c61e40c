"""`python -m workers [--burst]`: an RQ worker with its scheduler, for the queue in QUEUE_NAME on REDIS_URL.

At start it queues the start-up recovery job, so due and unfinished work is picked up again.
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys

log = logging.getLogger("workers")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, create the app from the environment, and work the queue."""
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="drain the queue (and due scheduled jobs), then exit")
    parser.add_argument("--no-recover", action="store_true", help="do not queue start-up recovery")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's)")
    args = parser.parse_args(argv)

    from rq import Worker

    from kinnekt import create_app
    from kinnekt.queue import get_queue
    from workers import set_worker_app
    from workers.jobs import recover_due_work

    app = create_app()
    set_worker_app(app)
    queue = get_queue()
    if queue.mode != "rq":
        print("REDIS_URL is not set: there is no queue to work (the app runs jobs in-process).", file=sys.stderr)
        return 2
    if not args.no_recover:
        queue.enqueue(recover_due_work, job_id="recover-due-work")
    worker = Worker([queue.queue], connection=queue.redis, name=args.name)
    # Everything loaded so far (the app, its models, the libraries) lives as long as the worker: leave it out of
    # the garbage collector's full passes, here and in each job's forked work horse. A full pass in a horse
    # then looks at the job's own objects only (it took over 100 ms over the inherited ones, a pause that can
    # fall between a rate-limiter slot and its request), and the horse does not copy the shared pages on
    # writing the collector's marks into them.
    gc.collect()
    gc.freeze()
    with app.app_context():
        worker.work(with_scheduler=True, burst=args.burst, logging_level=app.config["LOG_LEVEL"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
