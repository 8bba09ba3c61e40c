"""Shopify jobs: install a shop, run and follow the bulk sync, import result files, reconcile changes."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Shop, SyncOperation
from kinnekt.queue import get_queue
from kinnekt.shopify.tokens import NotConnected
from workers import job
from workers.jobs import register_recoverer

log = logging.getLogger(__name__)

LOST_ACCESS = "Shopify access was lost; open Kinnekt from your Shopify admin, then resync"


def _shop(shop_id: int) -> Shop | None:
    shop = Session.get(Shop, shop_id)
    if shop is None or not shop.installed:
        log.info("shop %s is gone or uninstalled; nothing to do", shop_id)
        return None
    return shop


@job
def install_shop(shop_id: int) -> str:
    """Read the shop's details, create its default segments and start its initial sync."""
    from kinnekt.shopify import install
    shop = _shop(shop_id)
    if shop is None:
        return "skipped"
    try:
        install.complete_install(shop)
    except NotConnected as exc:
        log.warning("install of %s waits for the merchant: %s", shop.domain, exc)
        return "not connected"
    return "installed"


@job
def start_bulk_sync(shop_id: int) -> str:
    """Start the bulk queries of a full sync."""
    from kinnekt.shopify import bulk
    shop = _shop(shop_id)
    if shop is None:
        return "skipped"
    try:
        bulk.start_sync(shop)
    except NotConnected:
        Session.rollback()
        shop = Session.get(Shop, shop_id)
        shop.sync_status = "failed"
        Session.commit()
        bulk.fail_sync(shop, LOST_ACCESS)
        return "not connected"
    return "started"


@job
def poll_bulk(shop_id: int) -> str:
    """Ask Shopify how the shop's bulk operations are doing and move the sync on."""
    from kinnekt.shopify import bulk
    shop = _shop(shop_id)
    if shop is None or shop.sync_status not in ("queued", "running"):
        return "skipped"
    try:
        bulk.poll(shop)
    except NotConnected:
        bulk.fail_sync(shop, LOST_ACCESS)
        return "not connected"
    return shop.sync_status


@job
def import_bulk_result(operation_id: int) -> int:
    """Stream one finished bulk result file into the database."""
    from kinnekt.shopify import bulk
    operation = Session.get(SyncOperation, operation_id)
    if operation is None or operation.status != "importing":
        return 0
    return bulk.import_result(operation)


@job
def reconcile(shop_id: int) -> dict:
    """Fetch what changed at Shopify since the shop's last reconciliation."""
    from kinnekt.shopify import reconcile as reconciliation
    shop = _shop(shop_id)
    if shop is None:
        return {}
    try:
        report = reconciliation.reconcile(shop)
    except NotConnected as exc:
        log.warning("cannot reconcile %s: %s", shop.domain, exc)
        return {}
    return report.counts


@job
def reconcile_all() -> int:
    """Queue a reconciliation for every connected, synced shop (the periodic entry point)."""
    from kinnekt.shopify import reconcile as reconciliation
    shop_ids = reconciliation.due_shops()
    for shop_id in shop_ids:
        get_queue().enqueue(reconcile, shop_id, job_id=f"reconcile-{shop_id}")
    return len(shop_ids)


@register_recoverer
def requeue_shopify_work() -> int:
    """Start-up recovery: installs that never ran, queued or running syncs, imports a crash interrupted."""
    queued = 0
    for shop_id in Session.scalars(select(Shop.id).where(
            Shop.installed_at.is_not(None), Shop.uninstalled_at.is_(None), Shop.needs_reauth.is_(False),
            Shop.is_demo.is_(False), Shop.access_token_enc.is_not(None), Shop.sync_status == "never")):
        get_queue().enqueue(install_shop, shop_id, job_id=f"install-shop-{shop_id}")
        queued += 1
    for shop_id, status in Session.execute(select(Shop.id, Shop.sync_status).where(
            Shop.sync_status.in_(("queued", "running")), Shop.uninstalled_at.is_(None))):
        if status == "queued":
            get_queue().enqueue(start_bulk_sync, shop_id, job_id=f"bulk-start-{shop_id}")
        else:
            get_queue().enqueue(poll_bulk, shop_id, job_id=f"bulk-recover-{shop_id}")
        queued += 1
    stale = utcnow() - dt.timedelta(seconds=defaults.BULK_IMPORT_STALE_SECONDS)
    for operation in Session.scalars(select(SyncOperation).where(
            SyncOperation.status == "importing", SyncOperation.updated_at < stale)):
        get_queue().enqueue(import_bulk_result, operation.id, job_id=f"bulk-import-{operation.id}")
        queued += 1
    return queued
