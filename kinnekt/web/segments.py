"""Segments pages."""
from __future__ import annotations

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("segments", __name__, url_prefix="/segments")


@bp.get("/")
def index():
    """The segments page."""
    return hx.render("segments/index.html", "segments/_index.html")
