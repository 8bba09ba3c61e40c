"""Benchmark: webhook intake under gunicorn (verify + store + enqueue) and worker processing of orders/create.

    .venv/bin/python bench/webhooks.py [--requests 3000] [--concurrency 8] [--rate 300] [--workers 4] [--process 500]

Intake: gunicorn serves the real app on 127.0.0.1 against PostgreSQL (a throwaway schema in DATABASE_URL,
default postgresql://postgres@127.0.0.1:5432/test) and Redis (REDIS_URL, default redis://127.0.0.1:6379/15,
a throwaway queue name). A separate driver process posts signed orders/create deliveries (each with its own
webhook id) over loopback, a bounded number of them: first closed-loop with --concurrency clients (the most it
takes), then open-loop at --rate requests/s (latency at that load, counted from when each request was due).
Processing: the stored events are then run through process_webhook_event in this process (N of them),
reporting events/s. Everything created is removed at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-app-secret-0123456789abcdef"
SHOP = "bench-store.myshopify.com"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bodies(n: int) -> list[tuple[bytes, dict]]:
    """n signed orders/create deliveries of a realistic size (three line items, an embedded customer)."""
    from tests import shopify_payloads as sp
    out = []
    for i in range(n):
        cid = 7_000_000 + (i % 400)  # 400 customers, so facts are recomputed over several orders each
        payload = sp.order(customer_payload=sp.order_customer(cid, email=f"c{cid}@example.com",
                                                              phone=f"+1613555{cid % 10000:04d}"),
                           line_items=[sp.line_item(product_id=9_000 + (i + k) % 50, price=f"{10 + k}.50")
                                       for k in range(3)],
                           total_price="34.50", created_at=dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
                           + dt.timedelta(minutes=i))
        body = json.dumps(payload).encode()
        out.append((body, sp.headers("orders/create", body, secret=SECRET, domain=SHOP,
                                     webhook_id=str(uuid.uuid4()))))
    return out


def _raw_request(port: int, body: bytes, headers: dict) -> bytes:
    """The whole HTTP/1.1 request as bytes, built before timing so the driver spends little CPU per request."""
    lines = ["POST /webhooks/orders HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _post(port: int, request: bytes) -> int:
    """Send one request on a new connection (as Shopify does) and return the response status (-1: no answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        head = b"".join(chunks).split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 else -1
    except (OSError, ValueError):
        return -1


def _drive(port: int, deliveries, concurrency: int, rate: float | None, results) -> None:
    """Driver process: post every delivery; put (latencies, statuses, wall seconds) on results.

    rate None: closed loop, `concurrency` threads each sending its next request when the last one answered
    (measures the most the server can take). rate R: open loop, request i is due at start + i/R whatever the
    server does, and its latency counts from when it was due (so a slow server cannot hide its queue).
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    it = iter(enumerate(deliveries))
    start = time.perf_counter() + 0.05

    def worker():
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                return
            index, request = item
            if rate:
                due = start + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            else:
                due = time.perf_counter()
            status = _post(port, request)
            elapsed = time.perf_counter() - due
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = time.process_time()
    results.put((latencies, statuses, wall, cpu))


def run_load(port: int, deliveries, concurrency: int, rate: float | None = None):
    """Run the driver in its own process and return (latencies, statuses, wall seconds, driver CPU seconds)."""
    requests = [_raw_request(port, body, headers) for body, headers in deliveries]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    proc = ctx.Process(target=_drive, args=(port, requests, concurrency, rate, results))
    proc.start()
    outcome = results.get()
    proc.join()
    return outcome


def summary(latencies, statuses, wall, driver_cpu) -> dict:
    """Throughput and latency percentiles of one load phase."""
    return {
        "driver_cpu_ms_per_request": round(driver_cpu / len(latencies) * 1000, 2),
        "requests": len(latencies), "statuses": statuses, "seconds": round(wall, 3),
        "requests_per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU seconds of a process and its children (gunicorn's master and workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [root_pid]
    try:
        children = Path(f"/proc/{root_pid}/task/{root_pid}/children").read_text().split()
        pids += [int(pid) for pid in children]
    except OSError:
        pass
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="measured intake requests")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests first")
    parser.add_argument("--concurrency", type=int, default=8, help="driver threads of the closed-loop phase")
    parser.add_argument("--rate", type=float, default=300, help="offered requests/s of the open-loop phase (0: skip)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--process", type=int, default=500, help="stored events to process for the worker rate")
    parser.add_argument("--worker-processes", type=int, default=0,
                        help="process every stored event with this many `python -m workers --burst` instead")
    parser.add_argument("--code-dir", default=str(ROOT),
                        help="run those workers from this checkout (to compare with another commit's workers)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    from redis import Redis
    from rq import Queue
    import kinnekt.models  # noqa: F401  (every table on Base.metadata)
    from kinnekt import db as kdb
    from kinnekt.db import Base

    from bench.deploy import create_schema, drop_schema, wait_for_port
    bench_schema = create_schema("bench_wh", "bench.webhooks")
    if bench_schema is None:
        return 2
    redis_url, url = bench_schema.redis_url, bench_schema.url
    queue_name = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    report = {}
    try:
        engine = kdb.make_engine(url)
        Base.metadata.create_all(engine)
        from sqlalchemy.orm import Session as OrmSession

        from kinnekt.db import utcnow
        from kinnekt.models import Shop
        with OrmSession(engine) as session:
            session.add(Shop(domain=SHOP, name="Bench", timezone="UTC", installed_at=utcnow()))
            session.commit()
        engine.dispose()

        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "QUEUE_NAME": queue_name,
               "SECRET_KEY": "bench", "TOKEN_ENCRYPTION_KEY": "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMDA=",
               "SHOPIFY_API_KEY": "bench-key", "SHOPIFY_API_SECRET": SECRET, "LOG_LEVEL": "WARNING",
               "KINNEKT_DEMO": "", "VONAGE_UNSIGNED_WEBHOOKS": "1"}  # no Vonage webhook is posted here
        port = _free_port()
        gunicorn = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "gunicorn"), "--workers", str(args.workers), "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning", "app:app"], cwd=ROOT, env=env)
        try:
            wait_for_port(port, gunicorn)
            run_load(port, _bodies(args.warmup), args.concurrency)
            deliveries = _bodies(args.requests)
            cpu_before = cpu_seconds(gunicorn.pid)
            report["saturation"] = summary(*run_load(port, deliveries, args.concurrency))
            report["saturation"]["gunicorn_cpu_ms_per_request"] = round(
                (cpu_seconds(gunicorn.pid) - cpu_before) / len(deliveries) * 1000, 2)
            if args.rate:
                report["at_rate"] = {"offered_per_second": args.rate,
                                     **summary(*run_load(port, _bodies(args.requests), 32, args.rate))}
            report["queued_jobs"] = Queue(queue_name, connection=redis).count
        finally:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)

        if args.worker_processes:
            report["processing_by_workers"] = process_with_workers(env, args.worker_processes, args.code_dir)
        elif args.process:
            report["processing"] = process_stored(env, args.process)
    finally:
        # Whatever failed, leave nothing behind: the queue's jobs and keys, the schema.
        Queue(queue_name, connection=redis).empty()
        for key in redis.scan_iter(f"rq:*{queue_name}*"):
            redis.delete(key)
        drop_schema(bench_schema)

    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                         "load_average_before": load_before, "load_average_after": os.getloadavg(),
                         "gunicorn_workers": args.workers}
    print(json.dumps(report, indent=2))
    return 0


def process_with_workers(env: dict, n: int, code_dir: str) -> dict:
    """Process every stored event (and the jobs they queue) with n burst workers run from `code_dir`; the rate
    counts from the first event processed to the last (the workers' start-up left out)."""
    from sqlalchemy import create_engine, func, select

    from kinnekt import db as kdb
    from kinnekt.models import WebhookEvent
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "workers", "--burst", "--no-recover"], cwd=code_dir,
                              env={**env, "PYTHONPATH": code_dir}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(n)]
    errors = [proc.communicate(timeout=3600)[1].decode()[-500:] for proc in procs]
    wall = time.perf_counter() - started
    engine = create_engine(kdb.make_engine_url(env["DATABASE_URL"]))
    with engine.connect() as conn:
        done, first, last = conn.execute(select(func.count(), func.min(WebhookEvent.processed_at),
                                                func.max(WebhookEvent.processed_at))
                                         .where(WebhookEvent.processed_at.is_not(None))).one()
        total = conn.scalar(select(func.count()).select_from(WebhookEvent))
    engine.dispose()
    span = (last - first).total_seconds() if first and last else 0
    return {"workers": n, "code_dir": code_dir, "events": total, "processed": done,
            "events_per_second": round((done - 1) / span, 1) if span else None, "wall_s": round(wall, 1),
            "worker_errors": [e for e in errors if "Traceback" in e]}


def process_stored(env: dict, n: int) -> dict:
    """Process n stored orders/create events through process_webhook_event, in order; returns the rate."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "SECRET_KEY",
                                           "TOKEN_ENCRYPTION_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET",
                                           "LOG_LEVEL", "VONAGE_UNSIGNED_WEBHOOKS")})
    from sqlalchemy import func, select

    from kinnekt import create_app
    from kinnekt.db import Session
    from kinnekt.models import Customer, Order, WebhookEvent
    from kinnekt.shopify.tasks import process_webhook_event

    app = create_app()
    with app.app_context():
        ids = Session.scalars(select(WebhookEvent.id).where(WebhookEvent.processed_at.is_(None))
                              .order_by(WebhookEvent.id).limit(n)).all()
        Session.remove()
        started = time.perf_counter()
        outcomes = [process_webhook_event(event_id) for event_id in ids]
        seconds = time.perf_counter() - started
        orders = Session.scalar(select(func.count()).select_from(Order))
        customers = Session.scalar(select(func.count()).select_from(Customer))
    return {"events": len(ids), "processed": outcomes.count("processed"), "seconds": round(seconds, 3),
            "events_per_second": round(len(ids) / seconds, 1) if seconds else None,
            "ms_per_event": round(seconds / max(len(ids), 1) * 1000, 2), "orders": orders, "customers": customers}


if __name__ == "__main__":
    sys.exit(main())
