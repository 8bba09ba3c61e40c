"""Benchmark of reading a large Shopify customer segment (kinnekt/shopify/customer_segments.refresh) and of mirroring
a segment into a Shopify customer tag (kinnekt/shopify/tag_mirror.sync), against the test suite's fake Shopify.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.shopify_segments
    .venv/bin/python -m bench.shopify_segments --members 100000 --changes 1000 --tagged 2000

One shop, one Shopify segment of `--members` customers (read through a members query: above 10,000), of which
`--tagged` are also customers here with a subscriber; then `--changes` members are swapped and the segment read
again (the daily case: the stored difference and the re-check of the changed customers' subscribers against a
segment using the rule); then that segment (its `--tagged` members) is mirrored into a tag from nothing, and again
after the swap. Figures: wall and CPU seconds, GraphQL requests made, and the growth of this process's RSS.
The database is a fresh schema (PostgreSQL, DATABASE_URL) or SQLite file, dropped at the end.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from kinnekt import create_app, defaults, queue
from kinnekt.db import Base, Session, utcnow
from kinnekt.models import Customer, Segment, Subscriber
from kinnekt.segments import membership
from kinnekt.shopify import customer_segments, tag_mirror
from tests.conftest import config_for_tests, fresh_database, make_shop
from tests.fake_shopify import FakeShopify, connect
from tests.helpers import RecordingQueue


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(fake: FakeShopify, step) -> dict:
    before_calls, before_rss = len(fake.log), rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    result = step()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "requests": len(fake.log) - before_calls, "rss_growth_mb": rss_mb() - before_rss, "result": result}


def run(args) -> list[tuple[str, dict]]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(Path(tmp), "bench_shopify_segments") as url:
        app = create_app(config_for_tests(DATABASE_URL=url))
        # Jobs are recorded, not run: the bench calls the steps itself (a queued sync would race it for the mirror).
        app.extensions["kinnekt_queue"].stop()
        app.extensions["kinnekt_queue"] = queue._queue = RecordingQueue()
        from kinnekt import db as kdb
        Base.metadata.create_all(kdb.engine())
        fake = FakeShopify(app.config["SHOPIFY_API_KEY"], app.config["SHOPIFY_API_SECRET"]).start()
        app.config["SHOPIFY_BASE_URL_OVERRIDE"] = fake.url
        defaults.SHOPIFY_SEGMENT_QUERY_POLL_SECONDS = 0.05
        rows = []
        try:
            with app.app_context():
                shop = make_shop()
                connect(fake, shop)
                remote = fake.shop(shop.domain)
                members = list(range(1, args.members + 1))
                remote.add_segment("Everyone who ordered", members, segment_id=77)
                tagged = members[:args.tagged]
                Session.execute(insert(Customer), [{"shop_id": shop.id, "shopify_id": c, "created_at": utcnow(),
                                                    "updated_at": utcnow()} for c in tagged])
                Session.commit()
                ids = dict(Session.execute(Customer.__table__.select().with_only_columns(
                    Customer.shopify_id, Customer.id)).all())
                Session.execute(insert(Subscriber), [
                    {"shop_id": shop.id, "phone": f"+1212{c:07d}", "status": "subscribed", "source": "manual",
                     "customer_id": ids[c], "subscribed_at": utcnow(), "created_at": utcnow(),
                     "updated_at": utcnow()} for c in tagged])
                Session.commit()
                for customer_id in tagged:
                    remote.add_customer(customer_id=customer_id)
                rows.append(("first read", measured(fake, lambda: customer_segments.refresh(Session, shop))))
                segment = Segment(shop_id=shop.id, name="Shopify everyone",
                                  definition={"match": "all", "rules": [
                                      {"field": "shopify_segment", "op": "in", "value": "77"}]})
                Session.add(segment)
                Session.commit()
                membership.build(Session, segment.id)
                half = args.changes // 2
                # Swap: `half` tagged customers leave, `half` outsiders come in, and as many the other way round.
                remote.segments[77]["members"] = members[half:] + list(range(10**9, 10**9 + half))
                rows.append(("read with changes", measured(fake, lambda: customer_segments.refresh(Session, shop))))
                remote.segments[77]["members"] = members
                customer_segments.refresh(Session, shop)
                tag_mirror.configure(Session, segment, enabled=True, tag="everyone")
                rows.append(("tag mirror, first sync", measured(
                    fake, lambda: tag_mirror.sync(Session, shop, segment.id))))
                remote.segments[77]["members"] = members[half:]
                customer_segments.refresh(Session, shop)
                rows.append(("tag mirror after leaves", measured(
                    fake, lambda: tag_mirror.sync(Session, shop, segment.id))))
                Session.remove()
        finally:
            fake.stop()
            kdb.engine().dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=1_000)
    parser.add_argument("--tagged", type=int, default=2_000)
    args = parser.parse_args()
    rows = run(args)
    print("| step | wall s | CPU s | requests | RSS growth MB | result |")
    print("|---|---:|---:|---:|---:|---|")
    for name, row in rows:
        print(f"| {name} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['requests']} | "
              f"{row['rss_growth_mb']:.0f} | {row['result']} |")


if __name__ == "__main__":
    main()
