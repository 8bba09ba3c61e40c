"""`python -m bench.demo_seed [--runs N]`: the CPU and wall time of seeding the demo store (`kinnekt.demo.seed`, 3,000
customers) into a new SQLite file, as `make run` does on its first start, with the flows, runs and messages it
wrote and the machine's load (CPU time is what to compare on a shared machine)."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time


def seed_once(customers: int) -> str:
    """Seed a new SQLite file once; the figures as one line."""
    path = tempfile.mktemp(suffix=".sqlite3", prefix="bench-demo-seed-")
    for name in ("REDIS_URL", "SHOPIFY_API_SECRET", "SHOPIFY_API_KEY"):
        os.environ.pop(name, None)
    os.environ.update(KINNEKT_DEMO="1", DATABASE_URL=f"sqlite:///{path}", LOG_LEVEL="WARNING")
    from sqlalchemy import text

    from kinnekt import create_app, demo, migrate
    from kinnekt.db import Session
    app = create_app()
    try:
        with app.app_context():
            migrate.upgrade(app.config["DATABASE_URL"])
            today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            cpu, wall = time.process_time(), time.monotonic()
            demo.seed(Session, domain=app.config["DEMO_SHOP_DOMAIN"], now=today, customers=customers)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            counts = {table: Session.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                      for table in ("flows", "flow_runs", "messages")}
            Session.remove()
    finally:
        os.unlink(path)
    return f"seed cpu {cpu:.2f} s, wall {wall:.2f} s, {counts}, load {os.getloadavg()[0]:.1f}"


def main() -> None:
    """Seed `--runs` times (a new process's imports are warm after the first) and print each run's figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--customers", type=int, default=3000)
    args = parser.parse_args()
    for _ in range(args.runs):
        print(seed_once(args.customers), flush=True)


if __name__ == "__main__":
    main()
