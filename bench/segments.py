"""`python -m bench.segments`: how fast segments preview, rebuild and re-check on a generated shop.

    python -m bench.segments --subscribers 100000 --db postgresql://postgres@127.0.0.1:5432/test
    python -m bench.segments --subscribers 100000 --db sqlite:////tmp/bench-segments.sqlite3

On PostgreSQL the shop goes into a schema of its own, on SQLite into a new file; both are dropped at
the end (--keep leaves them). Measured, all through the real code (kinnekt.segments):

- preview: `compiler.count` of six representative definitions (median and min of --runs runs, after a
  warm-up run), as the builder's live count does it; alternating with a hand-written SQL query per definition
  (bench/handwritten_segments.py, median of the same runs), whose counts must equal the compiled ones, and the
  ratio compiled / hand-written (the robust figure on a shared machine); and the same count in the
  compiler's PROBE shape (correlated EXISTS, what every preview ran before the SET shape; median of
  --probe-runs runs), whose counts must equal the SET ones;
- rebuild: `membership.build` of each of them, from empty (every member enters) and again with
  nothing changed (the steady-state rebuild the sweep does);
- re-check: `membership.recheck` of one subscriber (whose spend just changed) across the shop's 30
  segments, median and 95th percentile of --rechecks runs;
- naive: the same six definitions evaluated in Python over rows loaded from the database
  (bench/naive_segments.py), with the load time, and the ratio to the SQL preview. The naive counts
  must equal the SQL counts; the run fails otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from bench import handwritten_segments, naive_segments
from bench.segment_data import NOW, generate
from kinnekt.db import Base, make_engine
from kinnekt.models import Customer, Segment, Shop, Subscriber
from kinnekt.segments import lifecycle, membership
from kinnekt.segments.compiler import PROBE, count, plan_for_sets
from kinnekt.segments.rules import has_relative_time, normalise

TARGETS_MS = {"preview": 100, "rebuild": 2000, "recheck": 20}
"""Targets at 100k subscribers on PostgreSQL (issue 22: previews under 100 ms); printed beside the figures."""


def rule(field, op, value=None, **extras) -> dict:
    out = {"field": field, "op": op, **extras}
    if value is not None:
        out["value"] = value
    return out


def where(*rules, match="all") -> dict:
    return {"match": match, "rules": list(rules)}


def representative(products: list[int], collections: list[int]) -> dict[str, dict]:
    """Six definitions covering fact columns, order-level EXISTS, counted events, tags and nested groups."""
    return {
        "recent_spenders": where(rule("last_order_created", "eq", "last_30_days"), rule("money_spent", "gt", 25)),
        "loyal_inactive": where(rule("money_spent", "gt", 1000), rule("last_order_created", "more_than_days_ago", 90)),
        "bought_products": where(rule("ordered_product", "eq", [str(p) for p in (products[10], products[50],
                                                                                   products[120])]),
                                 rule("ordered_collection", "eq", [str(collections[3])]), match="any"),
        "repeat_buyers_90d": where(rule("event", "performed", event="placed_order", within="last_90_days",
                                        at_least=2)),
        "engaged_not_vip": where(rule("clicks_count", "gte", 1), rule("country", "in", ["US", "CA"]),
                                 rule("tags", "not_contains", "vip")),
        "order_trouble": where(where(rule("payment_status", "eq", "unpaid"), rule("order_cancelled", "eq", "yes"),
                                     match="any"),
                               rule("line_items", "gt", 100, attribute="price")),
    }


def others(first: int, second: int) -> dict[str, dict]:
    """Twenty-four more, so the shop has the 30 segments a re-check goes through (the two on profile properties, the
    four lifecycle and discount ones of issue 22 and the four browsing ones of issue 23 came after the figures of
    docs/benchmarks.md, which were measured with 20)."""
    return {
        "all_subscribers": where(rule("subscription_source", "eq", "all")),
        "mobile_popup": where(rule("subscription_source", "eq", "mobile_popup")),
        "checkout_source": where(rule("subscription_source", "eq", "checkout")),
        "keyword_sale": where(rule("keyword", "eq", "SALE")),
        "three_plus_orders": where(rule("number_of_orders", "gte", 3)),
        "high_average": where(rule("average_money_spent", "gt", 80)),
        "texted_once_never_clicked": where(rule("sent_count", "eq", 1), rule("clicks_count", "eq", 0)),
        "clicked_not_texted_30d": where(rule("clicks_count", "gte", 1),
                                        rule("last_received_sms", "more_than_days_ago", 30)),
        "new_this_week": where(rule("subscribed_at", "eq", "last_7_days")),
        "unfulfilled": where(rule("fulfillment_status", "eq", "unfulfilled")),
        "abandoned_checkout_7d": where(rule("event", "performed", event="started_checkout", within="last_7_days")),
        "new_york": where(rule("city", "eq", "New York")),
        "hoodie_buyers": where(rule("line_items", "contains", "hoodie", attribute="product_title")),
        "spenders_not_loyal": where(rule("segment", "in", first), rule("segment", "not_in", second)),
        "birthday_this_week": where(rule("property", "anniversary_next_days", 7, attribute="birthday")),
        "german_speakers": where(rule("property", "eq", "de", attribute="language")),
        # Browsing rules (issue 23), on the storefront events of bench/segment_data.py.
        "viewed_not_ordered_7d": where(rule("event", "performed", event="viewed_product", within={"last_days": 7},
                                            not_followed_by="placed_order")),
        "carted_no_checkout_7d": where(rule("event", "performed", event="added_to_cart", within={"last_days": 7},
                                            not_followed_by="started_checkout")),
        "visited_3_times_30d": where(rule("event", "performed", event="visited", within="last_30_days", at_least=3)),
        "lapsed_visitors": where(rule("last_visit", "more_than_days_ago", 14)),
        # Issue 22's lifecycle and discount rules (stages set by the daily run after the data is made).
        "loyal_customers": where(rule("lifecycle_stage", "eq", "loyal")),
        "churn_risk": where(rule("lifecycle_stage", "eq", "dormant"), rule("previous_lifecycle_stage", "eq", "loyal")),
        "order_overdue": where(rule("lifecycle_stage", "in", ["loyal", "high_potential"]),
                               rule("expected_next_order", "more_than_days_ago", 14)),
        "code_not_used": where(rule("event", "performed", event="received_discount", within={"last_days": 7}),
                               rule("event", "not_performed", event="used_discount", within={"last_days": 7})),
    }


# ---------------------------------------------------------------------------------------------- database

@contextlib.contextmanager
def bench_database(url: str, keep: bool):
    """An engine on an empty database of the bench's own: a new PostgreSQL schema, or a new SQLite file."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        schema = f"bench_segments_{uuid.uuid4().hex[:8]}"
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in url else "?"
        engine = make_engine(f"{url}{sep}options=-csearch_path%3D{schema}")
        try:
            yield engine, f"PostgreSQL schema {schema}"
        finally:
            engine.dispose()
            if keep:
                print(f"kept schema {schema}")
            else:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    elif parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if path.exists():
            raise SystemExit(f"{path} exists: give the name of a new file (the bench deletes it afterwards)")
        engine = make_engine(url)
        try:
            yield engine, f"SQLite file {path}"
        finally:
            engine.dispose()
            if keep:
                print(f"kept {path}")
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        raise SystemExit("--db must be a postgresql:// URL or a sqlite:///<new file> URL")


def analyze(engine) -> None:
    """The steady state of a shop that has been running: statistics fresh and (PostgreSQL) tables vacuumed,
    as autovacuum keeps them, so a background vacuum of the just-loaded rows does not run during the timings."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            for table in Base.metadata.sorted_tables:
                conn.execute(text(f'VACUUM (ANALYZE) "{table.name}"'))
        else:
            conn.execute(text("ANALYZE"))


def rss_mb() -> float:
    """This process's resident memory, in MB (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(milliseconds taken, result) of one call."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------------------------- the run

def run(args) -> dict:
    """Make the database and the shop, take every measurement, clean up; returns the figures."""
    report: dict = {"subscribers": args.subscribers, "runs": args.runs, "probe_runs": args.probe_runs,
                    "rechecks": args.rechecks}
    with bench_database(args.db, args.keep) as (engine, where_label):
        Base.metadata.create_all(engine)
        report["database"] = f"{engine.dialect.name} {'.'.join(map(str, engine.dialect.server_version_info or ()))}"
        print(f"# {report['database']} — {where_label}", flush=True)

        def progress(done):
            print(f"  generated {done:,} / {args.subscribers:,} subscribers", end="\r", flush=True)

        ms, shop = timed(generate, engine, args.subscribers, seed=args.seed, progress=progress)
        analyze(engine)
        report["generate_s"] = round(ms / 1000, 1)
        report["rows"] = shop.rows
        print(f"\n  data: {sum(shop.rows.values()):,} rows in {ms / 1000:.1f} s: "
              + ", ".join(f"{name} {n:,}" for name, n in sorted(shop.rows.items())), flush=True)

        Session = sessionmaker(bind=engine, expire_on_commit=False)
        session = Session()
        try:
            shop_row = session.get(Shop, shop.shop_id)
            ms, _ = timed(lifecycle.update_shop, session, shop_row, now=NOW, recheck=False)  # the daily run's stages
            report["lifecycle_s"] = round(ms / 1000, 1)
            analyze(engine)
            definitions = representative(shop.product_ids, shop.collection_ids)
            segments = {}
            for name, definition in definitions.items():
                segments[name] = _segment(session, shop_row, name, definition)
            for name, definition in others(segments["recent_spenders"].id, segments["loyal_inactive"].id).items():
                segments[name] = _segment(session, shop_row, name, definition)
            assert len(segments) == 30

            # Preview counts.
            report["load_before"] = os.getloadavg()[0]
            rss_before = rss_mb()
            previews = {}
            by_hand = handwritten_segments.queries(shop_id=shop_row.id, timezone=shop_row.timezone, now=NOW,
                                                   products=shop.product_ids, collections=shop.collection_ids)
            plan_for_sets(session)  # the hand-written queries run with the memory the compiler's count asks for
            for name, definition in definitions.items():
                count(session, definition, shop=shop_row, now=NOW)  # warm-up: caches, and the data into memory
                statement, params = by_hand[name]
                session.scalar(statement, params)
                times, hand_times = [], []
                for _ in range(args.runs):  # alternating, so that a change in the machine's load hits both alike
                    ms, members = timed(count, session, definition, shop=shop_row, now=NOW)
                    times.append(ms)
                    ms, by_hand_count = timed(session.scalar, statement, params)
                    hand_times.append(ms)
                    if by_hand_count != members:
                        raise SystemExit(f"the compiled and hand-written queries disagree on {name}: "
                                         f"{members} != {by_hand_count}")
                previews[name] = {"members": members, "median_ms": statistics.median(times), "min_ms": min(times),
                                  "hand_median_ms": statistics.median(hand_times)}
                previews[name]["hand_ratio"] = previews[name]["median_ms"] / previews[name]["hand_median_ms"]
                print(f"  preview {name}: {members:,} members, median {previews[name]['median_ms']:.1f} ms; "
                      f"hand-written SQL {previews[name]['hand_median_ms']:.1f} ms "
                      f"({previews[name]['hand_ratio']:.2f}×)", flush=True)
                if args.probe_runs:
                    probe_times = []
                    for _ in range(args.probe_runs):
                        ms, probed = timed(count, session, definition, shop=shop_row, now=NOW, shape=PROBE)
                        if probed != members:
                            raise SystemExit(f"the SET and PROBE shapes disagree on {name}: {members} != {probed}")
                        probe_times.append(ms)
                    previews[name]["probe_median_ms"] = statistics.median(probe_times)
                    print(f"    in the PROBE shape: median {previews[name]['probe_median_ms']:.1f} ms", flush=True)
            report["preview_rss_growth_mb"] = round(rss_mb() - rss_before, 1)
            session.commit()

            # The other 20 first: a shop that has been running has its segments built (and the first writes
            # after a bulk load pay for setting up pages, which is not what a rebuild costs).
            others_ms = 0.0
            for name, segment in segments.items():
                if name not in definitions:
                    ms, _ = timed(membership.build, session, segment.id, now=NOW)
                    others_ms += ms
            report["build_others_s"] = round(others_ms / 1000, 2)
            # Rebuilds: from empty, then again with nothing changed.
            for name in definitions:
                first_ms, result = timed(membership.build, session, segments[name].id, now=NOW)
                again_ms, again = timed(membership.build, session, segments[name].id, now=NOW)
                assert result.member_count == previews[name]["members"] and again.entered == again.left == 0
                previews[name].update(build_ms=first_ms, rebuild_ms=again_ms)
                print(f"  build {name}: {first_ms:.0f} ms from empty, {again_ms:.0f} ms unchanged", flush=True)
            analyze(engine)  # as autovacuum would after half a million new memberships

            # Re-check one subscriber across the 30 segments, right after its spend changed.
            rng = random.Random(args.seed)
            candidates = session.scalars(select(Subscriber.id).where(
                Subscriber.shop_id == shop.shop_id, Subscriber.status == "subscribed",
                Subscriber.customer_id.is_not(None)).order_by(Subscriber.id)).all()
            recheck_ms, changed = [], 0
            for subscriber_id in rng.sample(candidates, min(args.rechecks, len(candidates))):
                customer_id = session.scalar(select(Subscriber.customer_id).where(Subscriber.id == subscriber_id))
                spent = session.scalar(select(Customer.money_spent).where(Customer.id == customer_id))
                new_spent = 10 if spent > 1000 else 1500
                session.execute(update(Customer).where(Customer.id == customer_id).values(money_spent=new_spent))
                session.commit()
                ms, changes = timed(membership.recheck, session, shop.shop_id, [subscriber_id], now=NOW)
                recheck_ms.append(ms)
                changed += len(changes)
            report["recheck"] = {"segments": len(segments), "median_ms": statistics.median(recheck_ms),
                                 "p95_ms": percentile(recheck_ms, 95), "samples": len(recheck_ms),
                                 "membership_changes": changed}
            print(f"  re-check: median {report['recheck']['median_ms']:.1f} ms over {len(segments)} segments",
                  flush=True)
            total_members = session.scalar(select(func.sum(Segment.member_count)))
            report["materialised_members"] = int(total_members or 0)

            # The naive way.
            if not args.no_naive:
                rss_before = rss_mb()
                load_ms, data = timed(naive_segments.load, session, shop.shop_id)
                report["naive_load_s"] = round(load_ms / 1000, 2)
                report["naive_rss_mb"] = round(rss_mb() - rss_before)
                for name, definition in definitions.items():
                    ms, found = timed(naive_segments.members, data, definition, now=NOW)
                    # The re-checks above changed some spends since the preview: compare with a fresh count.
                    expected = count(session, definition, shop=shop_row, now=NOW)
                    if len(found) != expected:
                        raise SystemExit(f"naive and SQL disagree on {name}: {len(found)} != {expected}")
                    previews[name]["naive_ms"] = ms
                del data
            report["definitions"] = previews
            report["load_after"] = os.getloadavg()[0]
        finally:
            session.close()  # else its open transaction blocks dropping the schema
    return report


def _segment(session, shop: Shop, name: str, definition: dict) -> Segment:
    definition = normalise(definition)
    segment = Segment(shop_id=shop.id, name=name, kind="manual", definition=definition,
                      has_relative_time=has_relative_time(definition, session=session, shop_id=shop.id))
    session.add(segment)
    session.commit()
    return segment


def print_table(report: dict) -> None:
    """The figures as a Markdown table (pasted into docs/benchmarks.md)."""
    print()
    print(f"{report['database']}, {report['subscribers']:,} subscribers, median of {report['runs']} runs")
    print()
    print("| definition | members | preview median (min) | hand-written SQL median | preview / hand-written "
          "| PROBE shape median | build from empty | rebuild unchanged | naive Python | naive / SQL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in report["definitions"].items():
        naive, probe = d.get("naive_ms"), d.get("probe_median_ms")
        print(f"| {name} | {d['members']:,} | {d['median_ms']:.1f} ms ({d['min_ms']:.1f}) | "
              f"{d['hand_median_ms']:.1f} ms | {d['hand_ratio']:.2f}× | "
              + (f"{probe:,.1f} ms | " if probe else "— | ")
              + f"{d['build_ms']:.0f} ms | {d['rebuild_ms']:.0f} ms | "
              + (f"{naive:,.0f} ms | {naive / d['median_ms']:.0f}× |" if naive else "— | — |"))
    r = report["recheck"]
    print()
    print(f"- re-check of one subscriber across {r['segments']} segments: median {r['median_ms']:.1f} ms, "
          f"p95 {r['p95_ms']:.1f} ms ({r['samples']} subscribers, {r['membership_changes']} enters/leaves)")
    print(f"- build of the other {r['segments'] - len(report['definitions'])} segments: "
          f"{report['build_others_s']} s in all; "
          f"{report['materialised_members']:,} materialised memberships")
    print(f"- data generation: {report['generate_s']} s for {sum(report['rows'].values()):,} rows")
    print(f"- machine load average (1 min) when the measurements started / ended: {report['load_before']:.1f} / "
          f"{report['load_after']:.1f} on {os.cpu_count()} CPUs")
    print(f"- memory of this process during the previews: {report['preview_rss_growth_mb']:+.1f} MB")
    if "naive_load_s" in report:
        print(f"- naive: loading the shop's rows took {report['naive_load_s']} s and {report['naive_rss_mb']} MB")
    worst_preview = max(d["median_ms"] for d in report["definitions"].values())
    worst_ratio = max(d["hand_ratio"] for d in report["definitions"].values())
    print(f"- preview / hand-written SQL: worst {worst_ratio:.2f}× (target 1.5×)")
    worst_build = max(max(d["build_ms"], d["rebuild_ms"]) for d in report["definitions"].values())
    print(f"- targets (100k, PostgreSQL): preview < {TARGETS_MS['preview']} ms (worst median {worst_preview:.0f}), "
          f"rebuild < {TARGETS_MS['rebuild']} ms (worst {worst_build:.0f}), "
          f"re-check < {TARGETS_MS['recheck']} ms (median {r['median_ms']:.1f})")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the benchmark, print the table (and write JSON when asked)."""
    parser = argparse.ArgumentParser(prog="python -m bench.segments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000,
                        help="shop size (default 100000; 1000000 on demand)")
    parser.add_argument("--db", default=os.environ.get("BENCH_DATABASE_URL", "sqlite:////tmp/bench-segments.sqlite3"),
                        help="postgresql://… (a schema is made and dropped) or sqlite:///<new file>")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per preview (default 7)")
    parser.add_argument("--probe-runs", type=int, default=3,
                        help="timed runs of each preview in the PROBE shape, for comparison (default 3; 0 skips)")
    parser.add_argument("--rechecks", type=int, default=50, help="subscribers re-checked (default 50)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive Python evaluation (memory hungry)")
    parser.add_argument("--keep", action="store_true", help="keep the schema / file afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    report = run(args)
    report["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python " \
                        f"{platform.python_version()}"
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
