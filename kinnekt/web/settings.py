"""Settings pages: a read-only summary of the shop's SMS, compliance, attribution and sync settings."""
from __future__ import annotations

from flask import g, make_response, render_template
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import SyncOperation
from kinnekt.models.sync import SYNC_KINDS
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("settings", __name__, url_prefix="/settings")


@bp.get("/")
def index():
    """The settings page (editing comes with the settings forms; until then it only shows the values in use)."""
    return hx.render("settings/index.html", "settings/_index.html", settings=g.shop, **sync_context())


def sync_context() -> dict:
    """What the store data card shows: the shop's sync state and one line per kind of data."""
    operations = {op.kind: op for op in Session.scalars(select(SyncOperation).where(SyncOperation.shop_id == g.shop.id))}
    return {"sync_operations": [operations[kind] for kind in SYNC_KINDS if kind in operations],
            "syncing": g.shop.sync_status in ("queued", "running")}


@bp.get("/sync")
def sync():
    """The store data card, polled every 2 s while a sync runs; answers 286 (stop polling) once it is over."""
    body = render_template("settings/_sync.html", settings=g.shop, **sync_context())
    if hx.is_htmx() and g.shop.sync_status not in ("queued", "running"):
        return hx.stop_polling(body)
    return body


@bp.post("/sync")
def resync():
    """Import the store's customers, orders and catalog again (unless a sync is already queued or running)."""
    from kinnekt.shopify import bulk
    if g.shop.is_demo:
        message, error = "The demo store has no Shopify connection to sync from.", True
    elif bulk.request_sync(g.shop):
        message, error = "Sync started. This page shows its progress.", False
    else:
        message, error = "A sync is already running.", False
    response = make_response(render_template("settings/_sync.html", settings=g.shop, **sync_context()))
    return hx.toast(response, message, error=error)
