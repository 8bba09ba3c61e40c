"""The web pixel's batches and the shop they go to, shared by bench/pixel.py (over HTTP to gunicorn) and
bench/pixel_cpu.py (through Flask's test client): one builder, so both benches post the same traffic.

One shop with its pixel key; --browsers browsers, a tenth of them signed in as customers linked to subscribers, so
identification and attribution run too. A batch holds `batch` events of one browser (a page's worth:
page_viewed, product_viewed, collection_viewed, product_added_to_cart, search_submitted in turn), each with a fresh
event id, as JSON the way the pixel posts it (`text/plain`).

With `browsing=True` the shop also gets what makes its events matter beyond storage (the set-up the issue's
"re-checks keeping up" is about): two segments with browsing rules ("added to cart at least 3 times in the last
day", "visited in the last 7 days but did not add to cart"), a plain segment, and the ready-made browse
abandonment flow switched on, so each batch of a signed-in shopper queues that subscriber's re-check and the flows'
entry and exit jobs.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import uuid

SHOP = "bench-pixel.myshopify.com"
KEY = "bench-pixel-key-0123456789abcdef"
NAMES = ("page_viewed", "product_viewed", "collection_viewed", "product_added_to_cart", "search_submitted")
CARTED_3 = {"match": "all", "rules": [{"field": "event", "event": "added_to_cart", "op": "performed",
                                       "at_least": 3, "within": {"last_days": 1}}]}
"""The browsing segment whose entries the bench times: a shopper enters at their third add-to-cart of the day."""
BROWSED_NOT_CARTED = {"match": "all", "rules": [
    {"field": "event", "event": "visited", "op": "performed", "within": {"last_days": 7}},
    {"field": "event", "event": "added_to_cart", "op": "not_performed", "within": {"last_days": 7}}]}


def event(name: str, client_id: str, rng: random.Random) -> dict:
    """One storefront event as the pixel sends it (Shopify's shape, slimmed), with a fresh id."""
    product, variant = 7_000_000 + rng.randrange(300), 8_000_000 + rng.randrange(900)
    href = f"https://{SHOP}/products/p{product}"
    data: dict = {}
    if name == "product_viewed":
        data = {"productVariant": {"id": str(variant), "price": {"amount": 49.0, "currencyCode": "USD"},
                                   "product": {"id": str(product)}}}
    elif name == "collection_viewed":
        data = {"collection": {"id": str(9_000_000 + rng.randrange(40))}}
    elif name == "product_added_to_cart":
        data = {"cartLine": {"quantity": 1, "merchandise": {"id": str(variant), "product": {"id": str(product)}},
                             "cost": {"totalAmount": {"amount": 49.0, "currencyCode": "USD"}}}}
    elif name == "search_submitted":
        data = {"searchResult": {"query": rng.choice(["rain jacket", "boots", "wool socks", "tent"])}}
    return {"id": f"sh-{uuid.uuid4()}", "name": name, "clientId": client_id,
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "context": {"document": {"location": {"href": href}}}, "data": data}


def bodies(count: int, batch: int, browsers: int, customers: int, seed: int) -> list[bytes]:
    """`count` request bodies (built before timing), each a batch of `batch` events of one browser; browsers below
    `customers` are signed in (their batch names the customer)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        browser = rng.randrange(browsers)
        customer = {"id": str(5_000_000 + browser)} if browser < customers else None
        events = [event(NAMES[k % len(NAMES)], f"browser-{browser}", rng) for k in range(batch)]
        out.append(json.dumps({"key": KEY, "customer": customer, "events": events}).encode())
    return out


def http_request(port: int, body: bytes) -> bytes:
    """A whole HTTP request posting `body` to the endpoint as the pixel does (text/plain, a new connection)."""
    head = ["POST /pixel/events HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
            "Content-Type: text/plain;charset=UTF-8", "Origin: https://" + SHOP, "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def seed(url: str, customers: int) -> int:
    """The shop with its pixel key, and `customers` customers each linked to a subscriber; returns the shop id."""
    from sqlalchemy.orm import Session as OrmSession

    import kinnekt.models  # noqa: F401  (every table on Base.metadata)
    from kinnekt import db as kdb
    from kinnekt.db import Base, utcnow
    from kinnekt.models import Customer, Shop, Subscriber
    engine = kdb.make_engine(url)
    Base.metadata.create_all(engine)
    with OrmSession(engine) as session:
        shop = Shop(domain=SHOP, name="Bench", timezone="UTC", installed_at=utcnow(), pixel_key=KEY)
        session.add(shop)
        session.flush()
        people = [Customer(shop_id=shop.id, shopify_id=5_000_000 + i) for i in range(customers)]
        session.add_all(people)
        session.flush()
        session.add_all([Subscriber(shop_id=shop.id, phone=f"+1212555{i:04d}", status="subscribed", source="manual",
                                    customer_id=person.id) for i, person in enumerate(people)])
        session.commit()
        shop_id = shop.id
    engine.dispose()
    return shop_id


def seed_browsing(app, shop_id: int) -> dict:
    """The browsing segments, a plain one and the browse abandonment flow switched on (through the app's own
    services, inside `app`'s context: the segments' first builds are queued as jobs); returns their ids."""
    from kinnekt.db import Session, utcnow
    from kinnekt.flows import service as flows
    from kinnekt.models import Shop
    from kinnekt.segments import service as segments
    with app.app_context():
        shop = Session.get(Shop, shop_id)
        carted = segments.create_segment(Session, shop, name="Added to cart 3 times today", definition=CARTED_3)
        browsed = segments.create_segment(Session, shop, name="Browsed, no cart this week",
                                          definition=BROWSED_NOT_CARTED)
        segments.create_segment(Session, shop, name="In the US", definition={
            "match": "all", "rules": [{"field": "country", "op": "eq", "value": "US"}]})
        flow = flows.add_builtin(Session, shop, "browse_abandonment")
        flows.set_status(Session, flow, True, now=utcnow() - dt.timedelta(seconds=1))
        ids = {"carted_segment": carted.id, "browsed_segment": browsed.id, "flow": flow.id}
        Session.remove()
    return ids


def counts(url: str, shop_id: int) -> dict:
    """Events stored and attributed, browsers identified."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session as OrmSession

    from kinnekt import db as kdb
    from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
    engine = kdb.make_engine(url)
    with OrmSession(engine) as session:
        events, attributed = session.execute(select(func.count(), func.count(StorefrontEvent.subscriber_id))
                                             .where(StorefrontEvent.shop_id == shop_id)).one()
        browsers = session.scalar(select(func.count()).select_from(StorefrontBrowser))
    engine.dispose()
    return {"events_stored": events, "events_attributed": attributed, "browsers_identified": browsers}


def named(url: str, name: str) -> str:
    """The database URL with an application_name, so that the run's PostgreSQL backends can be found."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def postgres_cpu(admin, name: str) -> dict[int, float]:
    """CPU seconds (user + system, from /proc: PostgreSQL runs on this machine) of each backend whose
    application_name is `name`, by process id."""
    import os
    from pathlib import Path

    from sqlalchemy import text
    with admin.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                            {"name": name}).scalars().all()
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends used between two `postgres_cpu` readings (one opened since counts whole)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
