"""`python -m bench.campaigns`: audience snapshot time and end-to-end send rate of a campaign.

    .venv/bin/python -m bench.campaigns --subscribers 100000 --send 20000
    .venv/bin/python -m bench.campaigns --subscribers 1000 --send 300 --rates 0,30     # a smoke run

Everything runs on PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test) in a schema of
its own, dropped at the end (--keep leaves it), and on Redis (REDIS_URL, default db 15) under a queue name of its
own, whose keys are deleted at the end. Measured through the real code:

- snapshot: `audience.snapshot` of a campaign whose included segment ("country is US") matches all --subscribers
  subscribers, evaluated from its rules at the start (one INSERT ... SELECT with the skip reasons; 10% unsubscribed
  and 5% suppressed since the build, still materialised members but left out by the rules; 5% texted in the
  smart-sending window, skipped rows), in a shop with 301 earlier campaigns: median of --runs runs, each on a
  new campaign. Target: under 3 s at 100k.
- send: a Send now campaign to --send subscribers, started through `lifecycle.schedule` and sent by
  --workers `python -m workers` processes (traced: bench/send_trace.py) against the fake Vonage
  (tests/fake_vonage.py, HTTPS, real SDK, in a process of its own: bench/fake_process.py),
  once per rate in --rates (0 = limit off; targets: >= 500 messages/s off, and within 5% of 30/s at 30 with no
  1-second window above 30). The rate is messages / (last - first arrival at the fake); the busiest 1-second
  sliding window is computed from the fake's arrival times; worker memory (RSS of workers and their work
  horses, from /proc) is sampled at the first and last tenth of the run; the workers' CPU time (user +
  system of the workers and their work horses, from /proc, from the campaign's start to its end) per
  message is a figure that other load on the machine disturbs much less than the rate. Beside it, per message:
  PostgreSQL's CPU (the server and its backends), the fake provider's, this process's (the polling), the
  whole machine's busy time, which together show where the two cores went, and the time the hypervisor
  stole from this virtual machine. The trace report says at which
  stage (grant, request handed over, arrival) a second held the most. BENCH_ARRIVALS=<prefix> writes the
  joined trace of each phase to <prefix>-<rate>.json.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOP = "bench-campaigns.myshopify.com"
TOKEN_KEY = "YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMDA="


def _rss_kb(pids: list[int]) -> int:
    """Resident memory of these processes and their children, in kB."""
    total = 0
    for pid in set(pids) | {c for p in pids for c in _children(p)}:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes, their reaped children (finished work horses) included,
    and of their live children."""
    ticks = 0
    for pid in set(pids) | {c for p in pids for c in _children(p)}:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds() -> float:
    """User + system CPU seconds of the PostgreSQL server: its postmasters (with the backends they reaped) and
    their live backends."""
    postmasters = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    head, tail = stat.read().rsplit(")", 1)
                with open(f"/proc/{tail.split()[1]}/comm") as parent:
                    parent_name = parent.read().strip()
            except OSError:
                continue
            if head.split("(", 1)[1] == "postgres" and parent_name != "postgres":
                postmasters.append(int(entry))
    return _cpu_seconds(postmasters)


def _machine_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (all CPUs; /proc/stat: user, nice, system, irq, softirq), and
    the seconds stolen by the hypervisor (this virtual machine wanted a CPU that was running something else:
    a send phase with much steal is slower for the same work, which is how identical runs can differ)."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:7]) - fields[3] - fields[4]) / tick, fields[7] / tick


def _cpu_sample(pids: list[int], provider_pid: int) -> dict:
    """The CPU counters a send phase reports: workers, PostgreSQL, the fake provider, this process, machine."""
    usage = os.times()
    machine, steal = _machine_seconds()
    return {"workers": _cpu_seconds(pids), "postgres": _postgres_cpu_seconds(),
            "provider": _cpu_seconds([provider_pid]), "bench": usage.user + usage.system,
            "machine": machine, "machine_steal": steal}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


HISTORY = 300
"""Earlier campaigns of the bench's shop, besides the one whose messages make the smart-sending skips."""


def populate(engine, n: int) -> dict:
    """One shop, n subscribers (10% unsubscribed after the build, 5% suppressed, 5% texted 2 hours ago), and
    two built segments: everyone, and the first `send` ones (made later); HISTORY + 1 earlier campaigns."""
    from sqlalchemy import insert, select, text, update
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt.db import utcnow
    from kinnekt.models import Campaign, Message, Segment, SegmentMember, Shop, Subscriber
    now = utcnow()
    with OrmSession(engine) as session:
        shop = Shop(domain=SHOP, name="Bench", timezone="America/New_York", installed_at=now,
                    quiet_hours_enabled=False, smart_sending_hours=24, suppression_threshold=0)
        session.add(shop)
        session.commit()
        zones = ["America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London", None]
        rows = [{"shop_id": shop.id, "phone": f"+1202{i:07d}", "status": "subscribed", "source": "import",
                 "country": "US", "timezone": zones[i % len(zones)], "first_name": f"Sub{i}",
                 "created_at": now, "updated_at": now, "sent_count": 0, "clicks_count": 0}
                for i in range(n)]
        for start in range(0, n, 20_000):
            session.execute(insert(Subscriber), rows[start:start + 20_000])
        everyone = Segment(shop_id=shop.id, name="Everyone", kind="manual", build_status="done",
                           definition={"match": "all", "rules": [{"field": "country", "op": "eq", "value": "US"}]})
        session.add(everyone)
        session.commit()
        session.execute(insert(SegmentMember).from_select(
            ["shop_id", "segment_id", "subscriber_id", "entered_at"],
            select(Subscriber.shop_id, text(str(everyone.id)), Subscriber.id, text("now()"))))
        # After the build: some unsubscribed and suppressed (the re-check has not caught up), some texted.
        session.execute(update(Subscriber).where(Subscriber.id % 10 == 1).values(status="unsubscribed"))
        session.execute(update(Subscriber).where(Subscriber.id % 20 == 2).values(suppressed_at=now))
        old = Campaign(shop_id=shop.id, name="Earlier", status="completed")
        session.add(old)
        # A shop with a history: a check whose cost grows with the shop's campaigns shows in the snapshot.
        session.add_all(Campaign(shop_id=shop.id, name=f"Past {i}", status="completed") for i in range(HISTORY))
        session.commit()
        session.execute(insert(Message).from_select(
            ["shop_id", "campaign_id", "subscriber_id", "kind", "to_phone", "status", "sent_at", "attempts",
             "created_at", "updated_at"],
            select(Subscriber.shop_id, text(str(old.id)), Subscriber.id, text("'campaign'"), Subscriber.phone,
                   text("'sent'"), text("now() - interval '2 hours'"), text("0"), text("now()"), text("now()"))
            .where(Subscriber.id % 20 == 3)))
        session.commit()
        # Only this schema's tables: a bare ANALYZE would take every table of the database, other
        # schemas' (a test run's) included, and hold locks their TRUNCATE waits for.
        from kinnekt.db import Base
        session.execute(text("ANALYZE " + ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)))
        session.commit()
        return {"shop_id": shop.id, "segment_id": everyone.id}


def bench_snapshot(engine, ids: dict, runs: int) -> dict:
    """Median and min seconds of `audience.snapshot` over `runs` new campaigns, and the counts it wrote.

    Each run starts after a CHECKPOINT (when the role may run one), so that it does not also pay for writing
    out the pages the data build (or the run before) left dirty: with the default 128 MB of shared_buffers,
    that write-back otherwise lands inside the timed statement and makes the figure swing by a second or more.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt.campaigns import audience
    from kinnekt.db import utcnow
    from kinnekt.models import Campaign, CampaignSegment
    times, counts = [], None
    for i in range(runs):
        with OrmSession(engine, expire_on_commit=False) as session:
            campaign = Campaign(shop_id=ids["shop_id"], name=f"Snapshot {i}", body="Hi", status="in_progress")
            session.add(campaign)
            session.flush()
            session.add(CampaignSegment(shop_id=ids["shop_id"], campaign_id=campaign.id,
                                        segment_id=ids["segment_id"], mode="include"))
            session.commit()
            try:
                session.execute(text("CHECKPOINT"))
                checkpointed = True
            except DBAPIError:
                session.rollback()
                checkpointed = False
            started = time.perf_counter()
            counts = audience.snapshot(session, campaign, now=utcnow())
            times.append(time.perf_counter() - started)
    return {"runs": runs, "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "times_s": [round(t, 3) for t in times],
            "checkpoint_before_each_run": checkpointed, "counts": counts}


def busiest_window(arrivals: list[float], width: float = 1.0) -> int:
    """Most arrivals inside any window of `width` seconds."""
    arrivals = sorted(arrivals)
    return max((bisect.bisect_left(arrivals, t + width) - i for i, t in enumerate(arrivals)), default=0)


BODY = "Flash sale today only at {shop_name}"
"""The message of the send phases unless --body says otherwise (no link: see --body in the README)."""


def bench_send(url: str, redis_url: str, ids: dict, n: int, rate: int, workers: int, fake, trace_dir: str,
               body: str = BODY) -> dict:
    """Send a Send now campaign of `body` to n sendable subscribers not texted before (so smart sending skips
    none) with `workers` worker processes at `rate` per second (0: limit off), traced into `trace_dir`."""
    from sqlalchemy import func, insert, select, text
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt import create_app, db as kdb
    from kinnekt.models import Campaign, Message, Segment, SegmentMember, StaticList, StaticListEntry, Subscriber
    queue_name = f"bench-campaigns-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "QUEUE_NAME": queue_name,
           "SECRET_KEY": "bench", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "SHOPIFY_API_KEY": "bench-key",
           "SHOPIFY_API_SECRET": "x" * 32, "LOG_LEVEL": "WARNING", "KINNEKT_DEMO": "",
           "KINNEKT_BILLING_REQUIRED": "0",  # a deployment that bills nobody (docs/billing.md)
           **fake.env(), "VONAGE_SENDER": "15550100200",
           "SMS_RATE_PER_SECOND": str(rate), "SMS_SENDER_RATE_PER_SECOND": str(rate),
           # No Vonage webhook is posted here; the app must still be told that unsigned ones are meant.
           "VONAGE_UNSIGNED_WEBHOOKS": "1"}
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "SECRET_KEY",
                                           "TOKEN_ENCRYPTION_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET",
                                           "KINNEKT_BILLING_REQUIRED",
                                           "KINNEKT_DEMO", "VONAGE_UNSIGNED_WEBHOOKS")})
    app = create_app()
    engine = kdb.engine()
    with OrmSession(engine) as session:
        # The campaign's audience is its segment's rules at the start: a static list of the n people, as members too.
        numbers = StaticList(shop_id=ids["shop_id"], name=f"Send {queue_name}", row_count=n)
        session.add(numbers)
        session.commit()
        session.execute(insert(StaticListEntry).from_select(
            ["shop_id", "list_id", "phone"],
            select(Subscriber.shop_id, text(str(numbers.id)), Subscriber.phone)
            .where(Subscriber.status == "subscribed", Subscriber.suppressed_at.is_(None))
            .where(~Subscriber.id.in_(select(Message.subscriber_id).where(Message.status == "sent")))
            .order_by(Subscriber.id).limit(n)))
        segment = Segment(shop_id=ids["shop_id"], name=f"Send {queue_name}", kind="manual", build_status="done",
                          definition={"match": "all", "rules": [{"field": "list", "op": "in", "value": numbers.id}]})
        session.add(segment)
        session.commit()
        session.execute(insert(SegmentMember).from_select(
            ["shop_id", "segment_id", "subscriber_id", "entered_at"],
            select(Subscriber.shop_id, text(str(segment.id)), Subscriber.id, text("now()"))
            .join(StaticListEntry, (StaticListEntry.phone == Subscriber.phone)
                  & (StaticListEntry.list_id == numbers.id))))
        session.commit()
        segment_id = segment.id
    procs = [subprocess.Popen([sys.executable, "-m", "bench.send_trace", trace_dir, "--no-recover"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for _ in range(workers)]
    fake.clear()
    memory = []
    cpu = []
    try:
        time.sleep(3)  # workers import the app
        cpu.append(_cpu_sample([p.pid for p in procs], fake.pid))
        from bench.deploy import send_now
        campaign_id = send_now(app, ids["shop_id"], segment_id, f"Bench {rate}/s", body)
        deadline = time.monotonic() + max(120, 3 * n / (rate or 100))
        with OrmSession(engine) as session:
            while time.monotonic() < deadline:
                status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
                session.rollback()
                got = fake.count()
                if (not memory and got >= n // 10) or (len(memory) == 1 and got >= 9 * n // 10):
                    memory.append(_rss_kb([p.pid for p in procs]))
                if status in ("completed", "failed", "ended"):
                    break
                time.sleep(0.1)
            cpu.append(_cpu_sample([p.pid for p in procs], fake.pid))
            sent = session.scalar(select(func.count()).select_from(Message).where(
                Message.campaign_id == campaign_id, Message.status.in_(("sent", "delivered"))))
    finally:
        for proc in procs:
            for pid in [proc.pid, *_children(proc.pid)]:
                try:
                    os.killpg(pid, 15)
                except (ProcessLookupError, PermissionError):
                    pass
            proc.wait(timeout=30)
        from redis import Redis
        redis = Redis.from_url(redis_url)
        keys = list(redis.scan_iter(match=f"*{queue_name}*", count=1000))
        if keys:
            redis.delete(*keys)
        kdb.Session.remove()
    from bench import send_trace
    arrived = fake.arrivals()
    arrivals = sorted(t for t, _ in arrived)
    traced = send_trace.read(trace_dir, arrived)
    if os.environ.get("BENCH_ARRIVALS"):  # for a closer look at the busiest second
        Path(f"{os.environ['BENCH_ARRIVALS']}-{rate}.json").write_text(json.dumps(traced))
    trace = send_trace.report(traced, send_trace.pauses(trace_dir))
    if not rate or trace.get("busiest_1s_arrived", 0) <= rate:  # listed only when it holds more than the limit
        trace.pop("busiest_arrival_second", None)
        trace.pop("worker_gc_in_busiest_arrival_second", None)
    span = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0
    return {"limit_per_second": rate or "off", "workers": workers, "body": body, "messages": n, "status": status,
            "sent": sent, "requests_at_fake": len(arrivals),
            "messages_per_second": round((len(arrivals) - 1) / span, 1) if span else None,
            "busiest_1s_window": busiest_window(arrivals),
            "worker_cpu_s": round(cpu[1]["workers"] - cpu[0]["workers"], 1) if len(cpu) == 2 else None,
            **({f"{part}_cpu_ms_per_message": round(1000 * (cpu[1][part] - cpu[0][part]) / n, 2)
                for part in ("workers", "postgres", "provider", "bench", "machine", "machine_steal")}
               if len(cpu) == 2 else {}),
            "worker_rss_kb_first_tenth": memory[0] if memory else None,
            "worker_rss_kb_last_tenth": memory[1] if len(memory) > 1 else None, "trace": trace}


def main(argv=None) -> int:
    """Build the shop, time the snapshot, time the sends; print (and optionally write) the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="snapshot runs (each on a new campaign)")
    parser.add_argument("--send", type=int, default=20_000, help="messages per send phase (0: skip)")
    parser.add_argument("--rates", default="0,30", help="comma-separated limits per second (0: off)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--body", default=BODY, help="the campaign's message (a URL in it becomes a short link)")
    parser.add_argument("--keep", action="store_true", help="leave the schema for EXPLAIN")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    import tempfile

    import kinnekt.models  # noqa: F401  (every table on Base.metadata)
    from kinnekt import db as kdb
    from kinnekt.db import Base

    from bench.deploy import create_schema, drop_schema
    bench_schema = create_schema("bench_campaigns", "bench.campaigns")
    if bench_schema is None:
        return 2
    redis_url, url = bench_schema.redis_url, bench_schema.url
    report = {}
    fake = work = None
    try:
        engine = kdb.make_engine(url)
        Base.metadata.create_all(engine)
        started = time.perf_counter()
        ids = populate(engine, args.subscribers)
        report["populate_s"] = round(time.perf_counter() - started, 1)
        report["snapshot"] = {"subscribers": args.subscribers, **bench_snapshot(engine, ids, args.runs)}
        engine.dispose()
        if args.send:
            from bench.fake_process import FakeProvider
            work = tempfile.mkdtemp(prefix="bench-campaigns-")
            fake = FakeProvider(work).start()
            rates = [int(rate) for rate in args.rates.split(",") if rate.strip()]
            size = min(args.send, args.subscribers // (2 * max(len(rates), 1)))
            report["send"] = []
            for rate in rates:
                trace_dir = os.path.join(work, f"trace-{rate}")
                os.mkdir(trace_dir)
                report["send"].append(bench_send(url, redis_url, ids, size, rate, args.workers, fake, trace_dir,
                                                 args.body))
    finally:
        if fake is not None:
            fake.stop()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        drop_schema(bench_schema, keep=args.keep)
    from bench import output
    report["machine"] = output.machine(load_before)
    output.emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
