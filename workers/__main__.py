"""`python -m workers [--lanes urgent,default] [--burst]`: an RQ worker with its scheduler, on REDIS_URL.

It works the lanes of the QUEUE_NAME queue in priority order (urgent, default, sends, bulk; all of them
unless --lanes names some). At start it queues the start-up recovery job, so due and unfinished work is
picked up again. If Redis goes away it waits for it (backing off) and goes on; SIGTERM stops it within
seconds (workers/worker.py).
"""
from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys

log = logging.getLogger("workers")


def _lanes(text: str) -> tuple[str, ...]:
    from kinnekt.queue import LANES
    lanes = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [lane for lane in lanes if lane not in LANES]
    if unknown or not lanes:
        raise argparse.ArgumentTypeError(f"lanes are a comma-separated list of {', '.join(LANES)}")
    return lanes


def _wait_for_redis(connection, startup_handlers: dict) -> bool:
    """Wait until Redis answers again (workers.worker.wait_for_redis); False if SIGTERM or SIGINT came first.

    The signals stop the wait only: then they act as at start-up again (`startup_handlers`) until the next worker
    installs its own, so a stop asked for in between is not swallowed."""
    from workers.worker import wait_for_redis
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)

    for signum in startup_handlers:
        signal.signal(signum, stop)
    try:
        return wait_for_redis(connection, stop=lambda: bool(stopped))
    finally:
        for signum, handler in startup_handlers.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, create the app from the environment, and work the queue until stopped."""
    from kinnekt.queue import LANES
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", action="store_true", help="drain the queue (and due scheduled jobs), then exit")
    parser.add_argument("--no-recover", action="store_true", help="do not queue start-up recovery")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's)")
    parser.add_argument("--lanes", type=_lanes, default=LANES,
                        help=f"lanes to work, in priority order (default: {','.join(LANES)})")
    args = parser.parse_args(argv)

    import redis

    from kinnekt import create_app
    from kinnekt.jobs import enqueue_recover_due_work, set_worker_app
    from kinnekt.queue import get_queue
    from workers.worker import make_worker

    app = create_app()
    set_worker_app(app)
    queue = get_queue()
    if queue.mode != "rq":
        print("REDIS_URL is not set: there is no queue to work (the app runs jobs in-process).", file=sys.stderr)
        return 2
    # Everything loaded so far (the app, its models, the libraries) lives as long as the worker: leave it out of
    # the garbage collector's full passes, here and in each job's forked work horse. A full pass in a horse
    # then looks at the job's own objects only (it took over 100 ms over the inherited ones, a pause that can
    # fall between a rate-limiter slot and its request), and the horse does not copy the shared pages on
    # writing the collector's marks into them.
    gc.collect()
    gc.freeze()
    recover = not args.no_recover
    startup_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    round_ = 0
    with app.app_context():
        while True:
            round_ += 1
            worker = None
            try:
                if recover:
                    enqueue_recover_due_work(queue)
                    recover = False
                name = args.name if args.name is None or round_ == 1 else f"{args.name}-{round_}"
                worker = make_worker(queue, args.lanes, name=name)
                worker.work(with_scheduler=True, burst=args.burst, logging_level=app.config["LOG_LEVEL"])
            except redis.exceptions.RedisError as error:  # RQ's teardown could not reach Redis either
                log.warning("worker stopped by a Redis error: %s", error)
            if args.burst or (worker is not None and worker.stop_signalled):
                return 0
            # RQ's loop quits on an error it does not handle (Redis went away): wait for Redis, then go on.
            if not _wait_for_redis(queue.redis, startup_handlers):
                return 0
            recover = not args.no_recover  # Redis may have lost every queued job: find the work again


if __name__ == "__main__":
    sys.exit(main())
