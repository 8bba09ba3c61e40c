"""Campaigns pages."""
from __future__ import annotations

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("campaigns", __name__, url_prefix="/campaigns")


@bp.get("/")
def index():
    """The campaigns page."""
    return hx.render("campaigns/index.html", "campaigns/_index.html")
