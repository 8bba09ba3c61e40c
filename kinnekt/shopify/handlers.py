"""Webhook topic handlers: each turns one stored delivery into calls of the ingest and compliance functions."""
from __future__ import annotations

import functools
import importlib
import json
import logging

from sqlalchemy import select, update

from kinnekt import signals
from kinnekt.db import Session, utcnow
from kinnekt.models import Automation, Campaign, Shop, WebhookEvent
from kinnekt.models.campaign import CampaignStatus
from kinnekt.shopify import compliance, install, webhooks
from kinnekt.shopify.ingest import rest
from kinnekt.shopify.ingest.catalog import delete_collection, delete_product, upsert_collections, upsert_products
from kinnekt.shopify.ingest.checkouts import upsert_checkouts
from kinnekt.shopify.ingest.customers import delete_customer, update_sms_consent, upsert_customers
from kinnekt.shopify.ingest.orders import delete_order, upsert_orders
from kinnekt.shopify.webhook_handlers import handles
from kinnekt.tenancy import bind_shop, current_shop_id

log = logging.getLogger(__name__)

UNINSTALL_REASON = "App uninstalled"


def shop_of(event: WebhookEvent) -> Shop | None:
    """The shop an event belongs to (linking the event when the shop was installed after it arrived)."""
    if event.shop_id is not None:
        return Session.get(Shop, event.shop_id)
    shop = Session.scalar(select(Shop).where(Shop.domain == event.shop_domain))
    if shop is not None:
        event.shop_id = shop.id
    return shop


def for_shop(*topics: str):
    """Register `func(event, shop, payload) -> note` for topics; an unknown shop or a bad payload is a no-op note."""
    def register(func):
        @handles(*topics)
        @functools.wraps(func)
        def handler(event: WebhookEvent) -> str | None:
            shop = shop_of(event)
            if shop is None:
                return f"no shop {event.shop_domain} here: nothing to do"
            try:
                payload = json.loads(event.payload)
            except ValueError:
                return "payload is not JSON: nothing to do"
            # The intake refuses these already; an event stored before it did must not act either.
            problem = webhooks.shape_problem(event.topic, payload) if isinstance(payload, dict) else "not an object"
            if problem is not None:
                return f"{problem}: ignored"
            previous = current_shop_id()
            bind_shop(shop.id)
            try:
                return func(event, shop, payload)
            except rest.BadPayload as exc:
                Session.rollback()
                return f"bad payload: {exc}"
            finally:
                bind_shop(previous)
        return handler
    return register


def _when(event: WebhookEvent):
    """When the change happened in Shopify: the Triggered-At header, else when we received it."""
    return event.triggered_at or event.received_at or utcnow()


def _changed(ids, what: str) -> str:
    return f"{what} stored" if ids else f"{what} unchanged (not newer than stored)"


def _embedded_customer(shop: Shop, payload: dict) -> None:
    customer = rest.embedded_customer(payload)
    if customer is not None:
        upsert_customers(Session, shop, [rest.customer_row(customer)], with_tags=rest.has_tags(customer))


# -- customers --

@for_shop("customers/create", "customers/update")
def customer_changed(event, shop, payload):
    """Upsert the customer; tags only when the payload carries them (API 2025-01+ customer payloads do not)."""
    ids = upsert_customers(Session, shop, [rest.customer_row(payload)], with_tags=rest.has_tags(payload))
    return _changed(ids, f"customer {payload.get('id')}")


@for_shop("customers/delete")
def customer_deleted(event, shop, payload):
    """Delete the customer; its subscribers stay, unlinked."""
    customer_id = rest.required_id(payload)
    found = delete_customer(Session, shop, customer_id, deleted_at=_when(event))
    return f"customer {customer_id} deleted" if found else f"customer {customer_id} was not stored"


@for_shop("customers_marketing_consent/update")
def sms_consent_changed(event, shop, payload):
    """Store the customer's SMS consent and hand it to the subscribers side (checkout consent)."""
    change = rest.consent_change(payload)
    found = update_sms_consent(Session, shop, change.customer_shopify_id, state=change.state, phone=change.phone,
                               consent_updated_at=change.consent_updated_at or _when(event),
                               opt_in_level=change.opt_in_level)
    if found is None:
        return f"customer {change.customer_shopify_id} was deleted: consent ignored"
    return f"customer {change.customer_shopify_id} SMS consent {change.state}"


# -- orders --

@for_shop("orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled",
          "orders/partially_fulfilled")
def order_changed(event, shop, payload):
    """Upsert the order's customer (when newer), then the order; facts and segments follow."""
    row = rest.order_row(payload)
    _embedded_customer(shop, payload)
    return _changed(upsert_orders(Session, shop, [row]), f"order {row.shopify_id}")


@for_shop("orders/delete")
def order_deleted(event, shop, payload):
    """Delete the order; its customer's facts are recomputed."""
    order_id = rest.required_id(payload)
    found = delete_order(Session, shop, order_id, deleted_at=_when(event))
    return f"order {order_id} deleted" if found else f"order {order_id} was not stored"


# -- catalog --

@for_shop("products/create", "products/update")
def product_changed(event, shop, payload):
    """Upsert the product."""
    row = rest.product_row(payload)
    return _changed(upsert_products(Session, shop, [row]), f"product {row.shopify_id}")


@for_shop("products/delete")
def product_deleted(event, shop, payload):
    """Delete the product and its collection memberships."""
    product_id = rest.required_id(payload)
    delete_product(Session, shop, product_id, deleted_at=_when(event))
    return f"product {product_id} deleted"


@for_shop("collections/create", "collections/update")
def collection_changed(event, shop, payload):
    """Upsert the collection; its products are kept unless the payload lists them."""
    row = rest.collection_row(payload)
    return _changed(upsert_collections(Session, shop, [row]), f"collection {row.shopify_id}")


@for_shop("collections/delete")
def collection_deleted(event, shop, payload):
    """Delete the collection and its memberships."""
    collection_id = rest.required_id(payload)
    delete_collection(Session, shop, collection_id, deleted_at=_when(event))
    return f"collection {collection_id} deleted"


# -- checkouts --

@for_shop("checkouts/create", "checkouts/update")
def checkout_changed(event, shop, payload):
    """Upsert the checkout (completed_at set means it is no longer a started checkout)."""
    row = rest.checkout_row(payload)
    _embedded_customer(shop, payload)
    return _changed(upsert_checkouts(Session, shop, [row]), f"checkout {row.token}")


# -- app --

def mark_uninstalled(session, shop: Shop, *, at) -> int:
    """Mark the shop uninstalled, drop its (revoked) tokens, stop its scheduled and running campaigns. Commits.

    Returns how many campaigns were stopped: scheduled ones fail, running ones end, both with the reason
    "App uninstalled" (their sends check the campaign status before every message).
    """
    shop.uninstalled_at = at
    shop.access_token_enc = None
    shop.access_token_expires_at = None
    shop.refresh_token_enc = None
    shop.refresh_token_expires_at = None
    shop.needs_reauth = True
    stopped = 0
    for old, new in ((CampaignStatus.SCHEDULED, CampaignStatus.FAILED), (CampaignStatus.IN_PROGRESS,
                                                                         CampaignStatus.ENDED)):
        stopped += session.execute(
            update(Campaign).where(Campaign.shop_id == shop.id, Campaign.status == old)
            .values(status=new, failure_reason=UNINSTALL_REASON, finished_at=at)
            .execution_options(synchronize_session=False)).rowcount or 0
    # Automations are switched off (their message campaigns ended above): a reinstall shows them off.
    session.execute(update(Automation).where(Automation.shop_id == shop.id, Automation.enabled.is_(True))
                    .values(enabled=False).execution_options(synchronize_session=False))
    session.commit()
    return stopped


def _names_this_shop(event: WebhookEvent, payload: dict, *keys: str) -> bool:
    """False when the payload names a different shop than the (HMAC-unprotected) domain header."""
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() != event.shop_domain:
            return False
    return True


@for_shop("app/uninstalled")
def app_uninstalled(event, shop, payload):
    """Mark the shop uninstalled once Shopify confirms it (it refuses our token), unless installed again since.

    When Shopify cannot be asked (unreachable, failing) this raises, so the event stays unprocessed and is
    tried again later: an uninstall is neither done nor dropped on a guess.
    """
    if not _names_this_shop(event, payload, "myshopify_domain"):
        return "payload names another shop: ignored"
    if not shop.installed:
        return "shop already uninstalled: nothing to do"
    at = _when(event)
    if shop.installed_at is not None and shop.installed_at > at:
        return "shop was installed again after this uninstall: ignored"
    if install.still_installed(shop):
        return "Shopify still answers with our token: not uninstalled, ignored"
    stopped = mark_uninstalled(Session, shop, at=at)
    return f"uninstalled; {stopped} campaign(s) stopped"


@for_shop("app/scopes_update")
def scopes_updated(event, shop, payload):
    """Store the access scopes the merchant granted now."""
    current = payload.get("current")
    if isinstance(current, str):
        current = current.split(",")
    if not isinstance(current, list):
        return "bad payload: no current scopes"
    shop.scopes = ",".join(sorted({str(s).strip() for s in current if str(s).strip()}))
    Session.commit()
    return f"scopes now {shop.scopes}"


@for_shop("bulk_operations/finish")
def bulk_finished(event, shop, payload):
    """Hand the finished bulk operation to the bulk sync (kinnekt.shopify.bulk), when that module is installed."""
    gid = payload.get("admin_graphql_api_id")
    status = str(payload.get("status") or "").lower()
    if not gid:
        return "bad payload: no admin_graphql_api_id"
    try:
        bulk = importlib.import_module("kinnekt.shopify.bulk")
    except ModuleNotFoundError as exc:
        if exc.name != "kinnekt.shopify.bulk":
            raise
        return f"bulk operation {gid} {status}: stored (no bulk sync module)"
    if bulk.on_bulk_finished(shop, gid, status) is False:
        return f"bulk operation {gid} {status}: not one of our syncs"
    return f"bulk operation {gid} {status}: handed to bulk sync"


@for_shop("app_subscriptions/update", "app_subscriptions/approaching_capped_amount")
def subscription_changed(event, shop, payload):
    """The shop's plan changed at Shopify (approved, cancelled, frozen, cap raised) or nears its capped amount:
    announced to billing (kinnekt.billing.plans), whose note is the event's."""
    results = signals.announce(signals.subscription_changed, Session, shop=shop, topic=event.topic, payload=payload)
    return "; ".join(str(note) for _, note in results if note) or "no billing receiver: stored"


# -- compliance --

@for_shop("customers/data_request")
def customers_data_request(event, shop, payload):
    """Collect what we hold for the customer into a DataRequest the merchant downloads."""
    if not _names_this_shop(event, payload, "shop_domain"):
        return "payload names another shop: ignored"
    data_request = compliance.record_data_request(Session, shop, payload)
    if data_request is None:
        return "data request already stored"
    return f"data request {data_request.id} ready for the merchant"


@for_shop("customers/redact")
def customers_redact(event, shop, payload):
    """Erase the customer's personal data; this event keeps only the customer id."""
    if not _names_this_shop(event, payload, "shop_domain"):
        return "payload names another shop: ignored"
    done = compliance.redact_customer(Session, shop, payload, keep_event_id=event.id)
    customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
    event.payload = json.dumps({"customer": {"id": customer.get("id")}, "redacted": True})
    return done.summary()


@for_shop("shop/redact")
def shop_redact(event, shop, payload):
    """Delete all of the shop's data, unless it was installed again after the request."""
    if not _names_this_shop(event, payload, "shop_domain"):
        return "payload names another shop: ignored"
    if shop.installed_at is not None and shop.uninstalled_at is None and shop.installed_at > _when(event):
        return "shop was installed again after this request: nothing erased"
    # Shopify sends shop/redact 48 hours after an uninstall. A shop installed here either missed that
    # uninstall or is the target of a replayed body: Shopify's answer tells which (raises when it cannot).
    if shop.installed and install.still_installed(shop):
        return "Shopify still answers with our token: the app is installed, nothing erased"
    compliance.redact_shop(Session, shop, keep_event_id=event.id)
    event.shop_id = None
    return f"all data of {event.shop_domain} erased"
