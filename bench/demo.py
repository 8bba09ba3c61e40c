"""`python -m bench.demo`: server time of every page of the demo's navigation and of every segment preview, on the
demo store in SQLite, as `make run` serves it.

    python -m bench.demo                                   # a new /tmp/bench-demo-<random>.sqlite3, 3,000 customers
    python -m bench.demo --drop-statistics                 # the same without planner statistics (as before ANALYZE)

The bench creates the app in demo mode (KINNEKT_DEMO=1, no Redis: the in-process queue), migrates a new SQLite file
and seeds the demo store (`kinnekt.demo.seed`, as `flask demo seed` does; it ends with ANALYZE), answers one
request so that the start-up jobs run (recovery, the statistics refresh), and waits for the queue to be idle.
Then, `--runs` times after one warm-up round, it requests every page in turn through the WSGI app in this process
(Flask's test client: server time, without network or browser):

- each entry of the navigation (segments, where the home page redirects, lists, campaigns, flows, subscribers,
  keywords, settings with the two cards it loads, the Outbox) and each "new" form;
- each page one click away: every editable segment's builder, every campaign's detail page (and the editable
  ones' form), every flow's page and editor, every keyword's page, the first subscribers of the list;
- every segment's live preview (`POST /segments/preview` with the form its builder posts), and the preview of
  one rule of each field of the segment contract (`field_definitions`), as a newcomer tries them in the builder.

Each figure is the median (p50) and 95th percentile (p95, interpolated) of its runs, in milliseconds, beside its
target (pages 150 ms, previews 50 ms). `--drop-statistics` deletes sqlite_stat1's rows before timing, as the
store was before statistics were gathered. The file is deleted at the end (`--keep` leaves it for EXPLAIN).
The machine's load average is printed before and after: quote it with the figures.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path

TARGETS_MS = {"page": 150, "preview": 50}
"""Server time targets of issue 20 for the demo store (p95 of each page and of each preview)."""

SUBSCRIBER_PAGES = 5
"""Subscriber detail pages timed: the first of the list (the rest look the same)."""


def _app(db_url: str):
    """The demo app as `make run` builds it: demo mode, SQLite, the in-process queue."""
    for name in ("REDIS_URL", "SHOPIFY_API_SECRET", "SHOPIFY_API_KEY"):
        os.environ.pop(name, None)
    os.environ.update(KINNEKT_DEMO="1", DATABASE_URL=db_url, LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"))
    from kinnekt import create_app
    return create_app()


def _seed(app, customers: int) -> float:
    from kinnekt import demo, migrate
    from kinnekt.db import Session
    started = time.monotonic()
    with app.app_context():
        migrate.upgrade(app.config["DATABASE_URL"])
        today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        demo.seed(Session, domain=app.config["DEMO_SHOP_DOMAIN"], now=today, customers=customers)
        Session.remove()
    return time.monotonic() - started


def _rule(field: str, op: str, value=None, **extras) -> dict:
    return {"match": "all", "rules": [{"field": field, "op": op, **({} if value is None else {"value": value}),
                                       **extras}]}


def field_definitions(product: int, collection: int, segment_id: int) -> dict[str, dict]:
    """One definition per field of the segment contract (and the date operators that compile differently), with
    values the demo store has: what a newcomer's first try of each rule in the builder previews."""
    definitions = {
        f"{field} more than 90 days ago": _rule(field, "more_than_days_ago", 90)
        for field in ("last_order_created", "first_order_created", "customer_created", "subscribed_at",
                      "last_received_sms", "last_clicked")}
    definitions.update({
        "last_order_created in the last 30 days": _rule("last_order_created", "within_last_days", 30),
        "last_order_created never": _rule("last_order_created", "never"),
        "last_clicked in the last 30 days (period)": _rule("last_clicked", "eq", "last_30_days"),
        "money_spent over 200": _rule("money_spent", "gt", 200),
        "average_money_spent over 80": _rule("average_money_spent", "gt", 80),
        "total_discounts over 0": _rule("total_discounts", "gt", 0),
        "number_of_orders at least 2": _rule("number_of_orders", "gte", 2),
        "sent_count between 2 and 4": _rule("sent_count", "between", [2, 4]),
        "clicks_count at least 1": _rule("clicks_count", "gte", 1),
        "subscription_source checkout": _rule("subscription_source", "eq", "checkout"),
        "keyword JOIN": _rule("keyword", "eq", "JOIN"),
        "country in US, CA": _rule("country", "in", ["US", "CA"]),
        "carrier not Verizon": _rule("carrier", "neq", "Verizon"),
        "city New York": _rule("city", "eq", "New York"),
        "tags contains vip": _rule("tags", "contains", "vip"),
        "fulfillment_status fulfilled": _rule("fulfillment_status", "eq", "fulfilled"),
        "payment_status refunded": _rule("payment_status", "eq", "refunded"),
        "order_cancelled yes": _rule("order_cancelled", "eq", "yes"),
        "ordered_product (best seller)": _rule("ordered_product", "eq", [str(product)]),
        "not ordered_product (best seller)": _rule("ordered_product", "neq", [str(product)]),
        "ordered_collection": _rule("ordered_collection", "eq", [str(collection)]),
        "line item price over 100": _rule("line_items", "gt", 100, attribute="price"),
        "line item title contains Linen": _rule("line_items", "contains", "Linen", attribute="product_title"),
        "placed 2 orders in the last 90 days": _rule("event", "performed", event="placed_order",
                                                      within="last_90_days", at_least=2),
        "started a checkout in the last 7 days": _rule("event", "performed", event="started_checkout",
                                                        within="last_7_days"),
        "no click in the last 30 days": _rule("event", "not_performed", event="clicked_link", within="last_30_days"),
        "in segment Loyal but inactive": _rule("segment", "in", segment_id),
    })
    return definitions


def _requests(app) -> list[tuple[str, str, str, object]]:
    """(kind, label, path, form or None) for every page and preview timed."""
    from sqlalchemy import func, select

    from kinnekt import shops
    from kinnekt.db import Session
    from kinnekt.models import Campaign, Collection, Flow, Keyword, LineItem, Segment, Subscriber
    from kinnekt.segments import rules
    from kinnekt.web import segment_form
    from kinnekt.web.templating import NAV
    with app.app_context():
        shop = shops.by_domain(app.config["DEMO_SHOP_DOMAIN"])
        with app.test_request_context():
            from flask import url_for
            pages = [("page", label, url_for(endpoint), None) for endpoint, label in NAV]
            pages += [("page", "Settings: popup card (htmx)", url_for("signup_settings.popup_card"), HTMX),
                      ("page", "Settings: share card (htmx)", url_for("signup_settings.share_card"), HTMX),
                      ("page", "Outbox", url_for("outbox.index"), None),
                      ("page", "Lists", url_for("lists.index"), None)]
            pages += [("page", f"{name}: new", url_for(f"{name}.new"), None)
                      for name in ("segments", "campaigns", "flows", "keywords", "subscribers")]
            pages.append(("page", "subscribers: import", url_for("subscribers.import_form"), None))
            segments = Session.scalars(select(Segment).where(Segment.shop_id == shop.id).order_by(Segment.id)).all()
            previews = []
            for segment in segments:
                if segment.kind == "manual":
                    pages.append(("page", f"segment builder: {segment.name}",
                                  url_for("segments.edit", segment_id=segment.id), None))
                form = segment_form.form_data(segment_form.definition_to_tree(segment.definition), segment.name)
                if segment.kind == "manual":
                    form.append(("segment_id", str(segment.id)))
                previews.append(("preview", f"preview: {segment.name}", url_for("segments.preview"), form))
            loyal = next(s.id for s in segments if s.kind == "manual")
            best_product = Session.scalar(select(LineItem.product_id).where(LineItem.shop_id == shop.id)
                                          .group_by(LineItem.product_id).order_by(func.count().desc()).limit(1))
            collection = Session.scalar(select(Collection.shopify_id).where(Collection.shop_id == shop.id)
                                        .order_by(Collection.id).limit(1))
            for label, definition in field_definitions(best_product, collection, loyal).items():
                try:
                    rules.validate(definition, shop_id=shop.id, session=Session)
                except rules.DefinitionError as exc:
                    raise SystemExit(f"bench definition {label!r} is invalid: {exc}") from None
                form = segment_form.form_data(segment_form.definition_to_tree(definition), label)
                previews.append(("preview", f"rule preview: {label}", url_for("segments.preview"), form))
            for campaign in Session.scalars(select(Campaign).where(Campaign.shop_id == shop.id,
                                                                   Campaign.kind == "campaign")
                                            .order_by(Campaign.id)):
                pages.append(("page", f"campaign: {campaign.name}",
                              url_for("campaigns.detail", campaign_id=campaign.id), None))
                if campaign.status in ("draft", "scheduled"):
                    pages.append(("page", f"campaign form: {campaign.name}",
                                  url_for("campaigns.edit", campaign_id=campaign.id), None))
            for flow in Session.scalars(select(Flow).where(Flow.shop_id == shop.id).order_by(Flow.id)):
                pages.append(("page", f"flow: {flow.name}", url_for("flows.detail", flow_id=flow.id), None))
                pages.append(("page", f"flow editor: {flow.name}", url_for("flows.edit", flow_id=flow.id), None))
            for keyword in Session.scalars(select(Keyword).where(Keyword.shop_id == shop.id).order_by(Keyword.id)):
                pages.append(("page", f"keyword: {keyword.word}", url_for("keywords.edit", keyword_id=keyword.id),
                              None))
            first = Session.scalars(select(Subscriber.id).where(Subscriber.shop_id == shop.id)
                                    .order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
                                    .limit(SUBSCRIBER_PAGES)).all()
            pages += [("page", f"subscriber {number}", url_for("subscribers.detail", subscriber_id=sub_id), None)
                      for number, sub_id in enumerate(first, 1)]
        Session.remove()
    return pages + previews


HTMX = {"HX-Request": "true"}
"""A GET of a partial the page loads itself (hx-trigger="load") is a dict of headers in place of a form."""


def _call(client, path: str, form) -> float:
    started = time.perf_counter()
    if isinstance(form, dict):
        response = client.get(path, headers=form)
    elif form is not None:
        from werkzeug.datastructures import MultiDict
        response = client.post(path, data=MultiDict(form), headers=HTMX)
    else:
        response = client.get(path)
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{path}: HTTP {response.status_code}")
    return took


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run(args) -> dict:
    """Seed, warm up, time every request `args.runs` times; the report."""
    path = Path(args.db) if args.db else Path(f"/tmp/bench-demo-{uuid.uuid4().hex[:8]}.sqlite3")
    if path.exists():
        raise SystemExit(f"{path} exists: give a new file")
    app = _app(f"sqlite:///{path}")
    report: dict = {"db": str(path), "customers": args.customers, "runs": args.runs,
                    "statistics": "dropped" if args.drop_statistics else "gathered", "targets_ms": TARGETS_MS}
    try:
        report["seed_s"] = round(_seed(app, args.customers), 2)
        client = app.test_client()
        _call(client, "/segments/", None)  # the first request starts the in-process queue's start-up jobs
        if not app.extensions["kinnekt_queue"].drain(120):
            raise SystemExit("the start-up jobs did not finish in 120 s")
        from kinnekt.db import Session
        with app.app_context():
            from sqlalchemy import func, select, text

            from kinnekt.models import Customer, Subscriber
            report["subscribers"] = Session.scalar(select(func.count()).select_from(Subscriber))
            report["customers_rows"] = Session.scalar(select(func.count()).select_from(Customer))
            if args.drop_statistics:
                Session.execute(text("DELETE FROM sqlite_stat1"))
                Session.commit()
            Session.remove()
        from kinnekt.db import engine
        engine().dispose()  # every connection opens anew, and reads sqlite_stat1 as it now is
        requests = _requests(app)
        for _kind, _label, target, form in requests:  # warm-up: templates compiled, caches filled
            _call(client, target, form)
        times: dict[str, list[float]] = {label: [] for _kind, label, _path, _form in requests}
        report["load_before"] = os.getloadavg()
        for _ in range(args.runs):
            for _kind, label, target, form in requests:
                times[label].append(_call(client, target, form))
        report["load_after"] = os.getloadavg()
        rows = []
        for kind, label, target, _form in requests:
            p50, p95 = _percentile(times[label], .5), _percentile(times[label], .95)
            rows.append({"kind": kind, "label": label, "path": target, "p50_ms": round(p50, 1),
                         "p95_ms": round(p95, 1), "max_ms": round(max(times[label]), 1),
                         "target_ms": TARGETS_MS[kind], "meets": p95 <= TARGETS_MS[kind]})
        report["rows"] = rows
        app.extensions["kinnekt_queue"].stop()
    finally:
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return report


def markdown(report: dict) -> str:
    """The report as a Markdown table (slowest p95 first within pages, then previews)."""
    lines = [f"Demo store on SQLite: {report['customers_rows']} customers, {report['subscribers']} subscribers; "
             f"statistics {report['statistics']}; seeded in {report['seed_s']} s; {report['runs']} runs each; "
             f"load average {report['load_before'][0]:.2f} before, {report['load_after'][0]:.2f} after.", "",
             "| request | p50 ms | p95 ms | max ms | target ms | |", "|---|---:|---:|---:|---:|---|"]
    for kind in ("page", "preview"):
        for row in sorted((r for r in report["rows"] if r["kind"] == kind), key=lambda r: -r["p95_ms"]):
            lines.append(f"| {row['label']} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} | "
                         f"{row['target_ms']} | {'ok' if row['meets'] else 'MISSES'} |")
    pages = [r for r in report["rows"] if r["kind"] == "page"]
    previews = [r for r in report["rows"] if r["kind"] == "preview"]
    lines += ["", f"{sum(r['meets'] for r in pages)} of {len(pages)} pages and {sum(r['meets'] for r in previews)} "
                  f"of {len(previews)} previews meet their target (p95)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run, print the table and the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a new SQLite file (default: /tmp/bench-demo-<random>.sqlite3)")
    parser.add_argument("--customers", type=int, default=3000, help="the demo store's customers (as `make run`)")
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each request after one warm-up")
    parser.add_argument("--drop-statistics", action="store_true", help="time without sqlite_stat1 (as before)")
    parser.add_argument("--keep", action="store_true", help="leave the SQLite file in place")
    parser.add_argument("--json", help="write the report as JSON to this file too")
    args = parser.parse_args(argv)
    from bench.output import emit, machine
    load = os.getloadavg()
    report = run(args)
    report["machine"] = machine(load)
    print(markdown(report))
    print()
    emit(report, args.json)
    return 0 if all(r["meets"] for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
