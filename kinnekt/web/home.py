"""The app's home: the shop's dashboard (growth, opt-outs, revenue, campaigns, automations, sending health)."""
from __future__ import annotations

from flask import abort, g, request

from kinnekt import dashboard, defaults
from kinnekt.db import Session, utcnow
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("home", __name__)


@bp.get("/")
def index():
    """The home page for the period of `?days=` (7, 30 or 90; 30 by default); the switch swaps the partial."""
    try:
        days = dashboard.parse_days(request.args.get("days"))
    except dashboard.InvalidPeriod as exc:
        abort(400, description=str(exc))
    figures = dashboard.summary(Session, g.shop, days, utcnow())
    return hx.render("home/index.html", "home/_dashboard.html", board=figures,
                     periods=defaults.DASHBOARD_PERIOD_DAYS, embedded_args=_embedded_args())


def _embedded_args() -> dict:
    """The embedded query (shop, host) that links of the period switch keep; never the one-time id_token."""
    return {key: value for key, value in request.args.items() if key in ("shop", "host", "embedded")}
