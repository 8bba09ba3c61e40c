"""Settings pages."""
from __future__ import annotations

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("settings", __name__, url_prefix="/settings")


@bp.get("/")
def index():
    """The settings page."""
    return hx.render("settings/index.html", "settings/_index.html")
