"""The shop's web pixel: the key it sends with every batch, and creating or updating it in Shopify.

The app pixel extension (extensions/kinnekt-pixel) runs on a shop only once the app creates a WebPixel record
for it (`webPixelCreate`) with settings that match the extension's schema: `shopKey` (Shop.pixel_key, which
the ingest endpoint accepts for this shop only) and `endpoint` (this app's `/pixel/events`). `connect` runs
in a job (kinnekt.shopify.tasks.connect_web_pixel) at install and from Settings: it creates the pixel, or
updates the one whose id it stored (Shop.web_pixel_id), so a new key or a moved app URL reaches the storefront.
Needs the `write_pixels` scope (and `read_customer_events` for the events themselves).
"""
from __future__ import annotations

import json
import secrets

from sqlalchemy.orm import Session as OrmSession

from kinnekt.config import public_base
from kinnekt.models import Shop
from kinnekt.shopify.graphql import UserErrors, client_for, raise_user_errors

ENDPOINT_PATH = "/pixel/events"
"""Where the pixel posts its batches (kinnekt/web/pixel.py)."""

CREATE = """
mutation KinnektWebPixelCreate($webPixel: WebPixelInput!) {
  webPixelCreate(webPixel: $webPixel) {
    userErrors { code field message }
    webPixel { id settings }
  }
}
"""

UPDATE = """
mutation KinnektWebPixelUpdate($id: ID!, $webPixel: WebPixelInput!) {
  webPixelUpdate(id: $id, webPixel: $webPixel) {
    userErrors { code field message }
    webPixel { id settings }
  }
}
"""

CURRENT = """
query KinnektWebPixel {
  webPixel { id settings }
}
"""


def ensure_key(session: OrmSession, shop: Shop) -> str:
    """The shop's pixel key, made (random, 32 URL-safe characters) the first time it is needed. Commits."""
    if not shop.pixel_key:
        shop.pixel_key = secrets.token_urlsafe(24)
        session.commit()
    return shop.pixel_key


def endpoint_url() -> str:
    """The ingest endpoint's public URL (under SHOPIFY_APP_URL, as the short links are)."""
    return public_base() + ENDPOINT_PATH


def settings_json(shop: Shop) -> str:
    """The pixel's settings as Shopify stores them: a JSON object of the extension's setting fields."""
    return json.dumps({"shopKey": shop.pixel_key, "endpoint": endpoint_url()}, separators=(",", ":"))


def connect(session: OrmSession, shop: Shop) -> str:
    """Create the shop's web pixel, or update the one we created; stores its id. Returns "created" or "updated".

    A stored id Shopify no longer knows (the merchant removed the pixel) is created again; a pixel that exists
    though we hold no id (a lost database) is found and updated. Raises ShopifyError subclasses otherwise.
    """
    ensure_key(session, shop)
    client = client_for(shop)
    web_pixel = {"settings": settings_json(shop)}
    if shop.web_pixel_id:
        result = client.query(UPDATE, {"id": shop.web_pixel_id, "webPixel": web_pixel}).get("webPixelUpdate") or {}
        if not _not_found(result):
            raise_user_errors(result)
            return _store(session, shop, result, "updated")
    result = client.query(CREATE, {"webPixel": web_pixel}).get("webPixelCreate") or {}
    if _taken(result):
        existing = (client.query(CURRENT).get("webPixel") or {}).get("id")
        if existing:
            result = client.query(UPDATE, {"id": existing, "webPixel": web_pixel}).get("webPixelUpdate") or {}
            raise_user_errors(result)
            return _store(session, shop, result, "updated")
    raise_user_errors(result)
    return _store(session, shop, result, "created")


def _codes(result: dict) -> set[str]:
    return {str(e.get("code") or "") for e in result.get("userErrors") or []}


def _not_found(result: dict) -> bool:
    return "NOT_FOUND" in _codes(result) or (not result.get("userErrors") and not result.get("webPixel"))


def _taken(result: dict) -> bool:
    return "TAKEN" in _codes(result)


def _store(session: OrmSession, shop: Shop, result: dict, outcome: str) -> str:
    pixel_id = (result.get("webPixel") or {}).get("id")
    if not pixel_id:
        raise UserErrors([{"field": ["webPixel"], "message": "Shopify returned no web pixel"}])
    shop.web_pixel_id = pixel_id[:128]
    session.commit()
    return outcome
