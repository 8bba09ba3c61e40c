"""Benchmark: the pixel endpoint's CPU per event in one process, robust to the machine's load.

    .venv/bin/python -m bench.pixel_cpu [--requests 2000] [--batch 5] [--profile]

The real app (create_app, as gunicorn serves it) handles `--requests` pixel batches through Flask's test client,
one after another, against PostgreSQL (a throwaway schema in DATABASE_URL) and Redis (REDIS_URL: the rate limits
count there). The shop, its browsers and the batches are bench/pixel_batches.py's, as for bench/pixel.py (2,000
browsers, a tenth signed in as customers linked to subscribers). What is reported is this process's CPU time
(time.process_time: user + system, not wall time, so other work on the machine barely moves it) divided by the
events stored: the endpoint's own cost in Python, without PostgreSQL's and Redis's. The requests are built before
the clock starts; the test client's own share (building the WSGI environ, reading the answer) is included.
`--profile` prints cProfile's top functions.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--browsers", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions by own time")
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    from bench.deploy import create_schema, drop_schema
    from bench.output import emit, machine
    from bench.pixel_batches import bodies, counts, cpu_between, named, postgres_cpu, seed
    from kinnekt.storefront.limits import PREFIX
    schema = create_schema("bench_pixel_cpu", "bench.pixel_cpu")
    if schema is None:
        return 2
    from redis import Redis
    redis = Redis.from_url(schema.redis_url)
    customers = args.browsers // 10
    report: dict = {"requests": args.requests, "batch": args.batch, "browsers": args.browsers}
    try:
        shop_id = seed(schema.url, customers)
        os.environ.update({"DATABASE_URL": named(schema.url, schema.name), "REDIS_URL": schema.redis_url,
                           "QUEUE_NAME": f"bench-pixel-{uuid.uuid4().hex[:8]}", "SECRET_KEY": "bench",
                           "TOKEN_ENCRYPTION_KEY": "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMDA=",
                           "SHOPIFY_API_KEY": "bench-key", "SHOPIFY_API_SECRET": "bench-secret",
                           "LOG_LEVEL": "WARNING", "KINNEKT_DEMO": "", "VONAGE_UNSIGNED_WEBHOOKS": "1"})
        from kinnekt import create_app
        app = create_app()
        client = app.test_client()

        def send(batch):
            statuses: dict[int, int] = {}
            for body in batch:
                status = client.post("/pixel/events", data=body, content_type="text/plain;charset=UTF-8").status_code
                statuses[status] = statuses.get(status, 0) + 1
            return statuses

        send(bodies(args.warmup, args.batch, args.browsers, customers, seed=1))
        before = counts(schema.url, shop_id)["events_stored"]
        measured = bodies(args.requests, args.batch, args.browsers, customers, seed=2)
        profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU time, not wall
        postgres_before = postgres_cpu(schema.admin, schema.name)
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        statuses = send(measured)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        postgres_used = cpu_between(postgres_before, postgres_cpu(schema.admin, schema.name))
        stored = counts(schema.url, shop_id)["events_stored"] - before
        report.update({"statuses": statuses, "events_stored": stored,
                       "cpu_ms_per_event": round(cpu / max(stored, 1) * 1000, 3),
                       "cpu_ms_per_request": round(cpu / args.requests * 1000, 3),
                       "postgres_cpu_ms_per_event": round(postgres_used / max(stored, 1) * 1000, 3),
                       "wall_ms_per_request": round(wall / args.requests * 1000, 3)})
        if profiler:
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(35)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(60)
    finally:
        for key in redis.scan_iter(f"{PREFIX}:*"):
            redis.delete(key)
        drop_schema(schema)
    report["machine"] = machine(load_before)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
