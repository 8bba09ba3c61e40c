"""`python -m bench.flows`: 20,000 flow runs falling due at once in a shop of 100,000 subscribers.

    .venv/bin/python -m bench.flows                                   # 100,000 subscribers, 20,000 due
    .venv/bin/python -m bench.flows --subscribers 5000 --due 1000 --waiting 1000    # a smoke run

PostgreSQL only (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test), in a schema of its own dropped
at the end (--keep leaves it). The shop is seeded with set-based INSERT ... SELECT over generate_series: --subscribers
subscribers (90% with a customer and one past order, zones spread over five time zones), the built-in abandoned
checkout flow switched on (wait 30 minutes, text the recovery link, wait 24 hours, text a unique code; exits on an
order or unsubscribing), a checkout per run, --due runs standing at the first text whose 30 minutes are over (a bulk
of abandoned checkouts), and --waiting runs still inside their 24-hour wait, of which --changed had an order placed
or unsubscribed since (they must leave the flow).

Timed, through the real code: `engine.enter` (the flows job's entries; "left the segment" exits), the exits job's
`engine.exit_subscribers` for the --changed re-checked subscribers, then `engine.advance` batch after batch until
no run is due, as the flows job `run_flows(shop_id)` does. For comparison, the exit check of every waiting run
(what each flows job did before) is timed once and rolled back. "Handed to the sender" means each run's message
row committed, pending and due now, and the sender of its campaign queued (`campaigns.tasks.enqueue_senders`,
recorded here instead of queued: the send itself, its rate and exactly-once guarantee are the campaigns' and
measured by `bench.campaigns`). The run checks: every due run moved past its send step, one message per run (no
duplicate occurrence), the changed waiting runs exited and no other. Quiet hours are off for the shop (a run
inside them is deferred, not handed over; the bench measures the hand-over).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import sessionmaker

from bench.output import emit, machine
from bench.segments import bench_database
from kinnekt.db import Base
from kinnekt.flows import engine as flow_engine
from kinnekt.flows import service
from kinnekt.models import Flow, FlowRun, FlowStep, Message, Shop
from kinnekt.models.flow import RunState

TARGET_S = 60.0


def insert_series(conn, table: str, count: int, values: dict[str, str], params: dict | None = None) -> None:
    """INSERT INTO table SELECT ... FROM generate_series(1, count) AS g: `values` are SQL expressions over g; the
    table's other NOT NULL columns with a Python default get that default."""
    columns = Base.metadata.tables[table].columns
    names, exprs, binds, types = list(values), list(values.values()), dict(params or {}), []
    for column in columns:
        if column.name in values or column.nullable or column.primary_key or column.default is None:
            continue
        default = column.default.arg
        value = default(None) if callable(default) else default
        names.append(column.name)
        exprs.append(f":d_{column.name}")
        binds[f"d_{column.name}"] = value
        types.append(bindparam(f"d_{column.name}", type_=column.type))
    conn.execute(text(f'INSERT INTO "{table}" ({", ".join(names)}) SELECT {", ".join(exprs)} '
                      f"FROM generate_series(1, {int(count)}) AS g").bindparams(*types), binds)


def seed(engine, args, now: dt.datetime) -> dict:
    """The shop, its subscribers, customers, orders, the flow and its runs; returns the ids the run needs."""
    Session = sessionmaker(bind=engine, expire_on_commit=False)
    session = Session()
    shop = Shop(domain="bench-flows.myshopify.com", name="Bench", timezone="America/New_York",
                installed_at=now - dt.timedelta(days=400), quiet_hours_enabled=False)
    session.add(shop)
    session.commit()
    flow = service.add_builtin(session, shop, "abandoned_checkout")
    service.set_status(session, flow, True, now=now - dt.timedelta(days=2))
    steps = session.scalars(select(FlowStep).where(FlowStep.flow_id == flow.id).order_by(FlowStep.position)).all()
    first_send, second_wait = steps[1], steps[2]
    n, due, waiting, changed = args.subscribers, args.due, args.waiting, args.changed
    if due + waiting > n * 9 // 10:
        raise SystemExit("--due + --waiting must not exceed 90% of --subscribers (the buyers)")
    params = {"shop": shop.id, "now": now, "old": now - dt.timedelta(days=200)}
    zones = "(ARRAY['America/New_York','America/Chicago','America/Denver','America/Los_Angeles','Europe/London'])"
    with engine.begin() as conn:
        insert_series(conn, "customers", n * 9 // 10, {
            "shop_id": ":shop", "shopify_id": "g", "phone": "'+1555' || lpad(g::text, 7, '0')",
            "first_name": "'Ana' || g"}, params)
        insert_series(conn, "subscribers", n, {
            "shop_id": ":shop", "phone": "'+1555' || lpad(g::text, 7, '0')", "status": "'subscribed'",
            "source": "'checkout'", "first_name": "'Ana' || g", "subscribed_at": ":old",
            "timezone": f"{zones}[1 + g % 5]",
            "customer_id": f"CASE WHEN g <= {n * 9 // 10} THEN (SELECT min(id) FROM customers) + g - 1 END"}, params)
        insert_series(conn, "orders", n * 9 // 10, {
            "shop_id": ":shop", "shopify_id": "g", "name": "'#' || g",
            "customer_id": "(SELECT min(id) FROM customers) + g - 1", "created_at": ":old", "updated_at": ":old",
            "total_price": "42.00"}, params)
        # A checkout per run: the first `due` subscribers abandoned one 31 minutes ago, the next `waiting` 3 hours ago.
        insert_series(conn, "checkouts", due + waiting, {
            "shop_id": ":shop", "token": "'tok' || g",
            "customer_id": f"CASE WHEN g <= {n * 9 // 10} THEN (SELECT min(id) FROM customers) + g - 1 END",
            "phone": "'+1555' || lpad(g::text, 7, '0')",
            "started_at": f"CASE WHEN g <= {due} THEN :now - interval '31 minutes' ELSE :now - interval '3 hours' END",
            "updated_at": f"CASE WHEN g <= {due} THEN :now - interval '31 minutes' ELSE :now - interval '3 hours' END",
            "recovery_url": "'https://bench-flows.myshopify.com/recover/' || g"}, params)
        run_params = dict(params, flow=flow.id, version=flow.version, send=first_send.id, wait=second_wait.id)
        insert_series(conn, "flow_runs", due + waiting, {
            "shop_id": ":shop", "flow_id": ":flow", "version": ":version", "state": "'active'",
            "subscriber_id": "(SELECT min(id) FROM subscribers) + g - 1",
            "current_step_id": f"CASE WHEN g <= {due} THEN :send ELSE :wait END",
            "due_at": f"CASE WHEN g <= {due} THEN :now - interval '1 minute' ELSE :now + interval '21 hours' END",
            "trigger_key": "'checkout:tok' || g", "checkout_token": "'tok' || g",
            "started_at": f"CASE WHEN g <= {due} THEN :now - interval '31 minutes' ELSE :now - interval '3 hours' END",
            "orders_since": f"CASE WHEN g <= {due} THEN :now - interval '32 minutes' "
                            "ELSE :now - interval '3 hours' END",
        }, run_params)
        # Of the waiting runs, `changed` changed since the last scan: half placed an order, half unsubscribed.
        first_waiting = due + 1
        half = changed // 2
        insert_series(conn, "orders", half, {
            "shop_id": ":shop", "shopify_id": f"{n} + g", "name": "'#new' || g",
            "customer_id": f"(SELECT min(id) FROM customers) + {first_waiting} + g - 2",
            "created_at": ":now - interval '1 minute'", "updated_at": ":now - interval '1 minute'",
            "total_price": "42.00"}, params)
        conn.execute(text(
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = :now - interval '1 minute', "
            "updated_at = :now - interval '1 minute' WHERE shop_id = :shop AND phone IN "
            f"(SELECT '+1555' || lpad(({first_waiting} + {half} + g - 1)::text, 7, '0') "
            f"FROM generate_series(1, {changed - half}) AS g)"), params)
        conn.execute(text("INSERT INTO subscription_events (shop_id, subscriber_id, kind, at, source) "
                          "SELECT shop_id, id, 'unsubscribed', unsubscribed_at, 'sms' FROM subscribers "
                          "WHERE shop_id = :shop AND status = 'unsubscribed'"), params)
        conn.execute(text("UPDATE flows SET scanned_through = :now - interval '2 minutes' WHERE id = :flow"),
                     run_params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("customers", "subscribers", "orders", "checkouts", "flow_runs", "subscription_events",
                      "flows", "flow_steps"):
            conn.execute(text(f'VACUUM (ANALYZE) "{table}"'))
    session.close()
    return {"shop_id": shop.id, "flow_id": flow.id, "send_step": first_send.id, "campaign_id": first_send.campaign_id}


def run(args) -> dict:
    """Seed, time the flows job's work, check the outcome; returns the report."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    report: dict = {"subscribers": args.subscribers, "due": args.due, "waiting": args.waiting,
                    "changed": args.changed, "batch": args.batch}
    load_before = os.getloadavg()
    with bench_database(args.db, args.keep) as (engine, where):
        Base.metadata.create_all(engine)
        started = time.perf_counter()
        ids = seed(engine, args, now)
        report["seed_s"] = round(time.perf_counter() - started, 1)
        print(f"# seeded in {report['seed_s']} s ({where})", flush=True)

        queued: list[int] = []
        original = flow_engine.campaign_tasks.enqueue_senders
        flow_engine.campaign_tasks.enqueue_senders = lambda campaign_id, **_: queued.append(campaign_id)
        session = sessionmaker(bind=engine, expire_on_commit=False)()
        try:
            # For comparison: the exit check of every waiting run, as each flows job did before (rolled back).
            flow = session.get(Flow, ids["flow_id"])
            tick = time.perf_counter()
            all_exits = len(flow_engine._apply_exits(session, flow, [FlowRun.flow_id == flow.id], now))
            all_exits_s = time.perf_counter() - tick
            session.rollback()
            changed_ids = list(session.scalars(text(
                "SELECT DISTINCT s.id FROM subscribers s LEFT JOIN orders o ON o.customer_id = s.customer_id "
                "AND o.created_at > :since WHERE s.shop_id = :shop AND (o.id IS NOT NULL OR s.status <> 'subscribed')"),
                {"shop": ids["shop_id"], "since": now - dt.timedelta(minutes=10)}))
            session.commit()

            load_start = os.getloadavg()
            clock = time.perf_counter()
            entered = flow_engine.enter(session, ids["shop_id"], now=now)
            enter_s = time.perf_counter() - clock
            tick = time.perf_counter()  # the exits job: the re-checked subscribers' waiting runs
            exited = flow_engine.exit_subscribers(session, ids["shop_id"], changed_ids, now=now)
            exits_s = time.perf_counter() - tick
            batches, advanced, sent, batch_times = 0, 0, 0, []
            while True:
                tick = time.perf_counter()
                result = flow_engine.advance(session, ids["shop_id"], now=now, limit=args.batch)
                if not result.runs:
                    break
                batch_times.append(time.perf_counter() - tick)
                batches, advanced, sent = batches + 1, advanced + result.runs, sent + result.sent
            total_s = time.perf_counter() - clock
            load_end = os.getloadavg()
        finally:
            flow_engine.campaign_tasks.enqueue_senders = original
        # Checks.
        messages = session.execute(select(func.count(), func.count(func.distinct(Message.occurrence))).where(
            Message.campaign_id == ids["campaign_id"], Message.status == "pending")).one()
        states = dict(session.execute(select(FlowRun.state, func.count()).where(FlowRun.flow_id == ids["flow_id"])
                                      .group_by(FlowRun.state)).all())
        still_at_send = session.scalar(select(func.count()).where(
            FlowRun.flow_id == ids["flow_id"], FlowRun.current_step_id == ids["send_step"],
            FlowRun.state == RunState.ACTIVE))
        assert session.get(Flow, ids["flow_id"]) is not None
        ok = (messages[0] == args.due and messages[1] == args.due and still_at_send == 0
              and states.get(RunState.EXITED, 0) == args.changed and ids["campaign_id"] in queued)
        report.update({
            "entered": entered, "enter_s": round(enter_s, 3), "exits_job_s": round(exits_s, 3),
            "exits_job_exited": exited, "all_waiting_exit_check_s": round(all_exits_s, 3),
            "all_waiting_exit_check_exited": all_exits, "advanced": advanced, "messages": sent,
            "batches": batches, "slowest_batch_s": round(max(batch_times or [0]), 2),
            "median_batch_s": round(sorted(batch_times)[len(batch_times) // 2], 2) if batch_times else 0,
            "total_s": round(total_s, 2), "target_s": TARGET_S, "messages_pending": messages[0],
            "distinct_occurrences": messages[1], "runs_by_state": states, "still_at_send_step": still_at_send,
            "senders_queued": len(queued), "checks_ok": ok,
            "load_during": [round(x, 2) for x in load_start] + [round(x, 2) for x in load_end],
            "machine": machine(load_before)})
        session.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print the report; exit 1 when a check fails or the target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=20_000, help="runs due at once at a send step (20000)")
    parser.add_argument("--waiting", type=int, default=30_000, help="runs inside a wait, not due (30000)")
    parser.add_argument("--changed", type=int, default=600,
                        help="of the waiting runs, those with an order or an unsubscribe since the last scan (600)")
    parser.add_argument("--batch", type=int, default=None, help="runs per batch (default FLOW_RUN_BATCH)")
    parser.add_argument("--db", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if not args.db.startswith("postgresql"):
        raise SystemExit("bench.flows runs on PostgreSQL")
    report = run(args)
    emit(report, args.json)
    return 0 if report["checks_ok"] and report["total_s"] <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
