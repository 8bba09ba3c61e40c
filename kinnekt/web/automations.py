"""The old Automations pages: automations became flows (migration 0026, docs/flows.md), so every old address goes
to the flows: the list, the editor for a new one, and anything else (an automation's page, its form: the flow it
became has an id of its own) to the flows list. Writes nothing.

htmx requests get HX-Location (the flows partial into #main); other requests a 308 that keeps the query string
(the embedded app's `id_token` travels in it)."""
from __future__ import annotations

from flask import Response, redirect, request, url_for

from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("automations", __name__, url_prefix="/automations")


def _to(endpoint: str) -> Response:
    if hx.is_htmx():
        return hx.redirect_to(url_for(endpoint))
    return redirect(url_for(endpoint, **request.args), code=308)


@bp.route("/", methods=["GET", "POST"])
def index():
    """The automations list: now the flows list."""
    return _to("flows.index")


@bp.get("/new")
def new():
    """A new automation: now a new flow."""
    return _to("flows.new")


@bp.route("/<path:rest>", methods=["GET", "POST", "DELETE"])
def elsewhere(rest: str):
    """An automation's page, form or action: the flows list (each automation is a flow of the same name there)."""
    return _to("flows.index")
