"""Reconciliation: fetch customers, orders, products and collections changed since the last run through
GraphQL (`updated_at:>…`), so a webhook Shopify never delivered does not mean lost data.

Upserts never let an older `updated_at` win, so whatever webhooks already stored is left as it is.
Deletions do not show up in `updated_at` searches; they still come only through webhooks.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Shop
from kinnekt.models.shop import SyncStatus
from kinnekt.shopify import mapping
from kinnekt.shopify.graphql import AdminClient, client_for

log = logging.getLogger(__name__)

CUSTOMERS = """
query KinnektReconcileCustomers($first: Int!, $after: String, $query: String!) {
  customers(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes { %s }
    pageInfo { hasNextPage endCursor }
  }
}
""" % mapping.CUSTOMER_FIELDS

ORDERS = """
query KinnektReconcileOrders($first: Int!, $after: String, $query: String!) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes {
      %s
      lineItems(first: 50) { nodes { %s } pageInfo { hasNextPage endCursor } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
""" % (mapping.ORDER_FIELDS, mapping.LINE_ITEM_FIELDS)

ORDER_LINE_ITEMS = """
query KinnektOrderLineItems($id: ID!, $after: String) {
  order(id: $id) {
    lineItems(first: 100, after: $after) { nodes { %s } pageInfo { hasNextPage endCursor } }
  }
}
""" % mapping.LINE_ITEM_FIELDS

PRODUCTS = """
query KinnektReconcileProducts($first: Int!, $after: String, $query: String!) {
  products(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes { %s variants(first: 50) { nodes { %s } pageInfo { hasNextPage endCursor } } }
    pageInfo { hasNextPage endCursor }
  }
}
""" % (mapping.PRODUCT_FIELDS, mapping.VARIANT_FIELDS)

PRODUCT_VARIANTS = """
query KinnektProductVariants($id: ID!, $after: String) {
  product(id: $id) {
    variants(first: 250, after: $after) { nodes { %s } pageInfo { hasNextPage endCursor } }
  }
}
""" % mapping.VARIANT_FIELDS

PRODUCTS_PAGE_SIZE = 10
"""Products per page: each carries up to 50 variants, and one query may cost at most 1,000 points."""

COLLECTIONS = """
query KinnektReconcileCollections($first: Int!, $after: String, $query: String!) {
  collections(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    nodes { %s }
    pageInfo { hasNextPage endCursor }
  }
}
""" % mapping.COLLECTION_FIELDS

ORDERS_PAGE_SIZE = 10
"""Orders per page: each carries up to 50 line items, and one query may cost at most 1,000 points."""


@dataclass
class ReconcileReport:
    """What one run fetched (and handed to the upserts), per kind."""

    since: dt.datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None


def search_since(moment: dt.datetime) -> str:
    """The search filter for objects updated after `moment` (UTC, second precision)."""
    return f"updated_at:>'{moment.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}'"


def due_shops() -> list[int]:
    """Ids of shops to reconcile: installed, connected, not the demo, synced at least once, not syncing now."""
    return list(Session.scalars(select(Shop.id).where(
        Shop.installed_at.is_not(None), Shop.uninstalled_at.is_(None), Shop.needs_reauth.is_(False),
        Shop.is_demo.is_(False), Shop.access_token_enc.is_not(None), Shop.sync_status == SyncStatus.DONE)
        .order_by(Shop.id)))


def reconcile(shop: Shop, client: AdminClient | None = None, *, now: dt.datetime | None = None) -> ReconcileReport:
    """Fetch and upsert everything changed since the last run (with an overlap), then move the mark on."""
    from kinnekt.shopify.ingest import catalog, customers, orders
    mark = shop.reconciled_at or shop.last_synced_at
    if shop.sync_status in SyncStatus.ACTIVE:
        return ReconcileReport(mark, skipped="a full sync is running")
    if mark is None:
        return ReconcileReport(None, skipped="the shop has never been synced")
    started = now or utcnow()
    since = mark - dt.timedelta(seconds=defaults.RECONCILE_OVERLAP_SECONDS)
    query = search_since(since)
    client = client or client_for(shop)
    report = ReconcileReport(since)

    report.counts["customers"] = _pages(
        client.nodes(CUSTOMERS, {"query": query}, "customers"),
        mapping.customer_row, lambda rows: customers.upsert_customers(Session, shop, rows))
    report.counts["orders"] = _pages(
        client.nodes(ORDERS, {"query": query}, "orders", page_size=ORDERS_PAGE_SIZE),
        lambda node: mapping.order_row(node, _all_line_items(client, node)),
        lambda rows: orders.upsert_orders(Session, shop, rows))
    report.counts["products"] = _pages(
        client.nodes(PRODUCTS, {"query": query}, "products", page_size=PRODUCTS_PAGE_SIZE),
        lambda node: mapping.product_row(node, _all_variants(client, node)),
        lambda rows: catalog.upsert_products(Session, shop, rows))
    report.counts["collections"] = _pages(
        client.nodes(COLLECTIONS, {"query": query}, "collections"),
        lambda node: mapping.collection_row(node, None), lambda rows: catalog.upsert_collections(Session, shop, rows))

    Session.refresh(shop)
    if shop.reconciled_at is None or shop.reconciled_at < started:
        shop.reconciled_at = started
    Session.commit()
    log.info("reconciled %s since %s: %s", shop.domain, since.isoformat(), report.counts)
    return report


def _pages(nodes, make_row, upsert, batch_size: int = 100) -> int:
    batch, total = [], 0
    for node in nodes:
        try:
            batch.append(make_row(node))
        except (ValueError, TypeError) as exc:
            log.warning("skipping an unreadable node %r: %s", node.get("id"), exc)
            continue
        if len(batch) >= batch_size:
            upsert(batch)
            total += len(batch)
            batch = []
    if batch:
        upsert(batch)
        total += len(batch)
    return total


def _all_variants(client: AdminClient, product: dict) -> list[dict]:
    """A product's variants, fetching further pages when it has more than the first page held."""
    connection = product.get("variants") or {}
    variants = list(connection.get("nodes") or [])
    info = connection.get("pageInfo") or {}
    while info.get("hasNextPage"):
        data = client.query(PRODUCT_VARIANTS, {"id": product["id"], "after": info.get("endCursor")})
        connection = ((data.get("product") or {}).get("variants") or {})
        variants.extend(connection.get("nodes") or [])
        info = connection.get("pageInfo") or {}
    return variants


def _all_line_items(client: AdminClient, order: dict) -> list[dict]:
    """An order's line items, fetching further pages when it has more than the first page held."""
    connection = order.get("lineItems") or {}
    items = list(connection.get("nodes") or [])
    info = connection.get("pageInfo") or {}
    while info.get("hasNextPage"):
        data = client.query(ORDER_LINE_ITEMS, {"id": order["id"], "after": info.get("endCursor")})
        connection = ((data.get("order") or {}).get("lineItems") or {})
        items.extend(connection.get("nodes") or [])
        info = connection.get("pageInfo") or {}
    return items
