"""The public endpoint the shop's web pixel posts its batches of storefront events to: POST /pixel/events.

The pixel runs in Shopify's sandbox on the storefront and posts as `text/plain` (fetch with keepalive, or
sendBeacon), a CORS "simple" request with no preflight and no credentials; every answer carries
`Access-Control-Allow-Origin: *`, and an OPTIONS preflight (a client that sends JSON) is answered too.
What is accepted: a body of at most defaults.PIXEL_MAX_BODY_BYTES with a Content-Length, JSON without NUL
characters or lone surrogates, the key of an installed shop, at most defaults.PIXEL_MAX_EVENTS events each
in Shopify's shape (kinnekt/storefront/events.py), within the shop's and each browser's rate
(kinnekt/storefront/limits.py). Anything else gets a 4xx with a reason and stores nothing; a database that
cannot be reached is a 503 (the pixel drops the batch). Never a 500.

Every batch goes through here (a page's worth of events, a thousand events a second in bench/pixel.py), so the
view does each thing once and only when needed: the body parsed once, walked for unstorable text only when its
bytes could hold some, the key's shop remembered briefly (kinnekt/storefront/pixel_keys.py), both rate limits in
one Redis round trip, identity lookups only for batches that carry a clue (kinnekt/storefront/ingest.py).

**Before Flask.** `FastPath` (installed on the app's `wsgi_app` when the blueprint is registered) answers a POST
or OPTIONS of exactly /pixel/events itself, in an app context (the database session, the queue, the config) but
without the request machinery the admin's pages need and this endpoint does not: the request context, the
signed-cookie session opened for every request, the URL map, the before-request hooks (NUL characters in the path
or query: this path is fixed, and a request with any query string goes through Flask as before), the after-request
headers of HTML pages (this answer carries its own: CORS, no-store, nosniff, a CSP that allows nothing) and the
JSON provider. That was about a fifth of the endpoint's CPU per batch (bench/pixel_cpu.py). Every check of the
batch is the same code as before (`receive_batch`), and the blueprint's routes run it too.
"""
from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.storefront import events, ingest, limits, pixel_keys
from kinnekt.web import guards

bp = Blueprint("pixel", __name__)
log = logging.getLogger(__name__)

PATH = "/pixel/events"

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}
"""The pixel's sandbox has an opaque or storefront origin, and sends no cookies: any origin may post."""

HEADERS = (*CORS.items(), ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "strict-origin-when-cross-origin"),
           ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"))
"""Every answer's headers besides its type and length: a JSON answer runs nothing and is framed by no one."""

STATUS_LINES = {200: "200 OK", 204: "204 No Content", 400: "400 Bad Request", 403: "403 Forbidden",
                411: "411 Length Required", 413: "413 Content Too Large", 429: "429 Too Many Requests",
                500: "500 Internal Server Error", 503: "503 Service Unavailable"}


def _refusal(status: int, error: str, *extra) -> tuple[int, dict, tuple]:
    return status, {"ok": False, "error": error}, extra


def receive_batch(environ: dict) -> tuple[int, dict, tuple]:
    """Check and store the batch a WSGI request carries (in an app context): (status, JSON body, extra headers).
    Every refusal is a 4xx with a reason and stores nothing; a database that cannot be reached is a 503."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        length = -1
    if length < 0:
        return _refusal(411, "A Content-Length is required.")
    if length > defaults.PIXEL_MAX_BODY_BYTES:
        return _refusal(413, f"A batch is at most {defaults.PIXEL_MAX_BODY_BYTES} bytes.")
    body = environ["wsgi.input"].read(length) if length else b""
    try:
        document = guards.parse_json(body)
    except guards.BadJson as exc:
        return _refusal(400, f"The body is not usable JSON ({exc}).")
    bad = guards.unstorable_text(document) if guards.may_hold_unstorable_text(body) else None
    if bad is not None:
        return _refusal(400, f"The body {bad.why} at {bad.where or 'its top level'}.")
    key = document.get("key") if isinstance(document, dict) else None
    if not isinstance(key, str) or not events.TOKEN.match(key):
        return _refusal(400, "key is missing or malformed")
    now = utcnow()
    try:
        shop = pixel_keys.shop_for_key(Session, key)  # remembered for a few seconds: see pixel_keys
        if shop is None:
            return _refusal(403, "This key belongs to no shop with Kinnekt installed.")
        try:
            batch = events.read_batch(document, now)
        except events.InvalidBatch as exc:
            return _refusal(400, str(exc))
        counts: dict[str, int] = {}
        for event in batch.events:
            counts[event.client_id] = counts.get(event.client_id, 0) + 1
        if not limits.admit(shop.id, counts, redis_url=current_app.config.get("REDIS_URL")):
            return _refusal(429, "Too many events; try again later.",
                            ("Retry-After", str(defaults.PIXEL_RATE_WINDOW_SECONDS)))
        stored = ingest.store(Session, shop, batch, now)
    except SQLAlchemyError as exc:
        Session.rollback()
        current_app.logger.warning("pixel batch not stored: %s", type(exc).__name__)
        return _refusal(503, "Events cannot be stored right now.", ("Retry-After", "30"))
    return 200, {"ok": True, "received": stored.received, "stored": stored.stored}, ()


def _headers(app, environ: dict, length: int | None, extra: tuple) -> list[tuple[str, str]]:
    headers = [] if length is None else [("Content-Type", "application/json"), ("Content-Length", str(length))]
    headers += [*HEADERS, *extra]
    if environ.get("wsgi.url_scheme") == "https" or str(app.config.get("SHOPIFY_APP_URL", "")).startswith("https://"):
        from kinnekt.web.headers import HSTS
        headers.append(("Strict-Transport-Security", HSTS))
    return headers


def answer(app, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    """The whole answer to a POST or OPTIONS of /pixel/events: (status line, headers, body). In an app context."""
    if environ.get("REQUEST_METHOD") == "OPTIONS":  # the CORS preflight of a client that posts JSON
        return STATUS_LINES[204], _headers(app, environ, None, ()), b""
    try:
        status, payload, extra = receive_batch(environ)
    except Exception:  # noqa: BLE001 - as the app's own handler of the unexpected: logged, nothing saved
        Session.rollback()
        log.exception("unhandled error on POST %s", PATH)
        status, payload, extra = 500, {"ok": False, "error": "Something went wrong; the batch was not stored."}, ()
    body = json.dumps(payload, separators=(",", ":")).encode()
    return STATUS_LINES[status], _headers(app, environ, len(body), extra), body


class FastPath:
    """WSGI middleware: POST and OPTIONS of exactly /pixel/events (no query string) answered in an app context,
    before Flask's request handling; every other request goes to the app as it is."""

    def __init__(self, wsgi_app, app):
        self.wsgi_app = wsgi_app
        self.app = app
        self.background = not app.config.get("TESTING")

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("QUERY_STRING") \
                or environ.get("REQUEST_METHOD") not in ("POST", "OPTIONS"):
            return self.wsgi_app(environ, start_response)
        with self.app.app_context():
            if self.background:  # the demo's in-process jobs start at the first request, whichever it is
                from kinnekt.schedule import start_background
                start_background(self.app)
            status, headers, body = answer(self.app, environ)
        start_response(status, headers)
        return [body]


@bp.record_once
def _install(state) -> None:
    state.app.wsgi_app = FastPath(state.app.wsgi_app, state.app)


def _flask_answer() -> Response:
    status, headers, body = answer(current_app, request.environ)
    return Response(body, status=status, headers=headers)


@bp.route(PATH, methods=["OPTIONS"])
def preflight():
    """The CORS preflight of a client that posts JSON (our pixel posts text/plain and needs none)."""
    return _flask_answer()


@bp.post(PATH)
def receive():
    """Store a batch of storefront events for the shop whose key it carries: {ok, received, stored} or
    {ok: false, error}. (Reached through Flask only with a query string: FastPath answers the rest.)"""
    return _flask_answer()
