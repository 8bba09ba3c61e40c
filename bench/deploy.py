"""What the whole-deployment benchmarks (campaigns, mixed, opt_out, webhooks) share: a PostgreSQL schema of
their own, waiting for gunicorn to listen, and leaving nothing behind."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass


@dataclass
class BenchSchema:
    """A schema of the bench's own in DATABASE_URL's database, and the URLs that use it."""

    base_url: str
    redis_url: str
    name: str
    url: str
    """DATABASE_URL with the schema as its search path (for the app, its workers and gunicorn)."""
    admin: object
    """An engine on the database itself, which created the schema and drops it."""


def create_schema(prefix: str, bench: str) -> BenchSchema | None:
    """A new schema `prefix_xxxxxxxx` in DATABASE_URL (default: the local test database); None, said on stderr,
    when DATABASE_URL is not PostgreSQL (the benches measure the production setup)."""
    from sqlalchemy import create_engine, text

    from kinnekt import db as kdb
    base_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    if not base_url.startswith("postgres"):
        print(f"{bench} runs on PostgreSQL only (DATABASE_URL)", file=sys.stderr)
        return None
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{name}"
    admin = create_engine(kdb.make_engine_url(base_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    return BenchSchema(base_url, redis_url, name, url, admin)


def drop_schema(schema: BenchSchema, *, keep: bool = False) -> None:
    """Close this process's connections to the schema and drop it (unless `keep`, to look at it afterwards)."""
    from sqlalchemy import text

    from kinnekt import db as kdb
    kdb.Session.remove()
    if kdb._engine is not None:
        kdb._engine.dispose()
    if not keep:
        with schema.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE'))
    schema.admin.dispose()


def wait_for_port(port: int, server: subprocess.Popen | None = None, seconds: float = 30) -> None:
    """Return once 127.0.0.1:`port` accepts connections; RuntimeError after `seconds` or if `server` exited."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or (server is not None and server.poll() is not None):
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.2)


def send_now(app, shop_id: int, segment_id: int, name: str, body: str) -> int:
    """Save and schedule a Send now campaign of `body` to one segment, as the composer does; returns its id."""
    from kinnekt import db as kdb
    from kinnekt.campaigns import lifecycle
    from kinnekt.models import Shop
    with app.app_context():
        shop = kdb.Session.get(Shop, shop_id)
        campaign = lifecycle.save(kdb.Session, shop, {
            "name": name, "body": body, "include_segment_ids": [segment_id], "send_now": True, "send_at": None,
            "discount_mode": "none"})
        lifecycle.schedule(kdb.Session, campaign)
        campaign_id = campaign.id
        kdb.Session.remove()
    return campaign_id
