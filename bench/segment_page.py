"""`python -m bench.segment_page`: how fast the segment page reads a segment with a long enter/leave log.

    python -m bench.segment_page --db postgresql://postgres@127.0.0.1:5432/test
    python -m bench.segment_page --db sqlite:////tmp/bench-segment-page.sqlite3

One shop of --subscribers subscribers (the demo store's size by default; a quarter linked to a customer with a
name), one segment whose log holds --entries entries spread over them, a year of daily counts; then, through
the real code (kinnekt.segments.history), the median of --runs runs of: the log's first page, a deep page, the
Entered filter, a name search and a phone search, the count history of the chart, and the newest members.
The database is a schema / file of its own, dropped at the end (bench/segments.py's bench_database).
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import sys

from sqlalchemy import insert, select
from sqlalchemy.orm import sessionmaker

from bench.segments import analyze, bench_database, timed
from kinnekt.db import Base
from kinnekt.models import Customer, Segment, SegmentCount, SegmentEvent, SegmentMember, Shop, Subscriber
from kinnekt.segments import history

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
NAMES = ("Gabriel", "Ada", "Bob", "Noah", "Mei", "Olivia", "Liam", "Emma")


def load(session, subscribers: int, entries: int, seed: int) -> Segment:
    """The shop, its subscribers, one segment with `entries` log entries, its members and a year of counts."""
    rng = random.Random(seed)
    shop = Shop(domain="bench-segment-page.myshopify.com", name="Bench", timezone="America/New_York")
    session.add(shop)
    session.flush()
    customers = [{"shop_id": shop.id, "shopify_id": i + 1, "first_name": rng.choice(NAMES), "last_name": f"Smith{i}"}
                 for i in range(subscribers // 4)]
    session.execute(insert(Customer), customers)
    customer_ids = list(session.scalars(select(Customer.id).order_by(Customer.id)))
    session.execute(insert(Subscriber), [
        {"shop_id": shop.id, "phone": f"+1212{5550000 + i:07d}", "status": "subscribed", "source": "manual",
         "first_name": None if i < len(customer_ids) else rng.choice(NAMES),
         "customer_id": customer_ids[i] if i < len(customer_ids) else None} for i in range(subscribers)])
    ids = list(session.scalars(select(Subscriber.id).order_by(Subscriber.id)))
    segment = Segment(shop_id=shop.id, name="Busy", definition={"match": "all", "rules": [
        {"field": "subscription_source", "op": "eq", "value": "all"}]}, member_count=len(ids) // 2)
    session.add(segment)
    session.flush()
    inside: set[int] = set()
    rows = []
    for n in range(entries):
        who = rng.choice(ids)
        kind = "leave" if who in inside else "enter"
        (inside.discard if kind == "leave" else inside.add)(who)
        rows.append({"shop_id": shop.id, "segment_id": segment.id, "subscriber_id": who, "kind": kind,
                     "at": NOW - dt.timedelta(seconds=(entries - n) * 60), "cause": rng.choice(("recheck", "sweep"))})
    for start in range(0, len(rows), 50_000):
        session.execute(insert(SegmentEvent), rows[start:start + 50_000])
    session.execute(insert(SegmentMember), [{"shop_id": shop.id, "segment_id": segment.id, "subscriber_id": s,
                                             "entered_at": NOW} for s in sorted(inside)])
    session.execute(insert(SegmentCount), [
        {"shop_id": shop.id, "segment_id": segment.id, "day": (NOW - dt.timedelta(days=d)).date(),
         "member_count": rng.randint(0, subscribers), "at": NOW} for d in range(365)])
    session.commit()
    return segment


def run(args) -> list[tuple[str, float, str]]:
    """Make the database, take the measurements, clean up; returns (what, median ms, result) rows."""
    figures = []
    with bench_database(args.db, keep=False) as (engine, where):
        print(f"database: {where}", file=sys.stderr)
        Base.metadata.create_all(engine)
        session = sessionmaker(bind=engine)()
        try:
            segment = load(session, args.subscribers, args.entries, args.seed)
            analyze(engine)
            last_page = -(-args.entries // history.LOG_PAGE_SIZE)
            cases = [
                ("log, first page", lambda: history.log_page(session, segment)),
                (f"log, page {last_page // 2:,} (OFFSET {last_page // 2 * history.LOG_PAGE_SIZE:,})",
                 lambda: history.log_page(session, segment, page=last_page // 2)),
                ("log, Entered only, page 100", lambda: history.log_page(session, segment, kind="enter", page=100)),
                ("log, search “gab” (names)", lambda: history.log_page(session, segment, query="gab")),
                ("log, search “555001” (phones), Left", lambda: history.log_page(session, segment, query="555001",
                                                                                kind="leave")),
                ("count history (90 days)", lambda: history.count_history(session, segment, timezone="America/New_York",
                                                                         now=NOW)),
                ("newest members", lambda: history.member_sample(session, segment)),
            ]
            for what, call in cases:
                call()  # warm-up
                times, result = [], None
                for _ in range(args.runs):
                    ms, result = timed(call)
                    times.append(ms)
                shown = (f"{result.total:,} entries" if isinstance(result, history.LogSlice)
                         else f"{len(result.t) if hasattr(result, 't') else len(result)} rows")
                figures.append((what, statistics.median(times), shown))
            session.rollback()
        finally:
            session.close()  # else its open transaction blocks dropping the schema
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True,
                        help="postgresql://… (a schema is made and dropped) or sqlite:///<new file>")
    parser.add_argument("--subscribers", type=int, default=1_650)
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    figures = run(args)
    print(f"Segment page, {args.subscribers:,} subscribers, {args.entries:,} log entries in one segment "
          f"({platform.python_implementation()} {platform.python_version()}, {args.db.split(':')[0]}):\n")
    print("| read | median ms | result |\n|---|---:|---|")
    for what, ms, shown in figures:
        print(f"| {what} | {ms:.1f} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
