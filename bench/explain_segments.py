"""`python -m bench.explain_segments`: EXPLAIN (ANALYZE, BUFFERS) of the bench's previews on a kept PostgreSQL schema.

    python -m bench.segments --subscribers 100000 --db postgresql://postgres@127.0.0.1:5432/test --keep ...
    python -m bench.explain_segments --db postgresql://postgres@127.0.0.1:5432/test \
        --schema bench_segments_1234abcd [--plans] [bought_products order_trouble ...]

For each of the representative definitions of `bench/segments.py` (all six, or those named), runs the compiled
preview (`compiler.count`'s statement) and the hand-written query (bench/handwritten_segments.py) under
`EXPLAIN (ANALYZE, BUFFERS)` and prints the figures a loaded machine does not change: the rows the plan's scans
read (each leaf node's rows returned and removed by its filter, × loops, summed) and the shared buffers it
touched (hit + read), beside its execution time (which the load does change). `--plans` also prints both plans
as text; `--without-indexes` explains them as they ran before issue 22's indexes.

`--time N` times the previews as bench.segments does (compiler.count, with the settings it makes, alternating with
the hand-written query), on the kept schema, without generating a shop again.

`--ab N` then times both queries N times with and without the indexes issue 22 added (`ISSUE_22_INDEXES`,
dropped inside a transaction that is rolled back, in turn with each run), so that before and after are measured
alternately, at the same load; medians of the wall time and of the CPU time (this process's and, when PostgreSQL
runs on this machine, its backend's, from /proc; `--serial` turns parallel workers off so that it is all the
work), which a loaded machine changes much less.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from sqlalchemy import func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from bench import handwritten_segments
from bench.segment_data import NOW
from bench.segments import representative
from kinnekt.db import make_engine
from kinnekt.models import CollectionProduct, Product, Shop
from kinnekt.segments.compiler import compile_definition, count

ISSUE_22_INDEXES = ("ix_orders_counted_created", "ix_orders_financial_status", "ix_orders_cancelled",
                    "ix_line_items_counted_product", "ix_line_items_counted_price", "ix_subscribers_segment_candidates")
"""The partial covering indexes for segment rules (kinnekt/models/order.py and subscriber.py, migration 0027)."""


class _Explain(Executable, ClauseElement):
    """EXPLAIN (options) of a statement, its parameters bound as in the real run."""

    inherit_cache = False

    def __init__(self, statement, options: str):
        self.statement, self.options = statement, options


@compiles(_Explain, "postgresql")
def _explain_sql(element: _Explain, compiler, **kw) -> str:
    return f"EXPLAIN ({element.options}) " + compiler.process(element.statement, **kw)


def _leaves(plan: dict):
    children = plan.get("Plans") or []
    if not children:
        yield plan
    for child in children:
        yield from _leaves(child)


def figures(session: Session, statement, params: dict | None = None) -> dict:
    """Execution time, rows returned by the plan's scans and shared buffers touched, of one run of the statement."""
    if isinstance(statement, str) or hasattr(statement, "text"):
        raw = session.scalar(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement.text}")
                             .bindparams(*statement._bindparams.values()), params or {})
    else:
        raw = session.scalar(_Explain(statement, "ANALYZE, BUFFERS, FORMAT JSON"))
    result = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    plan = result["Plan"]
    return {"ms": result["Execution Time"], "planning_ms": result["Planning Time"],
            "scanned_rows": sum(round((leaf["Actual Rows"] + leaf.get("Rows Removed by Filter", 0)
                                       + leaf.get("Rows Removed by Index Recheck", 0)) * leaf["Actual Loops"])
                                for leaf in _leaves(plan)),
            "buffers": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
            "result": int(plan["Actual Rows"])}


def plan_text(session: Session, statement, params: dict | None = None) -> str:
    """The plan of one run as EXPLAIN's text."""
    if hasattr(statement, "text"):
        rows = session.scalars(text(f"EXPLAIN (ANALYZE, BUFFERS) {statement.text}")
                               .bindparams(*statement._bindparams.values()), params or {})
    else:
        rows = session.scalars(_Explain(statement, "ANALYZE, BUFFERS"))
    return "\n".join(rows)


def _ms(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


def _cpu_ns(pid: int) -> int:
    """Nanoseconds a (local) process has run on a CPU (/proc/<pid>/schedstat, Linux): what the load does not change."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def before_and_after(session: Session, definition: dict, shop: Shop, hand, params: dict, runs: int) -> dict:
    """Medians of the preview and the hand-written query with the issue-22 indexes and without them, alternating:
    wall ms, and CPU ms (this process's, compiling and reading the answer, plus the database backend's, when the
    database runs on this machine; parallel workers' are not counted, see --serial). Stops if any count differs."""
    backend = session.scalar(text("SELECT pg_backend_pid()"))
    try:
        _cpu_ns(backend)
    except OSError:
        backend = None
    times: dict[str, list] = {}
    expected = None

    def measure(key: str, fn, *args, **kwargs):
        cpu, client = (_cpu_ns(backend) if backend else 0), time.process_time_ns()
        ms, result = _ms(fn, *args, **kwargs)
        cpu = (_cpu_ns(backend) - cpu if backend else 0) + time.process_time_ns() - client
        times.setdefault(key, []).append(ms)
        times.setdefault(f"{key}_cpu", []).append(cpu / 1e6)
        return result

    for _ in range(runs):
        for phase in ("after", "before"):
            if phase == "before":
                session.execute(text("SAVEPOINT without_indexes"))
                for index in ISSUE_22_INDEXES:
                    session.execute(text(f'DROP INDEX "{index}"'))
            members = measure(phase, count, session, definition, shop=shop, now=NOW)
            by_hand = measure(f"hand_{phase}", session.scalar, hand, params)
            if phase == "before":
                session.execute(text("ROLLBACK TO SAVEPOINT without_indexes"))
            expected = members if expected is None else expected
            if not members == by_hand == expected:
                raise SystemExit(f"counts differ: {members}, {by_hand}, {expected}")
    return {key: statistics.median(values) for key, values in times.items()}


def timed_previews(session: Session, definition: dict, shop: Shop, hand, params: dict, runs: int) -> dict:
    """Medians of `runs` preview counts (`compiler.count`, which makes its own settings for the transaction) and
    hand-written queries run after them in the same transaction, alternating, after a warm-up of each. Stops if a
    count differs."""
    members = count(session, definition, shop=shop, now=NOW)
    session.scalar(hand, params)
    previews, hands = [], []
    for _ in range(runs):
        ms, counted = _ms(count, session, definition, shop=shop, now=NOW)
        previews.append(ms)
        by_hand_ms, by_hand = _ms(session.scalar, hand, params)
        hands.append(by_hand_ms)
        if not counted == by_hand == members:
            raise SystemExit(f"counts differ: {counted}, {by_hand}, {members}")
    return {"members": members, "preview": statistics.median(previews), "preview_min": min(previews),
            "hand": statistics.median(hands)}


def main(argv: list[str] | None = None) -> int:
    """Explain the named (or all) previews on the kept schema and print one line per query."""
    parser = argparse.ArgumentParser(prog="python -m bench.explain_segments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="postgresql://… of the kept bench schema")
    parser.add_argument("--schema", required=True, help="the schema `bench.segments --keep` printed")
    parser.add_argument("--plans", action="store_true", help="also print the plans")
    parser.add_argument("--ab", type=int, default=0, metavar="N",
                        help="also time N runs each with and without the issue-22 indexes, alternating")
    parser.add_argument("--serial", action="store_true",
                        help="with --ab: no parallel workers, so that the backend's CPU time is all the work")
    parser.add_argument("--without-indexes", action="store_true",
                        help="explain without the issue-22 indexes (dropped in a transaction rolled back at the end)")
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="also time N previews (compiler.count, the settings it makes included) and N "
                             "hand-written queries, alternating, as bench.segments does, on the kept schema")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a PostgreSQL setting for the session, e.g. --set jit=off --set work_mem=64MB")
    parser.add_argument("names", nargs="*", help="definitions (default: all six)")
    args = parser.parse_args(argv)
    sep = "&" if "?" in args.db else "?"
    engine = make_engine(f"{args.db}{sep}options=-csearch_path%3D{args.schema}")
    with Session(engine) as session:
        for setting in args.set:
            name, _, value = setting.partition("=")
            session.execute(select(func.set_config(name, value, False)))
        shop = session.scalars(select(Shop).order_by(Shop.id)).first()
        products = list(session.scalars(select(Product.shopify_id).where(Product.shop_id == shop.id)
                                        .order_by(Product.id)))
        collections = sorted(set(session.scalars(select(CollectionProduct.collection_id)
                                                 .where(CollectionProduct.shop_id == shop.id))))
        definitions = representative(products, collections)
        by_hand = handwritten_segments.queries(shop_id=shop.id, timezone=shop.timezone, now=NOW, products=products,
                                               collections=collections)
        if args.without_indexes:  # as before issue 22 (rolled back at the end)
            for index in ISSUE_22_INDEXES:
                session.execute(text(f'DROP INDEX "{index}"'))
        print("| definition | query | members | scanned rows | shared buffers | execution (planning) |")
        print("|---|---|---:|---:|---:|---:|")
        for name in args.names or list(definitions):
            compiled = compile_definition(definitions[name], shop=shop, now=NOW, session=session)
            counted = select(func.count()).select_from(compiled.subquery())
            hand, params = by_hand[name]
            members = session.scalar(counted)
            for label, statement, bound in (("compiled", counted, None), ("hand-written", hand, params)):
                figures(session, statement, bound)  # warm-up: the same cache state for both
                f = figures(session, statement, bound)
                print(f"| {name} | {label} | {members:,} | {f['scanned_rows']:,} | {f['buffers']:,} | "
                      f"{f['ms']:.1f} ms ({f['planning_ms']:.1f}) |", flush=True)
                if args.plans:
                    print(plan_text(session, statement, bound), flush=True)
        if args.ab:
            if args.serial:
                session.execute(text("SET max_parallel_workers_per_gather = 0"))
            print()
            print(f"Median of {args.ab} runs each, alternating{', serial plans' if args.serial else ''}; CPU = this "
                  "process + the database backend")
            print()
            print("| definition | preview without → with the indexes | CPU | hand-written without → with | CPU | "
                  "preview / hand-written with |")
            print("|---|---:|---:|---:|---:|---:|")
            for name in args.names or list(definitions):
                hand, params = by_hand[name]
                m = before_and_after(session, definitions[name], shop, hand, params, args.ab)
                print(f"| {name} | {m['before']:.1f} → {m['after']:.1f} ms | {m['before_cpu']:.1f} → "
                      f"{m['after_cpu']:.1f} ms | {m['hand_before']:.1f} → {m['hand_after']:.1f} ms | "
                      f"{m['hand_before_cpu']:.1f} → {m['hand_after_cpu']:.1f} ms | "
                      f"{m['after'] / m['hand_after']:.2f}× |", flush=True)
        if args.time:
            session.rollback()  # what --set or the explains left behind is gone: count() makes its own settings
            print()
            print(f"Median of {args.time} runs each, alternating, as bench.segments times previews")
            print()
            print("| definition | members | preview median (min) | hand-written SQL median | preview / hand-written |")
            print("|---|---:|---:|---:|---:|")
            for name in args.names or list(definitions):
                hand, params = by_hand[name]
                m = timed_previews(session, definitions[name], shop, hand, params, args.time)
                print(f"| {name} | {m['members']:,} | {m['preview']:.1f} ms ({m['preview_min']:.1f}) | "
                      f"{m['hand']:.1f} ms | {m['preview'] / m['hand']:.2f}× |", flush=True)
        session.rollback()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
