"""`/healthz`: for load balancers and operators. Anyone gets ok or unavailable; the HEALTH_TOKEN holder, the lanes."""
from __future__ import annotations

import hmac

from flask import Blueprint, current_app, jsonify, request

from kinnekt import health
from kinnekt.db import Session

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """200 when the database and the queue answer, else 503; the details only with `Bearer <HEALTH_TOKEN>`."""
    found = health.report(Session)
    body = {"status": found.as_dict()["status"]}
    token = current_app.config.get("HEALTH_TOKEN") or ""
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        body = found.as_dict()
    response = jsonify(body)
    response.status_code = 200 if found.ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response
