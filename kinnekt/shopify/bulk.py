"""The full data sync through GraphQL bulk operations: start, follow, stream the JSONL result, upsert in batches.

One sync runs four bulk queries at once (API 2026-01+ allows five per shop): products with their variants,
collections with their products, customers (with phone and SMS consent), orders with their line items. Each is
followed by the `bulk_operations/finish` webhook (`on_bulk_finished`) or by polling `bulkOperation(id:)`. A finished
result file is streamed line by line, never loaded whole: lines go to a temporary SQLite file keyed by
`__parentId`, because without `groupObjects` Shopify does not promise children next to their parent; then
each root object is read back with its children, mapped to ingest rows and upserted in batches.
Progress lives on the shop row (sync_status, sync_progress, last_synced_at) and on one SyncOperation row per
kind of data.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import httpx
from sqlalchemy import delete, select, update

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Shop, SyncOperation
from kinnekt.models.shop import SyncStatus
from kinnekt.models.sync import SYNC_KINDS, OperationStatus
from kinnekt.shopify import endpoints, mapping, tasks
from kinnekt.shopify.graphql import AdminClient, ShopifyError, ShopifyUnavailable, UserErrors, client_for, http_client

log = logging.getLogger(__name__)

BULK_QUERIES = {
    "products": ("{ products { edges { node { %s variants { edges { node { %s } } } } } } }"
                 % (mapping.PRODUCT_FIELDS, mapping.VARIANT_FIELDS)),
    "collections": ("{ collections { edges { node { %s products { edges { node { id } } } } } } }"
                    % mapping.COLLECTION_FIELDS),
    "customers": "{ customers { edges { node { %s } } } }" % mapping.CUSTOMER_FIELDS,
    "orders": ("{ orders { edges { node { %s lineItems { edges { node { %s } } } } } } }"
               % (mapping.ORDER_FIELDS, mapping.LINE_ITEM_FIELDS)),
}
"""The bulk query per kind of data (no `first:`: Shopify pages through everything itself)."""

HAS_CHILDREN = {"products", "collections", "orders"}

PREREQUISITES = {"orders": ("customers",)}
"""Import orders after customers, so orders link to full customer rows rather than placeholders."""

RUN_BULK_QUERY = """
mutation KinnektBulkQuery($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

BULK_OPERATION = """
query KinnektBulkOperation($id: ID!) {
  bulkOperation(id: $id) {
    id status errorCode objectCount rootObjectCount url partialDataUrl
  }
}
"""

RETRY_LATER_CODES = {"LIMIT_REACHED", "OPERATION_IN_PROGRESS"}
ACTIVE = SyncStatus.ACTIVE
SHOPIFY_FAILED = {"FAILED", "CANCELED", "CANCELING", "EXPIRED"}


# --------------------------------------------------------------------------------------------------------------
# Starting and following a sync

def request_sync(shop: Shop, *, enqueue: bool = True) -> bool:
    """Queue a full sync of the shop unless one is queued or running; True when this call queued it.

    `enqueue=False` only marks it queued, for start-up recovery to start (a CLI without Redis).
    """
    result = Session.execute(
        update(Shop).where(Shop.id == shop.id, Shop.sync_status.not_in(ACTIVE))
        .values(sync_status=SyncStatus.QUEUED, sync_progress=0).execution_options(synchronize_session=False))
    Session.commit()
    Session.refresh(shop)
    if result.rowcount != 1:
        return False
    if not enqueue:
        return True
    tasks.enqueue_start_bulk_sync(shop.id)
    return True


def start_sync(shop: Shop, client: AdminClient | None = None) -> list[SyncOperation]:
    """Replace the shop's sync operations with new ones and start a bulk query for each kind of data."""
    client = client or client_for(shop)
    Session.execute(delete(SyncOperation).where(SyncOperation.shop_id == shop.id)
                    .execution_options(synchronize_session=False))
    operations = [SyncOperation(shop_id=shop.id, kind=kind, status=OperationStatus.STARTING) for kind in SYNC_KINDS]
    Session.add_all(operations)
    shop.sync_status = SyncStatus.RUNNING
    shop.sync_progress = 0
    Session.commit()
    for operation in operations:
        _start_operation(client, operation)
    advance(shop)
    return operations


def _start_operation(client: AdminClient, operation: SyncOperation) -> None:
    """Run the bulk query of one operation; Shopify's "too many running" leaves it to the next poll."""
    result = (client.query(RUN_BULK_QUERY, {"query": BULK_QUERIES[operation.kind]})
              .get("bulkOperationRunQuery") or {})
    errors = result.get("userErrors") or []
    started = result.get("bulkOperation") or {}
    if errors and {e.get("code") for e in errors} <= RETRY_LATER_CODES:
        log.info("bulk %s for shop %s must wait: %s", operation.kind, operation.shop_id, UserErrors(errors))
    elif errors or not started.get("id"):
        operation.status = OperationStatus.FAILED
        operation.error = str(UserErrors(errors)) if errors else "Shopify started no bulk operation"
    else:
        operation.bulk_operation_id = started["id"]
        operation.status = OperationStatus.RUNNING
    Session.commit()


def on_bulk_finished(shop: Shop | int, admin_graphql_api_id: str, status: str) -> bool:
    """Handle bulk_operations/finish: if the operation is one of our syncs, collect it now; True when ours."""
    shop_id = shop if isinstance(shop, int) else shop.id
    operation = Session.scalar(select(SyncOperation).where(
        SyncOperation.shop_id == shop_id, SyncOperation.bulk_operation_id == admin_graphql_api_id))
    if operation is None:
        return False
    log.info("bulk %s of shop %s finished: %s", operation.kind, shop_id, status)
    tasks.enqueue_poll_bulk(shop_id, reason="finished", operation_id=operation.id)
    return True


def poll(shop: Shop, client: AdminClient | None = None) -> None:
    """Ask Shopify about every unfinished operation of the shop's sync, then move the sync on."""
    operations = _operations(shop)
    waiting = [op for op in operations if op.status in OperationStatus.AT_SHOPIFY]
    if waiting:
        client = client or client_for(shop)
    for operation in waiting:
        if operation.status == OperationStatus.STARTING:
            _start_operation(client, operation)
            continue
        node = (client.query(BULK_OPERATION, {"id": operation.bulk_operation_id}).get("bulkOperation"))
        record_status(operation, node)
    advance(shop)


def record_status(operation: SyncOperation, node: dict | None) -> None:
    """Store what `bulkOperation(id:)` says about an operation."""
    if node is None:
        operation.status = OperationStatus.FAILED
        operation.error = "Shopify no longer knows this bulk operation"
    else:
        status = (node.get("status") or "").upper()
        operation.object_count = int(node.get("rootObjectCount") or 0)
        if status == "COMPLETED":
            operation.status = OperationStatus.COMPLETED
            operation.result_url = node.get("url")
            operation.completed_at = utcnow()
        elif status in SHOPIFY_FAILED:
            operation.status = OperationStatus.FAILED
            operation.error = f"{status.lower()}: {node.get('errorCode') or 'no error code'}"
            operation.completed_at = utcnow()
    Session.commit()


def advance(shop: Shop) -> None:
    """Queue the imports that are ready, update progress, finish the sync, or poll again later."""
    operations = {op.kind: op for op in _operations(shop)}
    if not operations:
        return
    for kind, operation in operations.items():
        done_before = all(operations[p].status in OperationStatus.FINAL
                          for p in PREREQUISITES.get(kind, ()) if p in operations)
        if (operation.status == OperationStatus.COMPLETED and done_before
                and _claim(operation, OperationStatus.COMPLETED, OperationStatus.IMPORTING)):
            tasks.enqueue_import_bulk_result(operation.id)
    statuses = {op.status for op in operations.values()}
    Session.refresh(shop)
    if statuses <= OperationStatus.FINAL:
        if OperationStatus.FAILED in statuses:
            shop.sync_status = SyncStatus.FAILED
        else:
            shop.sync_status = SyncStatus.DONE
            shop.last_synced_at = utcnow()
            started = min(op.created_at for op in operations.values())
            # Reconciliation takes over from the moment the bulk queries started reading.
            shop.reconciled_at = max(filter(None, (shop.reconciled_at, started)))
        shop.sync_progress = 100
        Session.commit()
        if shop.sync_status == SyncStatus.DONE:
            from kinnekt import db_statistics
            db_statistics.analyze(Session)  # a whole store arrived: fresh statistics for the planner
        return
    shop.sync_progress = progress(operations.values())
    Session.commit()
    if statuses & OperationStatus.AT_SHOPIFY:
        tasks.enqueue_poll_bulk(shop.id, reason="poll", delay=dt.timedelta(seconds=defaults.BULK_POLL_INTERVAL_SECONDS))


def _claim(operation: SyncOperation, old: str, new: str) -> bool:
    """Move an operation from one status to the next exactly once, even when webhook and poll race."""
    result = Session.execute(update(SyncOperation).where(SyncOperation.id == operation.id,
                                                         SyncOperation.status == old)
                             .values(status=new).execution_options(synchronize_session=False))
    Session.commit()
    Session.refresh(operation)
    return result.rowcount == 1


def _operations(shop: Shop) -> list[SyncOperation]:
    return list(Session.scalars(select(SyncOperation).where(SyncOperation.shop_id == shop.id)
                                .order_by(SyncOperation.id).execution_options(populate_existing=True)))


def progress(operations: Iterable[SyncOperation]) -> int:
    """The sync's progress in percent: half for Shopify writing the file, half for importing it."""
    parts = []
    for op in operations:
        if op.status in OperationStatus.FINAL:
            parts.append(1.0)
        elif op.status == OperationStatus.IMPORTING:
            share = op.imported_count / op.object_count if op.object_count else 0.0
            parts.append(0.5 + 0.5 * min(share, 1.0))
        elif op.status == OperationStatus.COMPLETED:
            parts.append(0.5)
        elif op.status == OperationStatus.RUNNING:
            parts.append(0.1)
        else:
            parts.append(0.0)
    return int(100 * sum(parts) / len(parts)) if parts else 0


# --------------------------------------------------------------------------------------------------------------
# Importing a result file

def stream_records(url: str) -> Iterator[dict]:
    """The JSON objects of a bulk result file, one per line, read as the download streams in."""
    timeout = httpx.Timeout(60.0, connect=defaults.SHOPIFY_CONNECT_TIMEOUT_SECONDS)
    try:
        with http_client().stream("GET", endpoints.download_url(url), timeout=timeout) as response:
            if response.status_code != 200:
                raise ShopifyUnavailable(f"bulk result download answered HTTP {response.status_code}")
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)
    except httpx.TransportError as exc:
        raise ShopifyUnavailable(f"bulk result download failed: {type(exc).__name__}: {exc}") from exc


@contextmanager
def _staging() -> Iterator[sqlite3.Connection]:
    handle, path = tempfile.mkstemp(prefix="kinnekt-bulk-", suffix=".sqlite3")
    os.close(handle)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE roots (seq INTEGER PRIMARY KEY, gid TEXT NOT NULL, line TEXT NOT NULL)")
        conn.execute("CREATE TABLE children (seq INTEGER PRIMARY KEY, parent TEXT NOT NULL, line TEXT NOT NULL)")
        yield conn
    finally:
        conn.close()
        os.unlink(path)


def grouped(records: Iterable[dict], *, with_children: bool) -> Iterator[tuple[dict, list[dict]]]:
    """(root object, its child objects) pairs in file order, whatever order Shopify wrote the children in."""
    if not with_children:
        for record in records:
            if "__parentId" not in record:
                yield record, []
        return
    with _staging() as conn:
        roots, children = [], []
        for seq, record in enumerate(records):
            parent = record.pop("__parentId", None)
            line = json.dumps(record, separators=(",", ":"))
            if parent is None:
                roots.append((seq, record.get("id", ""), line))
            else:
                children.append((seq, parent, line))
            if len(roots) + len(children) >= 1000:
                _flush(conn, roots, children)
        _flush(conn, roots, children)
        conn.execute("CREATE INDEX children_parent ON children (parent, seq)")
        reader = conn.cursor()
        for _seq, gid, line in reader.execute("SELECT seq, gid, line FROM roots ORDER BY seq"):
            kids = [json.loads(row[0]) for row in conn.execute(
                "SELECT line FROM children WHERE parent = ? ORDER BY seq", (gid,))]
            yield json.loads(line), kids


def _flush(conn: sqlite3.Connection, roots: list, children: list) -> None:
    if roots:
        conn.executemany("INSERT INTO roots VALUES (?, ?, ?)", roots)
    if children:
        conn.executemany("INSERT INTO children VALUES (?, ?, ?)", children)
    conn.commit()
    roots.clear()
    children.clear()


def _row_maker(kind: str) -> Callable[[dict, list[dict]], object]:
    return {
        "products": mapping.product_row,
        "collections": mapping.collection_row,
        "customers": lambda node, _children: mapping.customer_row(node),
        "orders": mapping.order_row,
    }[kind]


def _upserter(kind: str) -> Callable:
    from kinnekt.shopify.ingest import catalog, customers, orders
    return {"products": catalog.upsert_products, "collections": catalog.upsert_collections,
            "customers": customers.upsert_customers, "orders": orders.upsert_orders}[kind]


def import_records(shop: Shop, kind: str, records: Iterable[dict], *,
                   on_batch: Callable[[int], None] | None = None) -> int:
    """Map bulk records of one kind to ingest rows and upsert them in batches; returns the roots imported."""
    make_row, upsert = _row_maker(kind), _upserter(kind)
    batch, imported = [], 0
    for node, children in grouped(records, with_children=kind in HAS_CHILDREN):
        try:
            batch.append(make_row(node, children))
        except (ValueError, TypeError) as exc:
            log.warning("skipping an unreadable %s record %r: %s", kind, node.get("id"), exc)
            continue
        if len(batch) >= defaults.BULK_IMPORT_BATCH_SIZE:
            upsert(Session, shop, batch)
            imported += len(batch)
            batch = []
            if on_batch:
                on_batch(imported)
    if batch:
        upsert(Session, shop, batch)
        imported += len(batch)
        if on_batch:
            on_batch(imported)
    return imported


def import_result(operation: SyncOperation) -> int:
    """Download and import one completed operation's result, record the outcome, and move the sync on."""
    shop = Session.get(Shop, operation.shop_id)

    def note(count: int) -> None:
        operation.imported_count = count
        shop.sync_progress = progress(_operations(shop))
        Session.commit()

    try:
        count = 0
        if operation.result_url:  # no url: the query matched nothing
            count = import_records(shop, operation.kind, stream_records(operation.result_url), on_batch=note)
    except (ShopifyError, ValueError) as exc:
        Session.rollback()
        operation = Session.get(SyncOperation, operation.id)
        operation.status = OperationStatus.FAILED
        operation.error = f"import failed: {exc}"[:2000]
        Session.commit()
        log.error("importing bulk %s of shop %s failed: %s", operation.kind, operation.shop_id, exc)
        advance(shop)
        return 0
    operation.imported_count = count
    operation.status = OperationStatus.IMPORTED
    operation.imported_at = utcnow()
    Session.commit()
    log.info("imported %d %s for shop %s", count, operation.kind, shop.domain)
    advance(shop)
    return count


def fail_sync(shop: Shop, reason: str) -> None:
    """Stop following the shop's sync: unfinished operations fail with `reason` (the merchant can resync)."""
    Session.rollback()
    for operation in _operations(shop):
        if operation.status not in OperationStatus.FINAL:
            operation.status = OperationStatus.FAILED
            operation.error = reason[:2000]
    Session.commit()
    advance(shop)
