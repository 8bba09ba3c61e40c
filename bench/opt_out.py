"""`python -m bench.opt_out`: from a STOP's POST to "nothing more is sent" to that number, while a campaign sends.

    .venv/bin/python -m bench.opt_out --subscribers 20000 --stops 300
    .venv/bin/python -m bench.opt_out --subscribers 3000 --stops 30          # a smoke run

Everything runs on PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test) in a schema of
its own and on Redis (REDIS_URL, default db 15) under a queue name of its own; both are removed at the end.
A Send now campaign to --subscribers subscribers is sent by --workers `python -m workers` processes at --rate
per second (0, the default: no limit, full rate) through the fake Vonage (tests/fake_vonage.py, HTTPS, real
SDK) in a process of its own (bench/fake_process.py), which notes each request's arrival on the machine's
monotonic clock. gunicorn (--web sync workers) serves the app. While the campaign sends, this process POSTs
--stops STOP texts to /sms/inbound, one every 1/--stop-rate s, each from the recipient --lead places ahead
of the campaign's progress at the fake (not reached yet, and soon to be).

For each STOP, from its POST (all on one clock): `answered` = the 204; `in_force` = the subscriber's
`unsubscribed_at` (the opt-out's commit, give or take the few statements before it); `nothing_more` = the
later of the opt-out being in force and the last campaign text that reached the number: from then on no
campaign text can go to it. Reported: their p50 / p90 / p99 / max, and the campaign texts that reached a
stopping number: before its POST (the campaign was quicker than --lead allowed for: such a STOP counts
all the same), between its POST and its 204 (moved to "sending" before the opt-out committed: in flight;
those after `unsubscribed_at` are counted apart, as that instant is taken just before the opt-out's
UPDATE and commit), and after its 204 (must be none).
Target: `nothing_more` p99 under 1 s. The workers are busy with the campaign's send jobs throughout, so an
opt-out applied by a queued job waits for them (the bug of issue 18, point 1): run this file from a copy of
an older tree to see that.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOP = "bench-opt-out.myshopify.com"
SENDER = "15550100200"
TOKEN_KEY = "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMDA="


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def figures(values: list[float]) -> dict:
    """p50 / p90 / p99 / max of seconds, in ms."""
    if not values:
        return {}
    return {"p50_ms": round(statistics.median(values) * 1000, 1), "p90_ms": round(percentile(values, 90) * 1000, 1),
            "p99_ms": round(percentile(values, 99) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to a worker's process group (RQ's warm shutdown: the job in hand finishes), SIGKILL after 20 s."""
    for sig, wait in ((15, 20), (9, 20)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _jobs_left(redis_url: str, queue_name: str) -> dict:
    """The jobs RQ says are still running on the bench's queue, and those that failed (with their error's last
    line): none of either once everything went well."""
    from redis import Redis
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry, StartedJobRegistry
    connection = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=connection)
    running = Job.fetch_many(StartedJobRegistry(queue=queue).get_job_ids(), connection=connection)
    failed = Job.fetch_many(FailedJobRegistry(queue=queue).get_job_ids(), connection=connection)
    return {"running": [job.func_name for job in running if job is not None],
            "failed": [f"{job.func_name}: {(job.exc_info or '').strip().splitlines()[-1:]}" for job in failed
                       if job is not None]}


def populate(engine, n: int) -> dict:
    """One shop sending from SENDER (quiet hours, smart sending and suppression off), n subscribed US numbers,
    and a built segment of all of them."""
    from sqlalchemy import insert, select, text
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt.db import utcnow
    from kinnekt.models import Segment, SegmentMember, Shop, Subscriber
    now = utcnow()
    with OrmSession(engine) as session:
        shop = Shop(domain=SHOP, name="Bench", timezone="America/New_York", installed_at=now, sender=SENDER,
                    quiet_hours_enabled=False, smart_sending_hours=0, suppression_threshold=0)
        session.add(shop)
        session.commit()
        rows = [{"shop_id": shop.id, "phone": f"+1202{i:07d}", "status": "subscribed", "source": "import",
                 "country": "US", "timezone": "America/New_York", "created_at": now, "updated_at": now,
                 "sent_count": 0, "clicks_count": 0} for i in range(n)]
        for start in range(0, n, 20_000):
            session.execute(insert(Subscriber), rows[start:start + 20_000])
        everyone = Segment(shop_id=shop.id, name="Everyone", kind="manual", build_status="done",
                           definition={"match": "all", "rules": [{"field": "country", "op": "eq", "value": "US"}]})
        session.add(everyone)
        session.commit()
        session.execute(insert(SegmentMember).from_select(
            ["shop_id", "segment_id", "subscriber_id", "entered_at"],
            select(Subscriber.shop_id, text(str(everyone.id)), Subscriber.id, text("now()"))))
        session.commit()
        session.execute(text("ANALYZE"))
        session.commit()
        return {"shop_id": shop.id, "segment_id": everyone.id}


def post_stop(port: int, phone: str, serial: int) -> tuple[int, float, float]:
    """POST one STOP as the Messages API does (JSON, a new connection); (status, posted at, answered at),
    monotonic."""
    from tests.fake_vonage import inbound_body
    body = json.dumps(inbound_body("STOP", from_=phone.lstrip("+"), to=SENDER,
                                   message_uuid=f"bench-{serial:011d}"))
    posted = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/sms/inbound", body=body,
                           headers={"Content-Type": "application/json"})
        status = connection.getresponse().status
    except OSError:
        status = -1
    finally:
        connection.close()
    return status, posted, time.monotonic()


def run(url: str, redis_url: str, ids: dict, args, fake) -> dict:
    """Send the campaign, POST the STOPs while it sends, and work out each STOP's figures."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt import create_app, db as kdb
    from kinnekt.models import Campaign, InboundMessage, Message, Subscriber
    from kinnekt.models.message import row_ref_id
    queue_name = f"bench-opt-out-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "QUEUE_NAME": queue_name,
           "SECRET_KEY": "bench", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SHOPIFY_API_KEY": "bench-key",
           "SHOPIFY_API_SECRET": "x" * 32, "LOG_LEVEL": "WARNING", "KINNEKT_DEMO": "", "PYTHONPATH": str(ROOT),
           "KINNEKT_BILLING_REQUIRED": "0",  # a deployment that bills nobody (docs/billing.md)
           "VONAGE_UNSIGNED_WEBHOOKS": "1",
           **fake.env(), "VONAGE_SENDER": SENDER,
           "SMS_RATE_PER_SECOND": str(args.rate), "SMS_SENDER_RATE_PER_SECOND": str(args.rate)}
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "SECRET_KEY",
                                           "TOKEN_ENCRYPTION_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET",
                                           "KINNEKT_BILLING_REQUIRED",
                                           "KINNEKT_DEMO", "VONAGE_UNSIGNED_WEBHOOKS")})
    app = create_app()
    engine = kdb.engine()
    port = _free_port()
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", str(args.web), "--bind",
                            f"127.0.0.1:{port}", "--log-level", "warning", "app:app"], cwd=ROOT, env=env)
    workers = [subprocess.Popen([sys.executable, "-m", "workers", "--no-recover"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
               for _ in range(args.workers)]
    stops: list[dict] = []
    try:
        from bench.deploy import wait_for_port
        wait_for_port(port, web)
        time.sleep(3)  # the workers import the app
        fake.clear()
        from bench.deploy import send_now
        campaign_id = send_now(app, ids["shop_id"], ids["segment_id"], "Bench STOP",
                               "Flash sale today only at {shop_name}")
        with OrmSession(engine) as session:
            deadline = time.monotonic() + 120
            while fake.count() < 50:  # the snapshot is taken and the senders are under way
                if time.monotonic() > deadline:
                    raise RuntimeError("the campaign did not start sending within 120 s")
                time.sleep(0.05)
            order = session.execute(select(Message.id, Message.to_phone).where(Message.campaign_id == campaign_id)
                                    .order_by(Message.id)).all()  # the order in which the senders claim them
        started = time.monotonic()
        taken: set[int] = set()
        serial = itertools.count(1)
        while len(stops) < args.stops:
            index = fake.count() + args.lead
            while index in taken:
                index += 1
            if index >= len(order) - args.lead:
                break  # the campaign is nearly done: a STOP now would meet no send
            taken.add(index)
            message_id, phone = order[index]
            code, posted, answered = post_stop(port, phone, next(serial))
            stops.append({"phone": phone, "message_id": message_id, "status": code, "posted": posted,
                          "answered": answered, "posted_wall": time.time() - (time.monotonic() - posted)})
            pause = started + len(stops) / args.stop_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        wait_started = time.monotonic()
        deadline = wait_started + max(300, 3 * len(order) / (args.rate or 100))
        with OrmSession(engine) as session:
            while time.monotonic() < deadline:
                status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
                waiting = session.scalar(select(func.count()).select_from(Message).where(
                    Message.kind == "stop_confirm", Message.status.in_(("pending", "claimed", "sending"))))
                waiting += session.scalar(select(func.count()).select_from(InboundMessage).where(
                    InboundMessage.processed_at.is_(None) | (InboundMessage.intent == "handling")))
                session.rollback()
                if status in ("completed", "failed", "ended") and not waiting:
                    break
                time.sleep(0.2)
            waited = time.monotonic() - wait_started
            confirm_phone = dict(session.execute(select(Message.id, Message.to_phone)
                                                 .where(Message.kind == "stop_confirm")).tuples().all())
            phones = [s["phone"] for s in stops]
            unsubscribed = dict(session.execute(select(Subscriber.phone, Subscriber.unsubscribed_at)
                                                .where(Subscriber.phone.in_(phones))).tuples().all())
            outcomes = dict(session.execute(select(Message.to_phone, Message.status)
                                            .where(Message.campaign_id == campaign_id, Message.to_phone.in_(phones))
                                            ).tuples().all())
            campaign_statuses = dict(session.execute(
                select(Message.status, func.count()).where(Message.campaign_id == campaign_id)
                .group_by(Message.status)).tuples().all())
        jobs_left = _jobs_left(redis_url, queue_name)
    finally:
        for proc in workers:
            _stop(proc)
        web.terminate()
        web.wait(timeout=30)
        from redis import Redis
        redis = Redis.from_url(redis_url)
        keys = list(redis.scan_iter(match=f"*{queue_name}*", count=1000))
        if keys:
            redis.delete(*keys)
        kdb.Session.remove()

    arrivals = fake.arrivals()
    campaign_texts: dict[str, list[float]] = {}
    confirmations: dict[str, list[float]] = {}
    to_phone = dict(order)
    for at, ref in arrivals:
        message_id = row_ref_id(ref)
        if message_id in to_phone:
            campaign_texts.setdefault(to_phone[message_id], []).append(at)
        elif message_id in confirm_phone:
            confirmations.setdefault(confirm_phone[message_id], []).append(at)
    answered, in_force, nothing_more = [], [], []
    before_post = before_204 = after_204 = after_in_force = not_in_force = 0
    for stop in stops:
        before_post += sum(1 for at in campaign_texts.get(stop["phone"], []) if at < stop["posted"])
        texts = [at for at in campaign_texts.get(stop["phone"], []) if at >= stop["posted"]]
        before_204 += sum(1 for at in texts if at <= stop["answered"])
        after_204 += sum(1 for at in texts if at > stop["answered"])
        answered.append(stop["answered"] - stop["posted"])
        when = unsubscribed.get(stop["phone"])
        if when is None:
            not_in_force += 1
            continue
        force = when.timestamp() - stop["posted_wall"]
        in_force.append(max(force, 0.0))
        after_in_force += sum(1 for at in texts if at - stop["posted"] > force)
        nothing_more.append(max([force] + [at - stop["posted"] for at in texts]))
    sends = sorted(at for ats in campaign_texts.values() for at in ats)
    span = sends[-1] - sends[0] if len(sends) > 1 else 0
    return {
        "limit_per_second": args.rate or "off", "workers": args.workers, "web_workers": args.web,
        "recipients": len(order), "campaign": status, "seconds_waited_after_the_stops": round(waited, 1),
        "campaign_statuses": campaign_statuses,
        "campaign_texts_per_second": round((len(sends) - 1) / span, 1) if span else None,
        "stops": len(stops), "stop_statuses": {str(k): sum(1 for s in stops if s["status"] == k)
                                               for k in {s["status"] for s in stops}},
        "lead_messages": args.lead,
        "answered_204": figures(answered), "in_force": figures(in_force), "nothing_more_is_sent": figures(nothing_more),
        "stops_not_in_force_at_the_end": not_in_force,
        "campaign_texts_to_a_stopping_number_before_its_post": before_post,
        "campaign_texts_to_a_stopping_number_between_post_and_204": before_204,
        "campaign_texts_to_a_stopping_number_after_its_204": after_204,
        "of_which_after_unsubscribed_at": after_in_force,
        "stopping_numbers_messages": dict(collections.Counter(outcomes.values())),
        "confirmations_sent": sum(len(v) for v in confirmations.values()),
        "jobs_left_at_the_end": jobs_left,
        "confirmation_after_204": figures([confirmations[s["phone"]][0] - s["answered"] for s in stops
                                           if s["phone"] in confirmations]),
    }


def main(argv=None) -> int:
    """Build the shop, run the campaign and the STOPs; print (and optionally write) the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=20_000, help="recipients of the campaign")
    parser.add_argument("--stops", type=int, default=300, help="STOPs posted while it sends (at most)")
    parser.add_argument("--stop-rate", type=float, default=10, help="STOPs posted per second")
    parser.add_argument("--lead", type=int, default=500,
                        help="each STOP comes from the recipient this many places ahead of the campaign's progress")
    parser.add_argument("--rate", type=int, default=0, help="the send limit per second (0: off, full rate)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--web", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--keep", action="store_true", help="leave the schema")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    import kinnekt.models  # noqa: F401  (every table on Base.metadata)
    from kinnekt import db as kdb
    from kinnekt.db import Base

    from bench.deploy import create_schema, drop_schema
    bench_schema = create_schema("bench_opt_out", "bench.opt_out")
    if bench_schema is None:
        return 2
    redis_url, url = bench_schema.redis_url, bench_schema.url
    report = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    fake = work = None
    try:
        engine = kdb.make_engine(url)
        Base.metadata.create_all(engine)
        ids = populate(engine, args.subscribers)
        engine.dispose()
        from bench.fake_process import FakeProvider
        work = tempfile.mkdtemp(prefix="bench-opt-out-")
        # An account of its own: the rate limiter's keys are per account, and other runs on this Redis share
        # the tests' account.
        fake = FakeProvider(work, application_id=str(uuid.uuid4())).start()
        report["run"] = run(url, redis_url, ids, args, fake)
    finally:
        if fake is not None:
            fake.stop()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        drop_schema(bench_schema, keep=args.keep)
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                         "load_average_before": load_before, "load_average_after": os.getloadavg()}
    text_out = json.dumps(report, indent=2, default=str)
    print(text_out)
    if args.json:
        Path(args.json).write_text(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
