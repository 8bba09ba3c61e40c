"""Shopify webhook intake: HMAC verification, header parsing, and storing a delivery as a WebhookEvent."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from kinnekt.db import engine, utcnow
from kinnekt.models import Shop, WebhookEvent
from kinnekt.shopify.session_token import is_shop_domain
from kinnekt.shopify.values import timestamp

# Which topics each endpoint accepts; mirrors the [[webhooks.subscriptions]] blocks of shopify.app.toml.
TOPICS_BY_ENDPOINT: dict[str, frozenset[str]] = {
    "app": frozenset({"app/uninstalled", "app/scopes_update"}),
    "billing": frozenset({"app_subscriptions/update", "app_subscriptions/approaching_capped_amount"}),
    "customers": frozenset({"customers/create", "customers/update", "customers/delete",
                            "customers_marketing_consent/update"}),
    "orders": frozenset({"orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled",
                         "orders/partially_fulfilled", "orders/delete"}),
    "catalog": frozenset({"products/create", "products/update", "products/delete",
                          "collections/create", "collections/update", "collections/delete"}),
    "checkouts": frozenset({"checkouts/create", "checkouts/update"}),
    "bulk": frozenset({"bulk_operations/finish"}),
    "customers-data-request": frozenset({"customers/data_request"}),
    "customers-redact": frozenset({"customers/redact"}),
    "shop-redact": frozenset({"shop/redact"}),
}
ALL_TOPICS = frozenset().union(*TOPICS_BY_ENDPOINT.values())

# What a body must (and must not) hold to be one of its topic. The HMAC covers the body only: a genuine body of
# one topic replayed under another topic's header verifies, so the body has to look like its topic. Keys that
# tell the compliance payloads apart: a data request has `data_request` and `orders_requested`, a customer
# redaction `orders_to_redact`, a shop redaction neither nor a customer; app/uninstalled carries a Shop object.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "app/uninstalled": ("id", "myshopify_domain"),
    "app/scopes_update": ("current",),
    "app_subscriptions/update": ("app_subscription",),
    "app_subscriptions/approaching_capped_amount": ("admin_graphql_api_id", "capped_amount", "balance_used"),
    "bulk_operations/finish": ("admin_graphql_api_id",),
    "customers_marketing_consent/update": ("customer_id",),
    "checkouts/create": ("token",),
    "checkouts/update": ("token",),
    "customers/data_request": ("shop_domain", "customer", "data_request"),
    "customers/redact": ("shop_domain", "customer", "orders_to_redact"),
    "shop/redact": ("shop_id", "shop_domain"),
}
FORBIDDEN_KEYS: dict[str, tuple[str, ...]] = {
    "app/uninstalled": ("shop_domain", "orders_to_redact", "data_request"),
    "customers/data_request": ("orders_to_redact",),
    "customers/redact": ("data_request", "orders_requested"),
    "shop/redact": ("customer", "orders_to_redact", "orders_requested", "data_request", "myshopify_domain"),
}
# A REST payload's `admin_graphql_api_id`, when it has one, names the kind of object it is.
GID_KIND_BY_PREFIX = {"customers/": "Customer", "orders/": "Order", "products/": "Product",
                      "collections/": "Collection", "bulk_operations/": "BulkOperation",
                      "app_subscriptions/": "AppSubscription"}

HMAC_HEADER = "X-Shopify-Hmac-Sha256"
MAX_ID_LENGTH = 64  # webhook_id / event_id columns


class BadWebhook(ValueError):
    """A signed delivery we cannot accept (missing headers, bad shop domain, not JSON, wrong endpoint)."""


@dataclass(frozen=True)
class Delivery:
    """The parts of a verified delivery we store."""

    webhook_id: str
    topic: str
    shop_domain: str
    event_id: str | None
    api_version: str | None
    triggered_at: dt.datetime | None
    payload: str


def sign(body: bytes, secret: str) -> str:
    """The X-Shopify-Hmac-Sha256 value for a body: base64 of HMAC-SHA256 with the app secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode("ascii")


def verify_hmac(body: bytes, header: str | None, secret: str) -> bool:
    """True when `header` is the body's HMAC under `secret`; constant-time, False for a missing header or secret."""
    if not header or not secret:
        return False
    # Compare the canonical base64 text: decoding first would also accept other spellings of the same bytes.
    return hmac.compare_digest(sign(body, secret).encode("ascii"), header.strip().encode("utf-8", "replace"))


def shape_problem(topic: str, document: dict) -> str | None:
    """Why `document` cannot be a body of `topic` (a body of another topic under a swapped header), or None."""
    missing = [key for key in REQUIRED_KEYS.get(topic, ()) if key not in document]
    if missing:
        return f"body is not a {topic} payload (no {', '.join(missing)})"
    foreign = [key for key in FORBIDDEN_KEYS.get(topic, ()) if key in document]
    if foreign:
        return f"body is not a {topic} payload (it has {', '.join(foreign)})"
    kind = next((k for prefix, k in GID_KIND_BY_PREFIX.items() if topic.startswith(prefix)), None)
    gid = document.get("admin_graphql_api_id")
    if kind is not None and isinstance(gid, str) and not gid.startswith(f"gid://shopify/{kind}/"):
        return f"body is not a {topic} payload (its admin_graphql_api_id is {ascii(gid[:80])})"
    return None


def parse_delivery(endpoint: str, headers, body: bytes) -> Delivery:
    """Check the headers and body of a verified delivery for `endpoint`; raise BadWebhook saying what is wrong."""
    topic = (headers.get("X-Shopify-Topic") or "").strip()
    domain = (headers.get("X-Shopify-Shop-Domain") or "").strip().lower()
    webhook_id = (headers.get("X-Shopify-Webhook-Id") or "").strip()
    missing = [name for name, value in (("X-Shopify-Topic", topic), ("X-Shopify-Shop-Domain", domain),
                                        ("X-Shopify-Webhook-Id", webhook_id)) if not value]
    if missing:
        raise BadWebhook("missing header " + ", ".join(missing))
    if not is_shop_domain(domain):
        raise BadWebhook("X-Shopify-Shop-Domain is not a *.myshopify.com domain")
    if len(webhook_id) > MAX_ID_LENGTH:
        raise BadWebhook("X-Shopify-Webhook-Id is too long")
    allowed = TOPICS_BY_ENDPOINT.get(endpoint, frozenset())
    if topic not in allowed:
        raise BadWebhook(f"topic {topic!r} is not delivered to this endpoint")
    try:
        payload = body.decode("utf-8")
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise BadWebhook("body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise BadWebhook("body is not a JSON object")
    problem = shape_problem(topic, document)
    if problem is not None:
        raise BadWebhook(problem)
    event_id = (headers.get("X-Shopify-Event-Id") or "").strip() or None
    if event_id is not None and len(event_id) > MAX_ID_LENGTH:
        raise BadWebhook("X-Shopify-Event-Id is too long")
    return Delivery(
        webhook_id=webhook_id, topic=topic, shop_domain=domain, event_id=event_id,
        api_version=(headers.get("X-Shopify-API-Version") or "").strip()[:16] or None,
        triggered_at=timestamp(headers.get("X-Shopify-Triggered-At")), payload=payload,
    )


# Built once: the intake runs this statement for every delivery, with only the bound values changing.
_INSERT_EVENT = insert(WebhookEvent).values(
    webhook_id=bindparam("webhook_id"), event_id=bindparam("event_id"),
    shop_id=select(Shop.id).where(Shop.domain == bindparam("shop_domain")).scalar_subquery(),
    shop_domain=bindparam("shop_domain"), topic=bindparam("topic"), api_version=bindparam("api_version"),
    triggered_at=bindparam("triggered_at"), payload=bindparam("payload"), received_at=bindparam("received_at"),
    attempts=0,
).returning(WebhookEvent.id)


def store(delivery: Delivery) -> int | None:
    """Insert the delivery as a WebhookEvent (linked to its shop when we know it); its id, or None for a duplicate.

    One INSERT in autocommit, with the shop looked up inside it: the intake's cost is a single round trip and
    commit. The unique webhook_id turns Shopify's retry of a delivery we hold into an IntegrityError.
    """
    values = {"webhook_id": delivery.webhook_id, "event_id": delivery.event_id, "shop_domain": delivery.shop_domain,
              "topic": delivery.topic, "api_version": delivery.api_version, "triggered_at": delivery.triggered_at,
              "payload": delivery.payload, "received_at": utcnow()}
    with engine().connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            return conn.execute(_INSERT_EVENT, values).scalar_one()
        except IntegrityError:
            return None


def enqueue(event_id: int) -> None:
    """Queue processing of a stored event (one job per event id, the id recovery uses too)."""
    from kinnekt.shopify import tasks  # its module loads every topic's handler, and they read this module
    tasks.enqueue_process_webhook_event(event_id)
