"""The demo store (`flask demo seed|run`): a deterministic, realistic apparel shop ("Northwind Outfitters") with
two years of history. `seed`, `is_seeded`, `clear` and `rebase_links` are what the CLI calls; the store is built
part by part (kinnekt/demo/store.py and the modules it names) and written in a few bulk statements."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import inspect, select

from kinnekt.campaigns import links
from kinnekt.db import Base
from kinnekt.demo.data import AUTO_SEGMENTS, MANUAL_SEGMENTS, SHOP_NAME, UTC
from kinnekt.demo.rebase import rebase_links
from kinnekt.demo.store import _DemoStore
from kinnekt.models import Shop
from kinnekt.models.subscriber_key import before_deleting_subscribers

__all__ = ["AUTO_SEGMENTS", "MANUAL_SEGMENTS", "SHOP_NAME", "clear", "is_seeded", "rebase_links", "seed"]


def is_seeded(session, domain: str) -> bool:
    """True when a demo shop with this domain exists (seeding commits once, so it is complete)."""
    found = session.execute(select(Shop.id).where(Shop.domain == domain, Shop.is_demo.is_(True))).first()
    return found is not None


def clear(session, domain: str) -> bool:
    """Delete a demo shop and every row it owns; False when there is no such demo shop. Commits."""
    shop_id = session.execute(select(Shop.id).where(Shop.domain == domain, Shop.is_demo.is_(True))).scalar()
    if shop_id is None:
        return False
    before_deleting_subscribers(session, shop_id)  # before any row lock: see models/subscriber_key.py
    # Children first: cascades would work too, but SQLite checks unindexed FKs row by row on a cascade.
    for table in reversed(Base.metadata.sorted_tables):
        if "shop_id" in table.c:
            session.execute(table.delete().where(table.c.shop_id == shop_id).execution_options(all_shops=True))
    session.execute(Shop.__table__.delete().where(Shop.__table__.c.id == shop_id))
    session.commit()
    # The session may still hold loaded objects of the deleted rows, and SQLite reuses ids: drop them.
    # (Expired ones are harmless: they reload by primary key.) No attribute access, so nothing reloads here.
    for obj in list(session.identity_map.values()):
        state = inspect(obj)
        if (isinstance(obj, Shop) and state.identity == (shop_id,)) or state.dict.get("shop_id") == shop_id:
            session.expunge(obj)
    return True


def seed(session, *, domain: str = "kinnekt-demo.myshopify.com", now: dt.datetime, customers: int = 3000,
         seed: int = 20261122, link_base: str | None = None) -> Shop:
    """Create the demo shop with its catalog, customers, orders, subscribers, segments and campaigns, and its
    customers' lifecycle stages; commits, then gathers the planner's statistics (kinnekt/db_statistics.py).

    The same arguments always give the same rows: every random choice comes from `random.Random` seeded with
    `seed`, and every time is relative to `now` (an aware datetime). Short links in the seeded texts live under
    `link_base` (default: the app's public URL, as links.short_url makes them), so they open in the demo.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if session.execute(select(Shop.id).where(Shop.domain == domain)).first() is not None:
        raise ValueError(f"a shop with domain {domain!r} already exists")
    store = _DemoStore(domain, now.astimezone(UTC), customers, seed)
    store.link_base = (link_base if link_base is not None else links.public_base()).rstrip("/") + "/r/"
    store.build()
    shop = store.write(session)
    from kinnekt.demo.billing import seed_billing
    seed_billing(session, shop, now.astimezone(UTC))  # its test plan and this period's usage
    from kinnekt.segments import lifecycle
    # Stages and expected next orders once, as the daily job would; no segment reads them yet (the demo's own
    # segments are built after seeding), so no re-check is queued.
    lifecycle.update_shop(session, shop, now=now, recheck=False)
    from kinnekt import db_statistics
    db_statistics.analyze(session)  # thousands of rows just arrived: the planner needs to know (SQLite never asks)
    return shop
