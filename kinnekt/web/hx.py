"""HTMX request and response helpers: page or partial, stop polling, merged HX-Trigger events, redirects.

The request side reads htmx's own headers (HX-Request, HX-Boosted, HX-Target) from `request.headers`; no
extension replaces Flask's request class (docs/libraries.md says why htmx-flask was dropped).
"""
from __future__ import annotations

import json

from flask import Response, make_response, redirect, render_template, request


def _header_is_true(name: str) -> bool:
    return (request.headers.get(name) or "").strip().lower() == "true"


def is_htmx() -> bool:
    """True for a request made by htmx (HX-Request: true), but not a boosted full navigation (HX-Boosted: true)."""
    return _header_is_true("HX-Request") and not _header_is_true("HX-Boosted")


def render(page: str, partial: str, **context) -> str:
    """Render the full page, or only its partial when htmx asks for it (the page includes the partial)."""
    return render_template(partial if is_htmx() else page, **context)


def stop_polling(body: str = "") -> Response:
    """A response that makes an `every Ns` poller stop (htmx 2: status 286)."""
    return make_response(body, 286)


def trigger(response: Response, event: str, detail=None) -> Response:
    """Add an event to HX-Trigger, merging with events already set by other layers."""
    current = response.headers.get("HX-Trigger")
    events = {}
    if current:
        try:
            events = json.loads(current)
        except ValueError:
            events = {name.strip(): None for name in current.split(",")}
    events[event] = detail
    response.headers["HX-Trigger"] = json.dumps(events)
    return response


def toast(response: Response, message: str, error: bool = False) -> Response:
    """Show a toast after the swap (the base layout listens for `toast`).

    The flag is `isError`, not `error`: htmx logs a console error for any event whose detail has `error`.
    """
    return trigger(response, "toast", {"message": message, "isError": error})


def redirect_to(url: str) -> Response:
    """HX-Location for htmx requests (an in-app URL), a 303 otherwise."""
    if is_htmx():
        response = make_response("", 200)
        # The htmx request for `url` gets the page's partial back, which is swapped into <main>.
        response.headers["HX-Location"] = json.dumps({"path": url, "target": "#main"})
        return response
    return redirect(url, 303)


def add_vary(response: Response) -> Response:
    """Responses differ for htmx and full requests; caches must know."""
    response.vary.add("HX-Request")
    return response
