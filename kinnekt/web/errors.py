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
        code = exc.code or 500
        if _wants_json() or code not in MERCHANT_WORDS or exc.description != type(exc).description:
            return _render(code, exc.name, exc.description)
        return _render(code, *MERCHANT_WORDS[code])  # werkzeug's words replaced by the merchant's

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from kinnekt.db import Session
        Session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, *MERCHANT_WORDS[500])


MERCHANT_WORDS = {
    404: ("Page not found", "This page doesn't exist, or it was moved or deleted. Check the address, or go back."),
    405: ("That can't be done here", "This page doesn't accept that request. Go back and try again from the page."),
    500: ("Something went wrong", "Kinnekt ran into a problem and logged it; what you were doing was not saved. "
                                  "Try again in a moment."),
}
"""Title and text of the common errors in the merchant's words (a view's own abort description is kept)."""


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _render(code: int, title: str, description: str | None):
    if _wants_json():
        return jsonify({"error": title, "message": description}), code
    template = "errors/_error.html" if request.headers.get("HX-Request") == "true" else "errors/error.html"
    return render_template(template, code=code, title=title, description=description), code
