"""`python -m bench.mixed`: the whole deployment under mixed load, with a worker killed in the middle.

    .venv/bin/python -m bench.mixed --recipients 10000 --rate 30 --webhooks 300 --inbound 20 --stops 20
    .venv/bin/python -m bench.mixed --recipients 600 --webhooks 20 --inbound 5 --stops 5      # a smoke run

A deployment as the README describes it, on this machine: gunicorn (--web workers) serving the app on
PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test; a schema of its own, dropped at
the end) and Redis (REDIS_URL, default db 15; a queue name of its own, whose keys are deleted at the end),
--workers `python -m workers` processes on every lane, --fast-workers more on the urgent and default lanes
only, and `rq cron workers/cron.py`. Vonage is the tests' fake (HTTPS, the SMS API's wire format) in a process
of its own (bench/fake_process.py), which notes when each request arrives and for whom.

The shop has --recipients subscribers, the first --customers of them linked to a Shopify customer who has
spent nothing, and a built segment "Spent over $100". A Send now campaign to every subscriber runs at --rate
per second. Meanwhile a driver process (its own, pre-built raw HTTP requests over loopback, each due at a
fixed time whatever the server does) posts signed Shopify `orders/create` webhooks at --webhooks per second
(spread evenly among them, each customer's first order, of $150, so its subscriber must enter the segment;
the others are $20 orders of random customers) and signed Vonage inbound
texts at --inbound per second: a tenth of them HELP (answered with a text), --stops STOPs from recipients the
campaign has not reached yet, the rest "Thanks!". At --kill-at of the campaign, the worker sending the most
is killed with SIGKILL (with its work horse), as a lost machine would be; nobody restarts it.

It reports, all from the fake's arrival times and the database:
- send rate: messages per second at the provider over the campaign (target: within 5% below --rate) and the
  busiest one-second window (never above --rate), texts of every kind counted together (one account);
- webhook to segment: from each crossing order's POST to its subscriber's "enter" in the segment log
  (target: p95 under 5 s), and how many had not entered by the end;
- inbound to reply: from each HELP's POST to its answer's arrival at the provider (target: p95 under 3 s);
- STOP to effect: from each STOP's POST to the last campaign text to that number, or to the POST's answer
  when none came later (target: p99 under 1 s), and how many campaign texts arrived after a STOP was answered
  (must be 0);
- resume after the kill: from the kill to the first text of the batch the killed sender had claimed
  (target: under 15 s);
- SIGTERM: at --term-at of the campaign a sending worker gets SIGTERM (its process alone, as an orchestrator
  sends it); the seconds until it exits (target: under 10 s); a new worker takes its place;
- each lane's longest wait, sampled every second, and (up to 20 samples) what every worker was doing when an
  urgent job had waited over 3 s.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import output  # noqa: E402
from bench.campaigns import _children, busiest_window  # noqa: E402
from bench.webhooks import _free_port, _post, percentile  # noqa: E402

SHOP = "bench-mixed.myshopify.com"
SECRET = "bench-app-secret-0123456789abcdef"
SIGNATURE_SECRET = "bench-vonage-signature-secret-0123456789"
TOKEN_KEY = "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMDA="
SENDER = "15550100200"
CUSTOMER_BASE = 7_000_000


def phone(i: int) -> str:
    """The i-th subscriber's number, E.164."""
    return f"+1202{i:07d}"


def populate(engine, recipients: int, customers: int) -> dict:
    """The shop, its subscribers and customers, and two built segments (everyone; spent over $100)."""
    from sqlalchemy import insert, select, text
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt.db import utcnow
    from kinnekt.models import Customer, Segment, SegmentMember, Shop, Subscriber
    now = utcnow()
    with OrmSession(engine) as session:
        shop = Shop(domain=SHOP, name="Bench", timezone="America/New_York", installed_at=now,
                    quiet_hours_enabled=False, smart_sending_hours=0, suppression_threshold=0)
        session.add(shop)
        session.commit()
        session.execute(insert(Customer), [
            {"shop_id": shop.id, "shopify_id": CUSTOMER_BASE + i, "phone": phone(i), "email": f"c{i}@example.com",
             "first_name": f"C{i}", "money_spent": 0, "orders_count": 0, "total_discounts": 0,
             "shopify_updated_at": now - dt.timedelta(days=30)} for i in range(customers)])
        session.commit()
        by_phone = dict(session.execute(select(Customer.phone, Customer.id).where(Customer.shop_id == shop.id)).all())
        rows = [{"shop_id": shop.id, "phone": phone(i), "status": "subscribed", "source": "import", "country": "US",
                 "timezone": "America/New_York", "first_name": f"Sub{i}", "customer_id": by_phone.get(phone(i)),
                 "created_at": now, "updated_at": now, "sent_count": 0, "clicks_count": 0}
                for i in range(recipients)]
        for start in range(0, recipients, 20_000):
            session.execute(insert(Subscriber), rows[start:start + 20_000])
        everyone = Segment(shop_id=shop.id, name="Everyone", kind="manual", build_status="done",
                           definition={"match": "all", "rules": [{"field": "country", "op": "eq", "value": "US"}]})
        spenders = Segment(shop_id=shop.id, name="Spent over $100", kind="manual", build_status="done",
                           definition={"match": "all", "rules": [{"field": "money_spent", "op": "gt", "value": 100}]})
        session.add_all([everyone, spenders])
        session.commit()
        session.execute(insert(SegmentMember).from_select(
            ["shop_id", "segment_id", "subscriber_id", "entered_at"],
            select(Subscriber.shop_id, text(str(everyone.id)), Subscriber.id, text("now()"))))
        session.commit()
        # Only this schema's tables: a bare ANALYZE would take every table of the database, other
        # schemas' (a test run's) included, and hold locks their TRUNCATE waits for.
        from kinnekt.db import Base
        session.execute(text("ANALYZE " + ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)))
        session.commit()
        return {"shop_id": shop.id, "everyone": everyone.id, "spenders": spenders.id}


# ------------------------------------------------------------------------------------------------ the load

def _order_delivery(i: int, customer: int, total: str) -> tuple[bytes, dict]:
    from tests import shopify_payloads as sp
    payload = sp.order(customer_payload=sp.order_customer(CUSTOMER_BASE + customer, email=f"c{customer}@example.com",
                                                          phone=phone(customer)),
                       line_items=[sp.line_item(product_id=9_000 + i % 50, price=total)], total_price=total,
                       created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5))
    body = json.dumps(payload).encode()
    return body, sp.headers("orders/create", body, secret=SECRET, domain=SHOP, webhook_id=str(uuid.uuid4()))


def _inbound(number: str, text: str) -> tuple[bytes, dict]:
    """An inbound text as the Messages API posts it, and its signed headers (HS256 JWT over the body)."""
    from tests.fake_vonage import inbound_body, signed_headers
    body = json.dumps(inbound_body(text, from_=number.lstrip("+"), to=SENDER)).encode()
    return body, signed_headers(body, SIGNATURE_SECRET)


def _raw(port: int, path: str, body: bytes, headers: dict) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def plan(args, seconds: float) -> list[tuple[float, str, str, object]]:
    """Every request of the run: (due second from the start, kind, key, None); bodies are built by the driver."""
    rng = random.Random(7)
    items = []
    for i in range(int(args.webhooks * seconds)):
        items.append((i / args.webhooks, "order", str(i), None))
    n_inbound = int(args.inbound * seconds)
    stop_times = sorted(rng.uniform(2, max(3.0, seconds * 0.6)) for _ in range(args.stops))
    for i in range(n_inbound):
        items.append((i / args.inbound, "help" if i % 10 == 0 else "other", str(i), None))
    for k, at in enumerate(stop_times):
        items.append((at, "stop", str(k), None))
    return sorted(items, key=lambda item: item[0])


def _drive(port: int, args, seconds: float, start_at: float, stop_targets: list[int], results) -> None:
    """Driver process: post every planned request at its time; put (kind, key, start, end, status) rows."""
    rng = random.Random(11)
    items = plan(args, seconds)
    crossing = list(range(args.customers))
    rng.shuffle(crossing)
    requests = []
    orders = sum(1 for item in items if item[1] == "order")
    step = max(1, orders // max(1, len(crossing)))  # the crossing orders spread evenly over the run
    for due, kind, key, _ in items:
        if kind == "order":
            i = int(key)
            crosses = i % step == 0 and i // step < len(crossing)
            customer = crossing[i // step] if crosses else rng.randrange(args.customers)
            body, headers = _order_delivery(i, customer, "150.00" if crosses else "20.00")
            requests.append((due, kind, str(customer) if crosses else "", _raw(port, "/webhooks/orders", body,
                                                                               headers)))
        else:
            if kind == "stop":
                number = phone(stop_targets[int(key)])
                text = "STOP"
            else:
                number = phone(args.recipients + 1 + int(key) % 500)  # not subscribers: no campaign text to them
                text = "HELP" if kind == "help" else "Thanks!"
            requests.append((due, kind, number, text))  # signed when sent (the signature holds a timestamp)
    out = []
    lock = threading.Lock()
    it = iter(requests)

    def worker():
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                return
            due, kind, key, raw = item
            delay = start_at + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if isinstance(raw, str):
                body, headers = _inbound(key, raw)
                raw = _raw(port, "/sms/inbound", body, headers)
            started = time.monotonic()
            status = _post(port, raw)
            with lock:
                out.append((kind, key, started, time.monotonic(), status))

    threads = [threading.Thread(target=worker) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(out)


# ------------------------------------------------------------------------------------------------ the run

def _sending_worker(redis_url: str, queue_name: str):
    """(worker pid, its RQ job's claim token) of a worker busy with a campaign send job, or None."""
    from redis import Redis
    from rq import Worker
    redis = Redis.from_url(redis_url)
    for worker in Worker.all(connection=redis):
        job = worker.get_current_job()
        if job is not None and job.func_name == "kinnekt.campaigns.tasks.send_campaign" and queue_name in job.origin:
            token = job.get_meta(refresh=True).get("claim_token")
            if token:
                return worker.pid, token
    return None


def _busy_with(redis_url: str, queue_name: str) -> list[str]:
    """What each of this run's workers is doing: "function for N s", or "idle"."""
    from redis import Redis
    from rq import Worker
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    doing = []
    for worker in Worker.all(connection=Redis.from_url(redis_url)):
        if not any(queue_name in name for name in worker.queue_names()):
            continue
        job = worker.get_current_job()
        if job is None:
            doing.append("idle")
            continue
        started = job.started_at.replace(tzinfo=None) if job.started_at else None
        doing.append(f"{job.func_name} for {(now - started).total_seconds():.1f} s" if started else job.func_name)
    return doing


def _terminate(pid: int, workers: list, env: dict) -> dict:
    """SIGTERM to a sending worker's process alone (as an orchestrator does), timed until it exits; a new worker
    takes its place (as a supervisor would start one)."""
    proc = next((p for p in workers if p.pid == pid), None)
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    exited = None
    while time.monotonic() - sent < 60:
        if (proc.poll() if proc is not None else not os.path.exists(f"/proc/{pid}")) is not None:
            exited = time.monotonic() - sent
            break
        time.sleep(0.05)
    workers.append(subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True))
    return {"seconds_to_exit": round(exited, 2) if exited is not None else "not within 60 s"}


def _kill_group(pid: int) -> None:
    for each in [pid, *_children(pid)]:
        try:
            os.killpg(each, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(each, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run(args) -> dict:
    """Build, start the deployment, drive the load, kill a worker, measure; returns the report."""
    from redis import Redis
    from sqlalchemy import select
    from sqlalchemy.orm import Session as OrmSession

    import kinnekt.models  # noqa: F401
    from kinnekt import db as kdb
    from kinnekt.db import Base
    from kinnekt.models import Campaign, Message
    from bench.fake_process import FakeProvider

    from bench.deploy import create_schema, drop_schema, send_now, wait_for_port
    bench_schema = create_schema("bench_mixed", "bench.mixed")
    if bench_schema is None:
        return {"error": "bench.mixed runs on PostgreSQL only (DATABASE_URL)"}
    redis_url, url = bench_schema.redis_url, bench_schema.url
    queue_name = f"bench-mixed-{uuid.uuid4().hex[:8]}"
    work = tempfile.mkdtemp(prefix="bench-mixed-")
    procs: list[subprocess.Popen] = []
    fake = None
    report: dict = {}
    redis = Redis.from_url(redis_url)
    try:
        engine = kdb.make_engine(url)
        Base.metadata.create_all(engine)
        ids = populate(engine, args.recipients, args.customers)
        fake = FakeProvider(work, application_id=str(uuid.uuid4())).start()  # its own rate limit
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "QUEUE_NAME": queue_name,
               "SECRET_KEY": "bench", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SHOPIFY_API_KEY": "bench-key",
               "SHOPIFY_API_SECRET": SECRET, "LOG_LEVEL": "WARNING", "KINNEKT_DEMO": "",
               "KINNEKT_BILLING_REQUIRED": "0",  # a deployment that bills nobody (docs/billing.md)
               **fake.env(), "VONAGE_SENDER": SENDER, "VONAGE_SIGNATURE_SECRET": SIGNATURE_SECRET,
               "SMS_RATE_PER_SECOND": str(args.rate),
               "SMS_SENDER_RATE_PER_SECOND": str(args.rate)}
        port = _free_port()
        procs.append(subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "--workers", str(args.web),
                                       "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "app:app"],
                                      cwd=ROOT, env=env, start_new_session=True))
        workers = []
        for lanes in ["urgent,default,sends,bulk"] * args.workers + ["urgent,default"] * args.fast_workers:
            workers.append(subprocess.Popen([sys.executable, "-m", "workers", "--lanes", lanes], cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True))
        procs += workers
        procs.append(subprocess.Popen([str(ROOT / ".venv" / "bin" / "rq"), "cron", "workers/cron.py", "--url",
                                       redis_url], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for_port(port, seconds=60)
        time.sleep(3)  # workers import the app

        os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "SECRET_KEY",
                                               "TOKEN_ENCRYPTION_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET",
                                               "KINNEKT_BILLING_REQUIRED",
                                               "KINNEKT_DEMO", "SMS_RATE_PER_SECOND", "VONAGE_SIGNATURE_SECRET")})
        from kinnekt import create_app
        from kinnekt.queue import get_queue
        app = create_app()
        seconds = args.recipients / args.rate
        # STOPs from recipients the campaign reaches late (sent in id order, about rate per second).
        stop_targets = [int(args.recipients * (0.6 + 0.35 * k / max(args.stops, 1))) for k in range(args.stops)]
        fake.clear()
        campaign_id = send_now(app, ids["shop_id"], ids["everyone"], "Mixed load", "Flash sale today at {shop_name}")
        started = time.monotonic()
        wall_started = dt.datetime.now(dt.timezone.utc)
        results = multiprocessing.get_context("fork").Queue()
        driver = multiprocessing.get_context("fork").Process(
            target=_drive, args=(port, args, seconds * 0.9, started + 1.0, stop_targets, results))
        driver.start()
        kill = term = None
        lanes_seen: dict[str, float] = {}
        urgent_stalls: list[dict] = []
        status = load = None
        end_by = started + seconds * 3 + 120
        with OrmSession(engine) as session, app.app_context():
            while time.monotonic() < end_by:
                status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
                session.rollback()
                try:
                    for state in get_queue().lane_states():
                        if state.oldest_seconds is not None:
                            lanes_seen[state.lane] = max(lanes_seen.get(state.lane, 0.0), state.oldest_seconds)
                            if state.lane == "urgent" and state.oldest_seconds > 3 and len(urgent_stalls) < 20:
                                urgent_stalls.append({"at_s": round(time.monotonic() - started, 1),
                                                      "waited_s": round(state.oldest_seconds, 1),
                                                      "workers": _busy_with(redis_url, queue_name)})
                except Exception:  # noqa: BLE001 - a sample missed is fine
                    pass
                if term is None and args.term_at and fake.count() >= args.term_at * args.recipients:
                    found = _sending_worker(redis_url, queue_name)
                    if found:
                        term = _terminate(found[0], workers, env)
                        procs.append(workers[-1])
                if kill is None and args.kill_at and fake.count() >= args.kill_at * args.recipients:
                    found = _sending_worker(redis_url, queue_name)
                    if found:
                        pid, token = found
                        claimed = set(session.scalars(select(Message.id).where(
                            Message.campaign_id == campaign_id, Message.claim_token == token,
                            Message.status == "claimed")))
                        session.rollback()
                        _kill_group(pid)
                        kill = {"at": time.monotonic(), "pid": pid, "claimed": claimed}
                if load is None:  # read as it comes: the driver cannot exit while its report fills the pipe
                    try:
                        load = results.get_nowait()
                    except queue.Empty:
                        pass
                if status in ("completed", "ended", "failed") and load is not None:
                    break
                time.sleep(1.0)
        if load is None:
            load = results.get(timeout=600)
        driver.join(timeout=60)
        time.sleep(5)  # the last webhooks and re-checks
        report = measure(engine, ids, campaign_id, fake, load, kill, started, wall_started, args)
        if term is not None:
            report["sigterm"] = term
        report["campaign_status"] = status
        report["lanes_longest_wait_s"] = {lane: round(age, 1) for lane, age in sorted(lanes_seen.items())}
        report["urgent_stalls"] = urgent_stalls
    finally:
        for proc in procs:
            for pid in [proc.pid, *_children(proc.pid)]:
                try:
                    os.killpg(pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
        if fake is not None:
            fake.stop()
        shutil.rmtree(work, ignore_errors=True)
        keys = list(redis.scan_iter(match=f"*{queue_name}*", count=1000))
        if keys:
            redis.delete(*keys)
        drop_schema(bench_schema, keep=args.keep)
    return report


def measure(engine, ids, campaign_id, fake, load, kill, started, wall_started, args) -> dict:
    """The figures of the module docstring, from the fake's arrivals, the driver's rows and the database."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt.models import Customer, Message, SegmentEvent, Subscriber
    arrivals = fake.arrivals()
    recipients = fake.recipients()
    with OrmSession(engine) as session:
        kinds = dict(session.execute(select(Message.id, Message.kind)).all())
        campaign_ids = set(session.scalars(select(Message.id).where(Message.campaign_id == campaign_id)))
        statuses = dict(session.execute(
            select(Message.status, func.count()).where(Message.campaign_id == campaign_id)
            .group_by(Message.status)).all())
        enters = {}
        for subscriber_id, at in session.execute(select(SegmentEvent.subscriber_id, SegmentEvent.at).where(
                SegmentEvent.segment_id == ids["spenders"], SegmentEvent.kind == "enter")):
            enters.setdefault(subscriber_id, at)
        customer_subscriber = dict(session.execute(
            select(Customer.shopify_id, Subscriber.id).join(Subscriber, Subscriber.customer_id == Customer.id)).all())
    def mono(at) -> float:
        """A database timestamp on the monotonic clock (wall_started was taken at `started`)."""
        return started + (at - wall_started).total_seconds()

    by_ref = []
    for (t, ref), to in zip(arrivals, recipients):
        message_id = int(ref[1:]) if ref.startswith("m") and ref[1:].isdigit() else None
        by_ref.append((t, message_id, "+" + to.lstrip("+")))
    campaign_arrivals = sorted(t for t, mid, _ in by_ref if mid in campaign_ids)
    all_arrivals = sorted(t for t, _, _ in by_ref)
    span = campaign_arrivals[-1] - campaign_arrivals[0] if len(campaign_arrivals) > 1 else 0
    in_span = [t for t in all_arrivals if campaign_arrivals and campaign_arrivals[0] <= t <= campaign_arrivals[-1]]
    report = {
        "send": {"campaign_texts": len(campaign_arrivals), "all_texts": len(all_arrivals),
                 "statuses": statuses,
                 "all_texts_per_second_during_campaign": round((len(in_span) - 1) / span, 2) if span else None,
                 "campaign_texts_per_second": round((len(campaign_arrivals) - 1) / span, 2) if span else None,
                 "busiest_1s_window_all_texts": busiest_window(all_arrivals), "limit": args.rate},
    }
    # webhook -> segment
    fresh = []
    orders = [row for row in load if row[0] == "order"]
    for _kind, key, t0, _t1, _status in orders:
        if not key:
            continue
        subscriber_id = customer_subscriber.get(CUSTOMER_BASE + int(key))
        at = enters.get(subscriber_id)
        if at is not None:
            fresh.append(mono(at) - t0)
    crossing = sum(1 for row in orders if row[1])
    report["webhooks"] = {
        "posted": len(orders), "statuses": _count(row[4] for row in orders),
        "offered_per_second": args.webhooks, "crossing_orders": crossing, "entered_segment": len(fresh),
        "not_entered_by_end": crossing - len(fresh),
        **_percentiles("to_segment", fresh),
        "post_p99_ms": round(1000 * percentile([r[3] - r[2] for r in orders], 99), 1) if orders else None}
    # inbound -> reply
    replies: dict[str, list[float]] = {}
    for t, mid, to in by_ref:
        if mid is not None and kinds.get(mid) == "help":
            replies.setdefault(to, []).append(t)
    helps = [row for row in load if row[0] == "help"]
    latencies = []
    for _kind, number, t0, _t1, _status in helps:
        later = [t for t in replies.get(number, []) if t >= t0]
        if later:
            latencies.append(min(later) - t0)
            replies[number].remove(min(later))
    report["inbound"] = {"posted": sum(1 for row in load if row[0] in ("help", "other", "stop")),
                         "statuses": _count(row[4] for row in load if row[0] in ("help", "other", "stop")),
                         "helps": len(helps), "answered": len(latencies), **_percentiles("to_reply", latencies)}
    # STOP -> effect
    effects, late = [], 0
    for _kind, number, t0, t1, _status in (row for row in load if row[0] == "stop"):
        after = [t for t, mid, to in by_ref if to == number and mid in campaign_ids and t >= t0]
        late += sum(1 for t in after if t > t1)
        effects.append(max([t1 - t0] + [t - t0 for t in after]))
    report["stops"] = {"stops": len(effects), "campaign_texts_after_the_answer": late,
                       **_percentiles("to_effect", effects, pct=(50, 99))}
    if kill is not None:
        first = [t for t, mid, _ in by_ref if mid in kill["claimed"] and t >= kill["at"]]
        report["kill"] = {"claimed_by_the_killed_sender": len(kill["claimed"]),
                          "seconds_to_first_text_of_its_batch": round(min(first) - kill["at"], 1) if first else None,
                          "its_batch_sent_by_the_end": len(first)}
    return report


def _count(values) -> dict:
    out: dict = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return out


def _percentiles(name: str, values: list[float], pct=(50, 95)) -> dict:
    if not values:
        return {f"{name}_count": 0}
    out = {f"{name}_p{p}_s": round(percentile(values, p), 3) for p in pct}
    out[f"{name}_max_s"] = round(max(values), 3)
    return out


def main(argv=None) -> int:
    """Parse the arguments, run, print the report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=2_000, help="subscribers linked to a customer")
    parser.add_argument("--rate", type=int, default=30, help="send limit per second")
    parser.add_argument("--webhooks", type=float, default=300, help="orders/create webhooks per second")
    parser.add_argument("--inbound", type=float, default=20, help="inbound texts per second")
    parser.add_argument("--stops", type=int, default=20)
    parser.add_argument("--kill-at", type=float, default=0.5, help="kill a sending worker at this share (0: never)")
    parser.add_argument("--term-at", type=float, default=0.25,
                        help="SIGTERM a sending worker at this share, timed until it exits (0: never)")
    parser.add_argument("--web", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--workers", type=int, default=2, help="workers on every lane")
    parser.add_argument("--fast-workers", type=int, default=0, help="workers on the urgent and default lanes only")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    report = run(args)
    report["arguments"] = vars(args)
    report["machine"] = output.machine(load_before)
    output.emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
