"""Who a storefront browser belongs to: a signed-in customer, the phone of a started checkout, or a tracked link.

A batch from the pixel can name its browser's person three ways, strongest first:
1. `customer` (the pixel's `init.data.customer.id`): the shop's customer with that Shopify id, and the
   subscriber linked to that customer (as orders link them, kinnekt/shopify/ingest/linking.py);
2. a `checkout_started` event's phone (the checkout's, else its shipping or billing address's), read as
   kinnekt/subscribers/phones reads any number: the shop's subscriber with that number;
3. the `kn` reference of one of our tracked links in a page's URL (`?kn=<code>`, kinnekt/campaigns/links.py):
   the link's recipient, when the link is this shop's.
`identify` finds these per browser (clientId), and queries nothing for a batch without a clue (most batches);
`remember` records them in storefront_browsers (a later identification replaces an earlier one) and gives the
browser's earlier unattributed events the subscriber.
The pixel runs in the shopper's browser: what it says cannot be proven, so an identification only ever points
a browser's events at one of this shop's own subscribers, never reveals anything, and never changes a subscriber.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update

from kinnekt.campaigns import links
from kinnekt.db import on_postgresql
from kinnekt.models import Customer, Shop, Subscriber
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from kinnekt.storefront.events import Batch
from kinnekt.subscribers import phones

STRENGTH = {"customer": 3, "checkout": 2, "link": 1}
"""Which clue wins when one batch carries several for the same browser."""


@dataclass(frozen=True)
class Identification:
    """A browser found to be a subscriber's, and how."""

    client_id: str
    subscriber_id: int
    source: str  # one of kinnekt.models.storefront.BROWSER_SOURCES


def _customer_subscriber(session, shop: Shop, shopify_customer_id: int) -> int | None:
    return session.scalar(
        select(Subscriber.id).join(Customer, Customer.id == Subscriber.customer_id)
        .where(Customer.shop_id == shop.id, Customer.shopify_id == shopify_customer_id, Subscriber.shop_id == shop.id)
        .order_by(Subscriber.id).limit(1))


def _phone_subscriber(session, shop: Shop, raw: str, region: str | None) -> int | None:
    try:
        info = phones.normalise(raw, region or None, prefer_zone=shop.timezone)
    except phones.InvalidPhone:
        return None
    return session.scalar(select(Subscriber.id).where(Subscriber.shop_id == shop.id, Subscriber.phone == info.e164))


def _link_subscriber(session, shop: Shop, url: str | None) -> int | None:
    code = links.ref_code(url)
    if not code:
        return None
    link = links.find(session, code)
    if link is None or link.shop_id != shop.id:
        return None
    return link.subscriber_id


def has_clue(batch: Batch) -> bool:
    """True when `identify` may find someone in this batch: a signed-in customer, a checkout's phone, or a page
    address that can hold a `kn` reference (most batches have none, and need no query)."""
    return batch.customer_id is not None or any(e.phone or e.url and "kn=" in e.url for e in batch.events)


def identify(session, shop: Shop, batch: Batch) -> list[Identification]:
    """The browsers of this batch that its clues tie to one of the shop's subscribers (one per browser)."""
    found: dict[str, Identification] = {}

    def offer(client_id: str, subscriber_id: int | None, source: str) -> None:
        if subscriber_id is None:
            return
        current = found.get(client_id)
        if current is None or STRENGTH[source] > STRENGTH[current.source]:
            found[client_id] = Identification(client_id, subscriber_id, source)

    if batch.customer_id is not None:
        subscriber_id = _customer_subscriber(session, shop, batch.customer_id)
        for client_id in {e.client_id for e in batch.events}:
            offer(client_id, subscriber_id, "customer")
    looked_up: set[tuple] = set()
    for event in batch.events:
        if event.phone and ("phone", event.client_id, event.phone) not in looked_up:
            looked_up.add(("phone", event.client_id, event.phone))
            offer(event.client_id, _phone_subscriber(session, shop, event.phone, event.phone_region), "checkout")
        if event.url and "kn=" in event.url and ("url", event.client_id, event.url) not in looked_up:
            looked_up.add(("url", event.client_id, event.url))
            offer(event.client_id, _link_subscriber(session, shop, event.url), "link")
    return list(found.values())


def _upsert(session):
    if on_postgresql(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def remember(session, shop: Shop, found: list[Identification], now: dt.datetime) -> set[int]:
    """Record these identifications (a later one replaces an earlier one) and attribute each browser's earlier
    unattributed events to its subscriber (one UPDATE per browser). Returns the subscribers whose events changed.
    Not committed: the ingest commits it with the batch."""
    if not found:
        return set()
    insert = _upsert(session)
    rows = [{"shop_id": shop.id, "client_id": i.client_id, "subscriber_id": i.subscriber_id, "source": i.source,
             "identified_at": now} for i in sorted(found, key=lambda i: i.client_id)]
    statement = insert(StorefrontBrowser).values(rows)
    session.execute(statement.on_conflict_do_update(
        index_elements=["shop_id", "client_id"],
        set_={"subscriber_id": statement.excluded.subscriber_id, "source": statement.excluded.source,
              "identified_at": statement.excluded.identified_at}))
    changed: set[int] = set()
    for identification in found:
        result = session.execute(
            update(StorefrontEvent)
            .where(StorefrontEvent.shop_id == shop.id, StorefrontEvent.client_id == identification.client_id,
                   StorefrontEvent.subscriber_id.is_(None))
            .values(subscriber_id=identification.subscriber_id)
            .execution_options(synchronize_session=False))
        if result.rowcount:
            changed.add(identification.subscriber_id)
    return changed


def known_browsers(session, shop_id: int, client_ids) -> dict[str, int]:
    """client_id -> subscriber id for the browsers of these ids already identified in this shop."""
    ids = sorted(set(client_ids))
    if not ids:
        return {}
    return dict(session.execute(select(StorefrontBrowser.client_id, StorefrontBrowser.subscriber_id).where(
        StorefrontBrowser.shop_id == shop_id, StorefrontBrowser.client_id.in_(ids))).all())
