"""Webhook payloads shaped like Shopify's documented REST samples (API 2026-10), and a signed-delivery helper."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import uuid

API_VERSION = "2026-10"

# Which endpoint each topic is delivered to (shopify.app.toml).
ENDPOINTS = {
    "app/uninstalled": "/webhooks/app", "app/scopes_update": "/webhooks/app",
    "customers/create": "/webhooks/customers", "customers/update": "/webhooks/customers",
    "customers/delete": "/webhooks/customers", "customers_marketing_consent/update": "/webhooks/customers",
    "orders/create": "/webhooks/orders", "orders/updated": "/webhooks/orders", "orders/paid": "/webhooks/orders",
    "orders/cancelled": "/webhooks/orders", "orders/fulfilled": "/webhooks/orders",
    "orders/partially_fulfilled": "/webhooks/orders", "orders/delete": "/webhooks/orders",
    "products/create": "/webhooks/catalog", "products/update": "/webhooks/catalog",
    "products/delete": "/webhooks/catalog", "collections/create": "/webhooks/catalog",
    "collections/update": "/webhooks/catalog", "collections/delete": "/webhooks/catalog",
    "checkouts/create": "/webhooks/checkouts", "checkouts/update": "/webhooks/checkouts",
    "bulk_operations/finish": "/webhooks/bulk",
    "app_subscriptions/update": "/webhooks/billing", "app_subscriptions/approaching_capped_amount": "/webhooks/billing",
    "customers/data_request": "/webhooks/compliance/customers-data-request",
    "customers/redact": "/webhooks/compliance/customers-redact",
    "shop/redact": "/webhooks/compliance/shop-redact",
}

_ids = itertools.count(820_982_911_946_154_508)


def next_id() -> int:
    """A fresh 64-bit-sized Shopify id."""
    return next(_ids)


def ts(value: dt.datetime | str | None) -> str | None:
    """A timestamp as Shopify writes it: ISO 8601 in the shop's offset (here -05:00)."""
    if value is None or isinstance(value, str):
        return value
    return value.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat(timespec="seconds")


def gid(kind: str, value: int) -> str:
    """The admin_graphql_api_id of an object."""
    return f"gid://shopify/{kind}/{value}"


def address(customer_id: int, *, city="Ottawa", country_code="CA", phone="555-625-1199", first_name="Bob",
            last_name="Norman") -> dict:
    """A customer address (default_address)."""
    return {
        "id": next_id(), "customer_id": customer_id, "first_name": first_name, "last_name": last_name,
        "company": None, "address1": "Chestnut Street 92", "address2": "", "city": city, "province": "Ontario",
        "country": "Canada" if country_code == "CA" else "United States", "zip": "K2P 1L4", "phone": phone,
        "name": f"{first_name} {last_name}", "province_code": "ON", "country_code": country_code,
        "country_name": "Canada" if country_code == "CA" else "United States", "default": True,
    }


def customer(customer_id: int | None = None, *, email="bob@example.com", phone="+16135550142", first_name="Bob",
             last_name="Norman", city="Ottawa", country_code="CA", created_at=None, updated_at=None,
             tags: str | None = None, sms_consent: dict | None = None) -> dict:
    """customers/create|update (2025-01+: no tags and no consent objects unless given, as older versions had)."""
    customer_id = customer_id or next_id()
    created_at = created_at or dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.timezone.utc)
    updated_at = updated_at or created_at
    payload = {
        "id": customer_id, "email": email, "created_at": ts(created_at), "updated_at": ts(updated_at),
        "first_name": first_name, "last_name": last_name, "orders_count": 0, "state": "enabled",
        "total_spent": "0.00", "last_order_id": None, "note": None, "verified_email": True,
        "multipass_identifier": None, "tax_exempt": False, "phone": phone, "currency": "CAD",
        "addresses": [], "tax_exemptions": [], "admin_graphql_api_id": gid("Customer", customer_id),
        "default_address": address(customer_id, city=city, country_code=country_code, first_name=first_name,
                                   last_name=last_name) if city or country_code else None,
    }
    if payload["default_address"]:
        payload["addresses"] = [payload["default_address"]]
    if tags is not None:
        payload["tags"] = tags
    if sms_consent is not None:
        payload["sms_marketing_consent"] = sms_consent
    return payload


def customer_deleted(customer_id: int) -> dict:
    """customers/delete."""
    return {"id": customer_id, "phone": None, "addresses": [], "tax_exemptions": [],
            "email_marketing_consent": None, "admin_graphql_api_id": gid("Customer", customer_id)}


def marketing_consent(customer_id: int, *, phone="+16135550142", state="subscribed", opt_in_level="single_opt_in",
                      consent_updated_at=None, collected_from="SHOPIFY") -> dict:
    """customers_marketing_consent/update: the customer's SMS marketing consent."""
    return {
        "customer_id": customer_id, "phone_number": phone,
        "sms_marketing_consent": {
            "state": state, "opt_in_level": opt_in_level,
            "consent_updated_at": ts(consent_updated_at or dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.timezone.utc)),
            "consent_collected_from": collected_from,
        },
    }


def line_item(*, product_id: int | None = None, variant_id: int | None = None, title="IPod Nano - 8GB",
              variant_title="green", quantity=1, price="199.00") -> dict:
    """One of an order's line_items."""
    item_id = next_id()
    return {
        "id": item_id, "admin_graphql_api_id": gid("LineItem", item_id), "fulfillable_quantity": quantity,
        "fulfillment_service": "manual", "fulfillment_status": None, "gift_card": False, "grams": 200,
        "name": f"{title} - {variant_title}" if variant_title else title, "price": price,
        "price_set": {"shop_money": {"amount": price, "currency_code": "USD"},
                      "presentment_money": {"amount": price, "currency_code": "USD"}},
        "product_exists": True, "product_id": product_id, "properties": [], "quantity": quantity,
        "current_quantity": quantity, "requires_shipping": True, "sku": "IPOD2008GREEN", "taxable": True,
        "title": title, "total_discount": "0.00", "variant_id": variant_id, "variant_title": variant_title,
        "vendor": None, "tax_lines": [], "duties": [], "discount_allocations": [],
    }


def _money_set(amount: str) -> dict:
    return {"shop_money": {"amount": amount, "currency_code": "USD"},
            "presentment_money": {"amount": amount, "currency_code": "USD"}}


def order(order_id: int | None = None, *, customer_payload: dict | None = None, line_items: list | None = None,
          total_price="199.00", current_total_price: str | None = None, total_discounts="0.00",
          discount_codes: list | None = None, financial_status="paid", fulfillment_status=None,
          cancelled_at=None, test=False, created_at=None, updated_at=None, name="#1001", email="bob@example.com",
          phone=None, landing_site="/?utm_source=kinnekt&utm_campaign=7") -> dict:
    """orders/create|updated|paid|cancelled|fulfilled|partially_fulfilled."""
    order_id = order_id or next_id()
    created_at = created_at or dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.timezone.utc)
    updated_at = updated_at or created_at
    current_total_price = total_price if current_total_price is None else current_total_price
    return {
        "id": order_id, "admin_graphql_api_id": gid("Order", order_id), "app_id": None,
        "browser_ip": "192.0.2.1", "buyer_accepts_marketing": False, "cancel_reason": "customer" if cancelled_at
        else None, "cancelled_at": ts(cancelled_at), "cart_token": None, "checkout_id": next_id(),
        "checkout_token": uuid.uuid4().hex, "closed_at": None, "confirmed": True, "contact_email": email,
        "created_at": ts(created_at), "currency": "USD", "current_subtotal_price": current_total_price,
        "current_subtotal_price_set": _money_set(current_total_price), "current_total_discounts": total_discounts,
        "current_total_price": current_total_price, "current_total_price_set": _money_set(current_total_price),
        "current_total_tax": "0.00", "customer_locale": "en", "discount_codes": discount_codes or [],
        "email": email, "estimated_taxes": False, "financial_status": financial_status,
        "fulfillment_status": fulfillment_status, "landing_site": landing_site, "landing_site_ref": None,
        "name": name, "note": None, "note_attributes": [], "number": 1, "order_number": 1001,
        "order_status_url": f"https://alpha.myshopify.com/{order_id}/orders/abc/authenticate",
        "payment_gateway_names": ["bogus"], "phone": phone, "presentment_currency": "USD",
        "processed_at": ts(created_at), "referring_site": None, "source_name": "web",
        "subtotal_price": total_price, "subtotal_price_set": _money_set(total_price), "tags": "",
        "tax_lines": [], "taxes_included": False, "test": test, "token": uuid.uuid4().hex,
        "total_discounts": total_discounts, "total_discounts_set": _money_set(total_discounts),
        "total_line_items_price": total_price, "total_price": total_price, "total_price_set": _money_set(total_price),
        "total_tax": "0.00", "total_weight": 0, "updated_at": ts(updated_at), "user_id": None,
        "customer": customer_payload, "discount_applications": [
            {"type": "discount_code", "code": c["code"], "value": c.get("amount", "0"), "value_type": "fixed_amount",
             "allocation_method": "across", "target_selection": "all", "target_type": "line_item"}
            for c in discount_codes or []],
        "fulfillments": [], "line_items": line_items if line_items is not None else [line_item()],
        "refunds": [], "shipping_lines": [], "billing_address": None, "shipping_address": None,
    }


def order_customer(customer_id: int, **fields) -> dict:
    """The customer object embedded in an order (same shape as customers/update, without addresses list)."""
    payload = customer(customer_id, **fields)
    payload.pop("addresses", None)
    return payload


def order_deleted(order_id: int) -> dict:
    """orders/delete."""
    return {"id": order_id}


def product(product_id: int | None = None, *, title="IPod Nano - 8GB", handle="ipod-nano", status="active",
            updated_at=None) -> dict:
    """products/create|update."""
    product_id = product_id or next_id()
    updated_at = updated_at or dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.timezone.utc)
    variant_id = next_id()
    return {
        "admin_graphql_api_id": gid("Product", product_id), "body_html": "<p>It's the small iPod.</p>",
        "created_at": ts(updated_at), "handle": handle, "id": product_id, "product_type": "Cult Products",
        "published_at": ts(updated_at), "template_suffix": None, "title": title, "updated_at": ts(updated_at),
        "vendor": "Apple", "status": status, "published_scope": "web", "tags": "Emotive, Flash Memory",
        "variants": [{"admin_graphql_api_id": gid("ProductVariant", variant_id), "id": variant_id,
                      "product_id": product_id, "title": "Pink", "price": "199.00", "position": 1,
                      "sku": "IPOD2008PINK", "inventory_quantity": 10}],
        "options": [], "images": [], "image": {"id": next_id(), "product_id": product_id, "position": 1,
                                               "src": "https://cdn.shopify.com/s/files/1/ipod-nano.png",
                                               "width": 123, "height": 456},
        "media": [], "variant_gids": [],
    }


def deleted(object_id: int) -> dict:
    """products/delete (and the bare {"id": ...} delete payloads)."""
    return {"id": object_id}


def collection(collection_id: int | None = None, *, title="Ipods", handle="ipods", updated_at=None,
               product_ids: list[int] | None = None) -> dict:
    """collections/create|update (Shopify's payload does not list products; tests may add them)."""
    collection_id = collection_id or next_id()
    updated_at = updated_at or dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.timezone.utc)
    payload = {
        "id": collection_id, "handle": handle, "title": title, "updated_at": ts(updated_at),
        "body_html": "<p>The best selling ipod ever</p>", "published_at": ts(updated_at), "sort_order": "manual",
        "template_suffix": None, "published_scope": "web", "admin_graphql_api_id": gid("Collection", collection_id),
    }
    if product_ids is not None:
        payload["products"] = [{"id": pid} for pid in product_ids]
    return payload


def collection_deleted(collection_id: int) -> dict:
    """collections/delete."""
    return {"id": collection_id, "published_scope": "web", "admin_graphql_api_id": gid("Collection", collection_id)}


def checkout(token: str | None = None, *, customer_payload: dict | None = None, phone=None, created_at=None,
             updated_at=None, completed_at=None) -> dict:
    """checkouts/create|update."""
    token = token or uuid.uuid4().hex
    created_at = created_at or dt.datetime(2026, 3, 5, 8, 0, tzinfo=dt.timezone.utc)
    updated_at = updated_at or created_at
    return {
        "id": next_id(), "token": token, "cart_token": uuid.uuid4().hex, "email": "bob@example.com",
        "gateway": None, "buyer_accepts_marketing": False, "buyer_accepts_sms_marketing": False,
        "sms_marketing_phone": None, "created_at": ts(created_at), "updated_at": ts(updated_at),
        "landing_site": None, "note": None, "note_attributes": [], "referring_site": None, "shipping_lines": [],
        "taxes_included": False, "total_weight": 0, "currency": "USD", "completed_at": ts(completed_at),
        "closed_at": None, "user_id": None, "location_id": None, "source_identifier": None, "source_url": None,
        "device_id": None, "phone": phone, "customer_locale": "en", "line_items": [line_item()], "name": "#1234",
        "source": None, "abandoned_checkout_url": f"https://alpha.myshopify.com/checkouts/{token}/recover",
        "discount_codes": [], "tax_lines": [], "source_name": "web", "presentment_currency": "USD",
        "buyer_accepts_sms_marketing_from": None, "total_discounts": "0.00", "total_line_items_price": "199.00",
        "total_price": "199.00", "total_tax": "0.00", "subtotal_price": "199.00", "total_duties": None,
        "customer": customer_payload,
    }


def shop_object(domain: str = "alpha.myshopify.com", shop_id: int = 548380009) -> dict:
    """app/uninstalled: the Shop object."""
    return {
        "id": shop_id, "name": domain.split(".")[0].title(), "email": "owner@example.com", "domain": domain,
        "province": "California", "country": "US", "address1": "1 Infinite Loop", "zip": "95014",
        "city": "Cupertino", "source": None, "phone": "1231231234", "latitude": 45.45, "longitude": -75.43,
        "primary_locale": "en", "address2": "Suite 100", "created_at": None, "updated_at": None,
        "country_code": "US", "country_name": "United States", "currency": "USD", "customer_email": "c@example.com",
        "timezone": "(GMT-05:00) Eastern Time (US & Canada)", "iana_timezone": "America/New_York",
        "shop_owner": "John Smith", "money_format": "${{amount}}", "weight_unit": "kg", "plan_name": "basic",
        "myshopify_domain": domain,
    }


def scopes_update(current: list[str], previous: list[str]) -> dict:
    """app/scopes_update."""
    return {"id": 1, "previous": previous, "current": current,
            "updated_at": "2026-11-20T10:00:00-05:00", "created_at": "2026-01-01T10:00:00-05:00"}


def bulk_finish(operation_id: int = 147595010, status="completed", error_code=None) -> dict:
    """bulk_operations/finish."""
    return {"admin_graphql_api_id": gid("BulkOperation", operation_id), "completed_at": "2026-11-20T15:03:12-05:00",
            "created_at": "2026-11-20T15:01:08-05:00", "error_code": error_code, "status": status, "type": "query"}


def subscription_update(subscription_id: int = 1029266952, status="ACTIVE", capped_amount="100.00") -> dict:
    """app_subscriptions/update."""
    return {"app_subscription": {
        "admin_graphql_api_id": gid("AppSubscription", subscription_id), "name": "Kinnekt SMS", "status": status,
        "admin_graphql_api_shop_id": gid("Shop", 548380009), "created_at": "2026-11-20T12:00:00-05:00",
        "updated_at": "2026-11-20T12:01:00-05:00", "currency": "USD", "capped_amount": capped_amount,
        "price": "0.00", "interval": "every_30_days", "plan_handle": None}}


def approaching_capped_amount(subscription_id: int = 1029266952, balance_used=90.0, capped_amount="100.00") -> dict:
    """app_subscriptions/approaching_capped_amount."""
    return {"admin_graphql_api_id": gid("AppSubscription", subscription_id), "name": "Kinnekt SMS",
            "balance_used": balance_used, "capped_amount": capped_amount, "currency_code": "USD", "status": "ACTIVE",
            "admin_graphql_api_shop_id": gid("Shop", 548380009), "created_at": "2026-11-20T12:00:00-05:00",
            "updated_at": "2026-11-20T12:01:00-05:00"}


def data_request(customer_id: int, *, domain="alpha.myshopify.com", email="bob@example.com",
                 phone="555-625-1199", orders: list[int] | None = None, request_id=9999) -> dict:
    """customers/data_request."""
    return {"shop_id": 954889, "shop_domain": domain, "orders_requested": orders or [],
            "customer": {"id": customer_id, "email": email, "phone": phone}, "data_request": {"id": request_id}}


def customers_redact(customer_id: int | None, *, domain="alpha.myshopify.com", email="bob@example.com",
                     phone="555-625-1199", orders: list[int] | None = None) -> dict:
    """customers/redact."""
    return {"shop_id": 954889, "shop_domain": domain,
            "customer": {"id": customer_id, "email": email, "phone": phone}, "orders_to_redact": orders or []}


def shop_redact(domain="alpha.myshopify.com") -> dict:
    """shop/redact."""
    return {"shop_id": 954889, "shop_domain": domain}


# -- delivery --

def signature(body: bytes, secret: str) -> str:
    """X-Shopify-Hmac-Sha256 as Shopify computes it (written here independently of the app's code)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers(topic: str, body: bytes, *, secret: str, domain="alpha.myshopify.com", webhook_id: str | None = None,
            event_id: str | None = None, triggered_at: dt.datetime | str | None = None) -> dict:
    """The headers Shopify sends with a delivery."""
    triggered_at = triggered_at or dt.datetime.now(dt.timezone.utc)
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": signature(body, secret),
        "X-Shopify-Shop-Domain": domain,
        "X-Shopify-API-Version": API_VERSION,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": triggered_at if isinstance(triggered_at, str)
        else triggered_at.isoformat().replace("+00:00", "Z"),
    }


def deliver(client, topic: str, payload: dict, *, secret: str, **header_fields):
    """POST a signed delivery of `payload` for `topic` to its endpoint through a Flask test client."""
    body = json.dumps(payload).encode()
    return client.post(ENDPOINTS[topic], data=body, headers=headers(topic, body, secret=secret, **header_fields))
