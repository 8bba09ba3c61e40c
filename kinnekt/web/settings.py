"""Settings pages: a read-only summary of the shop's SMS, compliance, attribution and sync settings."""
from __future__ import annotations

from flask import g

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("settings", __name__, url_prefix="/settings")


@bp.get("/")
def index():
    """The settings page (editing comes with the settings forms; until then it only shows the values in use)."""
    return hx.render("settings/index.html", "settings/_index.html", settings=g.shop)
