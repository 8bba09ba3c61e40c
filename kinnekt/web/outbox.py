"""Outbox pages."""
from __future__ import annotations

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("outbox", __name__, url_prefix="/outbox")


@bp.get("/")
def index():
    """The outbox page."""
    return hx.render("outbox/index.html", "outbox/_index.html")
