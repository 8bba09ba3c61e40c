"""Benchmark: the web pixel's ingest endpoint under gunicorn, at a steady rate of storefront events, with the
segment re-checks and flow jobs those events cause worked by real workers beside it.

    .venv/bin/python -m bench.pixel [--events-per-second 1000] [--seconds 60] [--batch 5] [--workers 4]
                                    [--rq-workers 2] [--no-browsing]

gunicorn serves the real app on 127.0.0.1 against PostgreSQL (a throwaway schema in DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/test) and Redis (REDIS_URL, default redis://127.0.0.1:6379/15: the rate
limits count there, and the jobs queue there). The shop and its traffic are bench/pixel_batches.py's: --browsers
browsers (2,000), a tenth of them signed in as customers linked to subscribers; with browsing (the default) the shop
has two browsing segments, a plain one and the browse abandonment flow on, and --rq-workers `python -m workers`
processes work the jobs (the storefront re-checks, run at most every STOREFRONT_RECHECK_SECONDS per shop, and the
flows' entry and exit jobs). A separate driver process posts pixel batches open-loop: batch i is due at
start + i / (rate / batch), whatever the server does, and its latency counts from when it was due.

Reports the events stored per second over the run, request latency percentiles, statuses, the CPU per event of
gunicorn, of the workers and of PostgreSQL (the run's backends, found by their application_name), and whether
the re-checks kept up: sampled every second during the run, the subscribers waiting for a browsing re-check and
the jobs waiting in each lane with the oldest one's age; after the run, how long until nothing was waiting; and
for every subscriber who entered "added to cart 3 times today", the time from the arrival of that third
add-to-cart to the entry in the segment's log. Everything created is removed at the end.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pixel_batches import (bodies, counts, cpu_between, http_request, named, postgres_cpu,  # noqa: E402
                                 seed, seed_browsing)


def _requests(port: int, count: int, batch: int, browsers: int, customers: int, seed: int) -> list[bytes]:
    """`count` whole HTTP requests (built before timing), each a batch of `batch` events of one browser."""
    return [http_request(port, body) for body in bodies(count, batch, browsers, customers, seed)]


def _run(port: int, requests: list[bytes], rate: float, concurrency: int):
    from bench.webhooks import _drive
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    proc = ctx.Process(target=_drive, args=(port, requests, concurrency, rate, results))
    proc.start()
    outcome = results.get()
    proc.join()
    return outcome


def _ready(port: int, seconds: float = 180) -> None:
    """Return once gunicorn answers a batch (its workers may still be importing the app when the port opens,
    and a warm-up request that times out would be stored during the measured run)."""
    import random

    from bench.webhooks import _post
    deadline = time.monotonic() + seconds
    rng = random.Random(0)
    while True:
        (request,) = _requests(port, 1, 1, 1, 0, seed=rng.randrange(10 ** 9))
        if _post(port, request) == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the pixel endpoint never answered 200")
        time.sleep(0.5)


def _cpu_with_children(pid: int) -> float:
    """User + system CPU seconds of a process and of its children that ended (an RQ worker's work horses)."""
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


class Sampler(threading.Thread):
    """Every second: the subscribers waiting for the shop's browsing re-check and each lane's waiting jobs."""

    def __init__(self, redis_url: str, queue_name: str, shop_id: int):
        super().__init__(daemon=True)
        from kinnekt.queue import RQJobQueue
        from kinnekt.segments.membership import browsing_group
        self.queue = RQJobQueue(redis_url, queue_name)
        self.pending_key = f"kinnekt:batch:{queue_name}:{browsing_group(shop_id)}"
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def sample(self) -> dict:
        """One look at what waits."""
        states = {s.lane: s for s in self.queue.lane_states()}
        scheduled = sum(lane.scheduled_job_registry.count for lane in self.queue.lanes.values())
        return {"t": round(time.monotonic() - self.started, 1),
                "pending_rechecks": int(self.queue.redis.scard(self.pending_key)),
                "scheduled_jobs": scheduled,
                "waiting": {lane: s.waiting for lane, s in states.items() if s.waiting},
                "oldest_s": max((s.oldest_seconds or 0.0 for s in states.values()), default=0.0)}

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # noqa: BLE001 - a missed sample is not worth a failed run
                self.samples.append({"t": round(time.monotonic() - self.started, 1), "error": str(exc)})

    def idle(self) -> bool:
        """Nothing waits: no subscriber for a re-check, no job queued or scheduled."""
        now = self.sample()
        return not now["pending_rechecks"] and not now["scheduled_jobs"] and not now["waiting"]


def _entry_latencies(url: str, segment_id: int, since) -> list[float]:
    """Seconds from the arrival of each entering subscriber's third add-to-cart to their entry in the segment."""
    from sqlalchemy import create_engine, text

    from kinnekt import db as kdb
    engine = create_engine(kdb.make_engine_url(url))
    with engine.connect() as conn:
        rows = conn.execute(text("""
            WITH third AS (
              SELECT subscriber_id, received_at FROM (
                SELECT subscriber_id, received_at,
                       row_number() OVER (PARTITION BY subscriber_id ORDER BY received_at, id) AS n
                FROM storefront_events WHERE name = 'product_added_to_cart' AND subscriber_id IS NOT NULL) e
              WHERE n = 3)
            SELECT EXTRACT(EPOCH FROM (s.at - t.received_at))
            FROM segment_events s JOIN third t ON t.subscriber_id = s.subscriber_id
            WHERE s.segment_id = :segment AND s.kind = 'enter' AND s.at >= :since"""),
            {"segment": segment_id, "since": since}).scalars().all()
    engine.dispose()
    return [float(r) for r in rows]


def _summarise(samples: list[dict]) -> dict:
    good = [s for s in samples if "error" not in s]
    if not good:
        return {}
    pending = [s["pending_rechecks"] for s in good]
    return {"samples": len(good), "pending_rechecks_max": max(pending),
            "pending_rechecks_mean": round(statistics.mean(pending), 1),
            "waiting_jobs_max": max(sum(s["waiting"].values()) for s in good),
            "oldest_waiting_job_max_s": round(max(s["oldest_s"] for s in good), 2),
            "every_10s": [s for s in good if int(s["t"]) % 10 == 0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events-per-second", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--batch", type=int, default=5, help="events per request (a page's worth)")
    parser.add_argument("--browsers", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--rq-workers", type=int, default=2, help="`python -m workers` processes (with browsing)")
    parser.add_argument("--no-browsing", action="store_true",
                        help="no browsing segments, no flow, no workers: the ingest alone (as before issue 23's end)")
    parser.add_argument("--concurrency", type=int, default=48, help="driver threads (open loop)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests first")
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    from redis import Redis

    from bench.deploy import create_schema, drop_schema, wait_for_port
    from bench.output import emit, machine
    from bench.webhooks import _free_port, cpu_seconds, summary
    from kinnekt.db import utcnow
    from kinnekt.storefront.limits import PREFIX
    schema = create_schema("bench_pixel", "bench.pixel")
    if schema is None:
        return 2
    redis = Redis.from_url(schema.redis_url)
    customers = args.browsers // 10
    browsing = not args.no_browsing
    queue_name = f"bench-pixel-{uuid.uuid4().hex[:8]}"
    report: dict = {"offered_events_per_second": args.events_per_second, "seconds": args.seconds,
                    "batch": args.batch, "browsers": args.browsers, "signed_in_browsers": customers,
                    "browsing_segments_and_flow": browsing, "rq_workers": args.rq_workers if browsing else 0}
    procs: list[subprocess.Popen] = []
    try:
        shop_id = seed(schema.url, customers)
        app_url = named(schema.url, schema.name)  # the run's PostgreSQL backends carry the schema's name
        env = {**os.environ, "DATABASE_URL": app_url, "REDIS_URL": schema.redis_url,
               "QUEUE_NAME": queue_name, "SECRET_KEY": "bench",
               "TOKEN_ENCRYPTION_KEY": "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMDA=",
               "SHOPIFY_API_KEY": "bench-key", "SHOPIFY_API_SECRET": "bench-secret", "LOG_LEVEL": "WARNING",
               "KINNEKT_DEMO": "", "VONAGE_UNSIGNED_WEBHOOKS": "1"}
        workers: list[subprocess.Popen] = []
        ids: dict = {}
        if browsing:
            os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "SECRET_KEY",
                                                   "TOKEN_ENCRYPTION_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET",
                                                   "LOG_LEVEL", "KINNEKT_DEMO", "VONAGE_UNSIGNED_WEBHOOKS")})
            from kinnekt import create_app
            ids = seed_browsing(create_app(), shop_id)
            for _ in range(args.rq_workers):
                workers.append(subprocess.Popen([sys.executable, "-m", "workers", "--no-recover"], cwd=ROOT, env=env,
                                                stdout=subprocess.DEVNULL))
            procs += workers
        port = _free_port()
        gunicorn = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "gunicorn"), "--workers", str(args.workers), "--bind",
             f"127.0.0.1:{port}", "--log-level", "warning", "app:app"], cwd=ROOT, env=env)
        procs.append(gunicorn)
        wait_for_port(port, gunicorn)
        _ready(port)
        rate = args.events_per_second / args.batch
        _run(port, _requests(port, args.warmup, args.batch, args.browsers, customers, seed=1), rate,
             args.concurrency)
        sampler = Sampler(schema.redis_url, queue_name, shop_id) if browsing else None
        if sampler:  # the warm-up's re-checks and the segments' first builds are done before the clock starts
            deadline = time.monotonic() + 120
            while not sampler.idle() and time.monotonic() < deadline:
                time.sleep(0.5)
        before = counts(schema.url, shop_id)["events_stored"]
        count = int(rate * args.seconds)
        requests = _requests(port, count, args.batch, args.browsers, customers, seed=2)
        cpu_before = cpu_seconds(gunicorn.pid)
        workers_cpu_before = sum(_cpu_with_children(w.pid) for w in workers)
        postgres_before = postgres_cpu(schema.admin, schema.name)
        since = utcnow().replace(tzinfo=None)
        if sampler:
            sampler.start()
        started = time.perf_counter()
        latencies, statuses, wall, driver_cpu = _run(port, requests, rate, args.concurrency)
        elapsed = time.perf_counter() - started
        postgres_used = cpu_between(postgres_before, postgres_cpu(schema.admin, schema.name))
        stored = counts(schema.url, shop_id)
        new_events = stored["events_stored"] - before
        report["requests"] = summary(latencies, statuses, wall, driver_cpu)
        report["requests"]["p95_ms"] = round(sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000, 1)
        report["events_sent"] = count * args.batch
        report["events_stored_in_run"] = new_events
        report["achieved_events_per_second"] = round(new_events / wall, 1)
        report["accepted_events_per_second"] = round(statuses.get(200, 0) * args.batch / wall, 1)
        report["wall_seconds_including_drain"] = round(elapsed, 2)
        report["gunicorn_cpu_ms_per_event"] = round((cpu_seconds(gunicorn.pid) - cpu_before)
                                                    / max(new_events, 1) * 1000, 3)
        report["postgres_cpu_ms_per_event"] = round(postgres_used / max(new_events, 1) * 1000, 3)
        report["totals"] = stored
        if sampler:
            drain_started = time.monotonic()
            while not sampler.idle() and time.monotonic() - drain_started < 300:
                time.sleep(0.25)
            sampler.stop.set()
            report["rechecks"] = {
                "idle_seconds_after_last_batch": round(time.monotonic() - drain_started, 2),
                **_summarise(sampler.samples)}
            workers_cpu = sum(_cpu_with_children(w.pid) for w in workers) - workers_cpu_before
            report["workers_cpu_ms_per_event"] = round(workers_cpu / max(new_events, 1) * 1000, 3)
            entries = _entry_latencies(schema.url, ids["carted_segment"], since)
            if entries:
                entries.sort()
                report["rechecks"]["third_add_to_cart_to_segment_entry"] = {
                    "entries": len(entries), "p50_s": round(statistics.median(entries), 2),
                    "p95_s": round(entries[int(0.95 * (len(entries) - 1))], 2), "max_s": round(entries[-1], 2)}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for key in redis.scan_iter(f"{PREFIX}:*"):
            redis.delete(key)
        for key in redis.scan_iter(f"*{queue_name}*"):
            redis.delete(key)
        drop_schema(schema)
    report["machine"] = {**machine(load_before), "gunicorn_workers": args.workers}
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
