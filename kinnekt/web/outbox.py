"""Outbox page (demo only): what the demo "sent", newest first; no message ever leaves for a phone."""
from __future__ import annotations

from flask import abort, current_app, g, request
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.models import OutboxMessage
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import page_number, paginate

bp = merchant_blueprint("outbox", __name__, url_prefix="/outbox")


@bp.before_request
def _demo_only():
    """Outside the demo there is no Outbox: a 404, as for any page that does not exist."""
    if not current_app.config.get("DEMO_MODE"):
        abort(404)


@bp.get("/")
def index():
    """The outbox page, paginated with `?page=` (a bad or too large page shows the nearest real one)."""
    statement = (
        select(OutboxMessage)
        .where(OutboxMessage.shop_id == g.shop.id)
        .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    )
    results = paginate(statement, page_number(request.args.get("page")), defaults.PAGE_SIZE)
    return hx.render("outbox/index.html", "outbox/_index.html", results=results)
