"""Benchmark of ad audience syncs (kinnekt/audiences): a large segment's first sync and a daily sync of a
thousand changes, against the fake Graph API (tests/fake_meta.py) running in a process of its own.

    .venv/bin/python -m bench.audiences --subscribers 100000 --db postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.audiences --subscribers 100000 --db sqlite:////tmp/bench-audiences.sqlite3

One shop with N subscribed subscribers in one segment ("US"), built first (not timed). Timed, through
`tasks.run_sync` (the job's own code):

- first sync: the audience is created and every member added (N / 10,000 add requests);
- daily sync: `--changes` people changed since (half left the segment, half joined), the segment rebuilt (not
  timed), then the sync: one remove and one add request;
- a sync with nothing changed: no request at all.

Figures: wall milliseconds, this process's CPU milliseconds (the fake's work is in its own process), requests
made, and the peak of Python's traced memory during each sync (tracemalloc, in a second run of each, so the
tracing does not slow the timed one): it stays flat whatever N, bounded by the batch (10,000) and the read chunk.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import tracemalloc
from pathlib import Path

from sqlalchemy import insert, select, update

from bench.segments import analyze, bench_database
from kinnekt.db import Base, utcnow


def _serve(queue) -> None:
    from tests.fake_meta import FakeMeta
    fake = FakeMeta().start()
    queue.put(fake.url)
    while True:
        time.sleep(3600)


def _phone(i: int) -> str:
    return f"+1{200 + i // 10_000_000 % 700}{i % 10_000_000:07d}"


def _measure(fn) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = fn()
    return {"ms": round((time.perf_counter() - wall) * 1000), "cpu_ms": round((time.process_time() - cpu) * 1000),
            "outcome": outcome}


def _traced(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return round(tracemalloc.get_traced_memory()[1] / 1_048_576, 1)
    finally:
        tracemalloc.stop()


def run(args) -> dict:
    """Make the shop and the fake, time the syncs; returns the figures."""
    from kinnekt import create_app
    from kinnekt.audiences import connections, tasks
    from kinnekt.config import config_for_tests
    from kinnekt.models import AdConnection, AudienceLink, AudienceMember, Segment, Shop, Subscriber
    from kinnekt.segments import membership
    from tests.fake_meta import APP_ID, APP_SECRET, VERSION

    import logging
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report: dict = {"subscribers": args.subscribers, "changes": args.changes}
    queue = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(queue,), daemon=True)
    server.start()
    fake_url = queue.get(timeout=60)
    try:
        with bench_database(args.db, args.keep) as (engine, where_label):
            Base.metadata.create_all(engine)
            report["database"] = f"{engine.dialect.name} {'.'.join(map(str, engine.dialect.server_version_info or ()))}"
            print(f"# {report['database']} — {where_label}", flush=True)
            app = create_app(config_for_tests(
                DATABASE_URL=engine.url.render_as_string(hide_password=False), META_APP_ID=APP_ID,
                META_APP_SECRET=APP_SECRET, META_API_VERSION=VERSION, META_GRAPH_URL=fake_url,
                META_DIALOG_URL=fake_url))
            with app.app_context():
                from kinnekt.db import Session as session
                shop = Shop(domain="bench.myshopify.com", name="Bench", timezone="America/New_York", currency="USD",
                            installed_at=utcnow())
                session.add(shop)
                session.commit()
                now = utcnow()
                for start in range(0, args.subscribers, 20_000):
                    session.execute(insert(Subscriber), [
                        {"shop_id": shop.id, "phone": _phone(i), "status": "subscribed", "source": "import",
                         "country": "US", "subscribed_at": now, "created_at": now, "updated_at": now}
                        for i in range(start, min(args.subscribers, start + 20_000))])
                    session.commit()
                segment = Segment(shop_id=shop.id, name="US", kind="manual",
                                  definition={"match": "all", "rules": [{"field": "country", "op": "in",
                                                                         "value": ["US"]}]})
                session.add(segment)
                session.commit()
                membership.build(session, segment.id)
                analyze(engine)
                connections.save_grant(session, shop.id, "meta", connections.Granted(
                    _token(fake_url), None, None, [{"id": "111", "name": "Bench"}]))
                connection = session.scalar(select(AdConnection))
                queue_stub(app)
                report["load_before"] = os.getloadavg()[0]

                def sync(link_id):
                    outcome = tasks.run_sync(session, link_id)
                    session.expire_all()
                    link = session.get(AudienceLink, link_id)
                    return {"outcome": outcome, "requests": link.last_requests, "added": link.last_added,
                            "removed": link.last_removed, "members": link.member_count}

                link = connections.add_link(session, connection, segment)
                first = _measure(lambda: sync(link.id))
                report["first_sync"] = first
                print(f"  first sync: {first}", flush=True)
                # the daily change: half leave, half join
                leave = args.changes // 2
                ids = session.scalars(select(Subscriber.id).order_by(Subscriber.id).limit(leave)).all()
                session.execute(update(Subscriber).where(Subscriber.id.in_(ids)).values(country="CA"))
                session.execute(insert(Subscriber), [
                    {"shop_id": shop.id, "phone": _phone(args.subscribers + i), "status": "subscribed",
                     "source": "import", "country": "US", "subscribed_at": now, "created_at": now, "updated_at": now}
                    for i in range(args.changes - leave)])
                session.commit()
                membership.build(session, segment.id)
                daily = _measure(lambda: sync(link.id))
                report["daily_sync"] = daily
                print(f"  daily sync: {daily}", flush=True)
                unchanged = _measure(lambda: sync(link.id))
                report["unchanged_sync"] = unchanged
                print(f"  unchanged: {unchanged}", flush=True)
                report["load_after"] = os.getloadavg()[0]
                # Memory, in second runs with tracemalloc on: a new link's first sync, then the same daily change.
                second = connections.add_link(session, connection, _copy(session, segment, Segment))
                membership.build(session, second.segment_id)
                report["first_sync_peak_traced_mb"] = _traced(lambda: sync(second.id))
                session.execute(update(Subscriber).where(Subscriber.id.in_(ids)).values(country="US"))
                session.commit()
                membership.build(session, second.segment_id)
                report["daily_sync_peak_traced_mb"] = _traced(lambda: sync(second.id))
                report["synced_rows"] = session.query(AudienceMember).count()
                print(f"  peak traced memory: first {report['first_sync_peak_traced_mb']} MB, daily "
                      f"{report['daily_sync_peak_traced_mb']} MB", flush=True)
                session.remove()
    finally:
        server.kill()
    return report


def _copy(session, segment, model):
    copy = model(shop_id=segment.shop_id, name="US (second)", kind="manual", definition=segment.definition)
    session.add(copy)
    session.commit()
    return copy


def _token(fake_url: str) -> str:
    """A long-lived token from the fake, through its own login endpoints (code, then exchange)."""
    import httpx

    from tests.fake_meta import APP_ID, APP_SECRET, VERSION
    redirect = "https://bench.invalid/callback"
    answer = httpx.get(f"{fake_url}/{VERSION}/dialog/oauth", params={"redirect_uri": redirect, "state": "s"})
    code = answer.headers["Location"].split("code=")[1].split("&")[0]
    short = httpx.get(f"{fake_url}/{VERSION}/oauth/access_token", params={
        "client_id": APP_ID, "client_secret": APP_SECRET, "redirect_uri": redirect, "code": code}).json()
    return httpx.get(f"{fake_url}/{VERSION}/oauth/access_token", params={
        "grant_type": "fb_exchange_token", "client_id": APP_ID, "client_secret": APP_SECRET,
        "fb_exchange_token": short["access_token"]}).json()["access_token"]


def queue_stub(app) -> None:
    """Jobs the syncs would queue (none in this run) are dropped: the bench calls the sync itself."""
    from kinnekt import queue

    class Dropped:
        mode = "dropped"

        def enqueue(self, *args, **kwargs):
            return None

        enqueue_in = enqueue_at = enqueue

    app.extensions["kinnekt_queue"] = queue._queue = Dropped()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.audiences", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=1_000, help="people changed before the daily sync")
    parser.add_argument("--db", default=os.environ.get("BENCH_DATABASE_URL", "sqlite:////tmp/bench-audiences.sqlite3"))
    parser.add_argument("--keep", action="store_true", help="keep the schema / file afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
