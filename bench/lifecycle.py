"""Benchmark of the customer lifecycle's daily run: set-based in SQL (kinnekt/segments/lifecycle.update_shop)
against the run as it was, every customer loaded into Python (bench/naive_lifecycle.py), on one large shop.

    .venv/bin/python -m bench.lifecycle --subscribers 111112 --db postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python -m bench.lifecycle --subscribers 111112 --db sqlite:////tmp/bench-lifecycle.sqlite3

The shop is bench/segment_data.py's (90% of subscribers linked to a customer with about 3.3 orders each, so
111,112 subscribers make about 100,000 customers). Each way is timed from no stages (every customer with an
order changes: the first run after install) and again with nothing changed (an ordinary day), `--runs` times
each; the two ways must store the same stage, previous stage and expected next order for every customer, or
the run stops. Figures: milliseconds, and the growth of this process's memory during the run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from bench import naive_lifecycle
from bench.segment_data import NOW, generate
from bench.segments import analyze, bench_database, rss_mb, timed
from kinnekt.db import Base
from kinnekt.models import Customer, Shop

WAYS = {"sql": lambda session, shop: __import__("kinnekt.segments.lifecycle", fromlist=["update_shop"]).update_shop(
            session, shop, now=NOW, recheck=False),
        "python": lambda session, shop: naive_lifecycle.update_shop(session, shop, now=NOW, recheck=False)}


def _reset(session, shop_id: int) -> None:
    """No stages and no expected next orders: the state before the first daily run."""
    session.execute(update(Customer).where(Customer.shop_id == shop_id).values(
        lifecycle_stage=None, lifecycle_previous_stage=None, lifecycle_changed_at=None, expected_next_order_at=None))
    session.commit()


def _stored(session, shop_id: int) -> dict:
    return {row[0]: tuple(row[1:]) for row in session.execute(select(
        Customer.id, Customer.lifecycle_stage, Customer.lifecycle_previous_stage, Customer.lifecycle_changed_at,
        Customer.expected_next_order_at).where(Customer.shop_id == shop_id))}


def run(args) -> dict:
    """Make the shop, time both ways, check they agree; returns the figures."""
    report: dict = {"subscribers": args.subscribers, "runs": args.runs}
    with bench_database(args.db, args.keep) as (engine, where_label):
        Base.metadata.create_all(engine)
        report["database"] = f"{engine.dialect.name} {'.'.join(map(str, engine.dialect.server_version_info or ()))}"
        print(f"# {report['database']} — {where_label}", flush=True)
        ms, shop = timed(generate, engine, args.subscribers, seed=args.seed)
        analyze(engine)
        Session = sessionmaker(bind=engine, expire_on_commit=False)
        session = Session()
        try:
            shop_row = session.get(Shop, shop.shop_id)
            report["customers"] = session.scalar(select(func.count()).select_from(Customer))
            report["orders"] = shop.rows.get("orders")
            print(f"  {report['customers']:,} customers, {report['orders']:,} orders (generated in "
                  f"{ms / 1000:.0f} s)", flush=True)
            report["load_before"] = os.getloadavg()[0]
            stored = {}
            for name, way in WAYS.items():
                first, again, growth = [], [], []
                for _ in range(args.runs):
                    _reset(session, shop.shop_id)
                    rss = rss_mb()
                    ms, result = timed(way, session, shop_row)
                    growth.append(rss_mb() - rss)
                    first.append(ms)
                    ms, unchanged = timed(way, session, shop_row)
                    again.append(ms)
                    assert unchanged.stage_changes == unchanged.expected_changes == 0, name
                stored[name] = _stored(session, shop.shop_id)
                report[name] = {"first_run_ms": statistics.median(first), "unchanged_run_ms": statistics.median(again),
                                "rss_growth_mb": round(max(growth), 1), "stage_changes": result.stage_changes,
                                "expected_changes": result.expected_changes, "rechecked": len(result.rechecked)}
                print(f"  {name}: first run {report[name]['first_run_ms']:.0f} ms, unchanged "
                      f"{report[name]['unchanged_run_ms']:.0f} ms, memory +{report[name]['rss_growth_mb']} MB "
                      f"({result.stage_changes:,} stages, {result.expected_changes:,} expected orders set)", flush=True)
            # changed_at is each run's NOW alike; every stored figure must agree.
            if stored["sql"] != stored["python"]:
                differing = [i for i in stored["sql"] if stored["sql"][i] != stored["python"].get(i)]
                raise SystemExit(f"the two ways disagree on {len(differing)} customers, e.g. {differing[:5]}")
            report["load_after"] = os.getloadavg()[0]
        finally:
            session.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=111_112, help="subscribers (0.9 customers each)")
    parser.add_argument("--db", default=os.environ.get("BENCH_DATABASE_URL", "sqlite:////tmp/bench-lifecycle.sqlite3"))
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each way (default 3)")
    parser.add_argument("--seed", type=int, default=7)
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
