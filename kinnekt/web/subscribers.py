"""Subscribers pages."""
from __future__ import annotations

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("subscribers", __name__, url_prefix="/subscribers")


@bp.get("/")
def index():
    """The subscribers page."""
    return hx.render("subscribers/index.html", "subscribers/_index.html")
