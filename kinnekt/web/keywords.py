"""Keywords pages."""
from __future__ import annotations

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("keywords", __name__, url_prefix="/keywords")


@bp.get("/")
def index():
    """The keywords page."""
    return hx.render("keywords/index.html", "keywords/_index.html")
