"""Error responses: an HTML page (or a partial for htmx), JSON for /api, never a stack trace."""
from __future__ import annotations

import logging

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def init_app(app) -> None:
    """Register the handlers for HTTP errors and unexpected exceptions."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _render(exc.code or 500, exc.name, exc.description)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from kinnekt.db import Session
        Session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, "Something went wrong", "The error was logged. Please try again.")


def _render(code: int, title: str, description: str | None):
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return jsonify({"error": title, "message": description}), code
    template = "errors/_error.html" if request.headers.get("HX-Request") == "true" else "errors/error.html"
    return render_template(template, code=code, title=title, description=description), code
