"""Public Shopify webhook endpoints: size limit, HMAC, headers, store, enqueue, answer fast."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from kinnekt.shopify import webhooks
from kinnekt.web import guards

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _receive(endpoint: str) -> Response:
    """The whole intake for one endpoint; the view functions below only name the endpoint."""
    # A Content-Length over the limit is refused unread; a chunked body is read one byte past the limit at most
    # (Werkzeug stops a stream at the limit without an error, so the extra byte tells "too long" from "exact").
    limit = current_app.config["MAX_WEBHOOK_BYTES"]
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _answer(413, "body too large")
    if len(body) > limit:
        return _answer(413, "body too large")
    guards.refuse_deep_json(body)
    if not webhooks.verify_hmac(body, request.headers.get(webhooks.HMAC_HEADER),
                                current_app.config["SHOPIFY_API_SECRET"]):
        return _answer(401, "invalid HMAC")
    try:
        delivery = webhooks.parse_delivery(endpoint, request.headers, body)
    except webhooks.BadWebhook as exc:
        log.warning("rejected %s webhook: %s", endpoint, exc)
        return _answer(400, str(exc))
    event_id = webhooks.store(delivery)
    if event_id is not None:
        webhooks.enqueue(event_id)
    return _answer(200, "")


def _answer(status: int, message: str) -> Response:
    return Response(message, status=status, mimetype="text/plain")


@bp.post("/app")
def app_events():
    """app/uninstalled, app/scopes_update."""
    return _receive("app")


@bp.post("/billing")
def billing():
    """app_subscriptions/update, app_subscriptions/approaching_capped_amount."""
    return _receive("billing")


@bp.post("/customers")
def customers():
    """customers/create|update|delete, customers_marketing_consent/update."""
    return _receive("customers")


@bp.post("/orders")
def orders():
    """orders/create|updated|paid|cancelled|fulfilled|partially_fulfilled|delete."""
    return _receive("orders")


@bp.post("/catalog")
def catalog():
    """products/* and collections/*."""
    return _receive("catalog")


@bp.post("/checkouts")
def checkouts():
    """checkouts/create|update."""
    return _receive("checkouts")


@bp.post("/bulk")
def bulk():
    """bulk_operations/finish."""
    return _receive("bulk")


@bp.post("/compliance/customers-data-request")
def customers_data_request():
    """Mandatory compliance topic customers/data_request."""
    return _receive("customers-data-request")


@bp.post("/compliance/customers-redact")
def customers_redact():
    """Mandatory compliance topic customers/redact."""
    return _receive("customers-redact")


@bp.post("/compliance/shop-redact")
def shop_redact():
    """Mandatory compliance topic shop/redact."""
    return _receive("shop-redact")
