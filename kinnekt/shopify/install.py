"""Installing Kinnekt on a shop: token exchange on the first session token, then (in a job) shop details,
default segments and the initial sync."""
from __future__ import annotations

import logging
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kinnekt.db import Session, utcnow
from kinnekt.models import Shop
from kinnekt.models.shop import SyncStatus
from kinnekt.shopify import endpoints, tasks, tokens
from kinnekt.shopify.graphql import AdminClient, ShopifyUnauthorized, client_for

log = logging.getLogger(__name__)

SHOP_QUERY = """
query KinnektShop {
  shop {
    name
    email
    contactEmail
    currencyCode
    ianaTimezone
    myshopifyDomain
    primaryDomain { host }
  }
}
"""


APP_INSTALLED_QUERY = """
query KinnektAppInstalled {
  shop { id }
}
"""
"""The cheapest Admin API call: answered while the app is installed, refused (401) once it is not."""


def still_installed(shop: Shop) -> bool:
    """Ask Shopify whether the app is still installed on the shop: False only when Shopify refused our token.

    A webhook's body is signed but its headers are not, so an `app/uninstalled` (or `shop/redact`) header on
    a replayed body proves nothing; Shopify revoking our access does. The call uses the stored tokens even
    when the shop is flagged needs_reauth (a refresh refused moments before the uninstall webhook is what an
    uninstall looks like). Raises ShopifyError when Shopify cannot be asked (unreachable, failing, no token
    stored to ask with), so the caller tries again later instead of deciding.
    """
    try:
        client_for(shop, despite_reauth=True).query(APP_INSTALLED_QUERY)
    except (ShopifyUnauthorized, tokens.AccessRevoked):
        return False
    return True


def needs_install(shop: Shop | None) -> bool:
    """True when a session token for this shop must go through token exchange first."""
    return shop is None or not shop.installed or shop.needs_reauth


def _fresh_shop(domain: str) -> Shop | None:
    return Session.scalar(select(Shop).where(Shop.domain == domain).execution_options(populate_existing=True))


def _installed_row(domain: str) -> Shop:
    """The shop's row marked installed: created for a new shop, re-opened after an uninstall."""
    shop = _fresh_shop(domain)
    if shop is None:
        shop = Shop(domain=domain, name=domain.split(".")[0], installed_at=utcnow())
        Session.add(shop)
        try:
            Session.commit()
        except IntegrityError:  # registered by a concurrent request in another process
            Session.rollback()
            shop = _fresh_shop(domain)
    elif shop.uninstalled_at is not None or shop.installed_at is None:
        shop.installed_at = utcnow()
        shop.uninstalled_at = None
        shop.sync_status = SyncStatus.NEVER  # data may have been redacted meanwhile: sync again
        shop.sync_progress = 0
        Session.commit()
    return shop


def connect_from_session(domain: str, id_token: str) -> Shop:
    """Token exchange for a shop met through a verified session token (unknown, uninstalled, needs re-auth).

    The page load waits only for the exchange; reading the shop, default segments and the initial sync run
    in the install job. Raises tokens.InvalidSessionToken when Shopify refuses the session token (the caller
    answers 401 so App Bridge retries with a fresh one). When the exchange fails otherwise (the token
    endpoint unreachable, the grant refused): a shop installed here stays flagged needs_reauth and is served
    (the next page load tries again); a shop unknown here or uninstalled is not installed on a session token
    alone, so the tokens.TokenError is raised with nothing changed (the caller answers 503).
    """
    domain = endpoints.checked_domain(domain)
    Session.commit()  # end any read transaction, so the row read below is current
    with tokens.shop_lock(domain):
        shop = _fresh_shop(domain)
        if not needs_install(shop) and shop.access_token_enc:
            return shop  # a concurrent request finished the exchange while we waited
        try:
            granted = tokens.exchange_session_token(domain, id_token)
        except tokens.InvalidSessionToken:
            raise
        except tokens.TokenError as exc:
            log.error("token exchange for %s failed: %s", domain, exc)
            if shop is None or not shop.installed:
                raise
            if not shop.needs_reauth:
                tokens.mark_needs_reauth(shop, f"token exchange failed: {exc}")
            return shop
        shop = _installed_row(domain)
        tokens.save_tokens(shop, granted)
    enqueue_install(shop)
    return shop


def connect_with_tokens(domain: str, granted: tokens.TokenSet) -> Shop:
    """Register a shop from a token granted another way (authorization code) and queue the install job."""
    domain = endpoints.checked_domain(domain)
    with tokens.shop_lock(domain):
        shop = _installed_row(domain)
        tokens.save_tokens(shop, granted)
    enqueue_install(shop)
    return shop


def enqueue_install(shop: Shop) -> None:
    """Queue the install job (shop details, default segments, initial sync)."""
    tasks.enqueue_install_shop(shop.id)


def fetch_shop_details(client: AdminClient) -> dict:
    """Read the shop's name, email, currency, IANA time zone and primary domain through GraphQL."""
    data = client.query(SHOP_QUERY).get("shop") or {}
    timezone = data.get("ianaTimezone") or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("Shopify gave an unknown time zone %r; using UTC", timezone)
        timezone = "UTC"
    return {
        "name": (data.get("name") or "")[:255],
        "email": data.get("email") or data.get("contactEmail"),
        "currency": (data.get("currencyCode") or "USD")[:3],
        "timezone": timezone,
        "primary_domain": (data.get("primaryDomain") or {}).get("host"),
        "myshopify_domain": data.get("myshopifyDomain"),
    }


def apply_shop_details(shop: Shop, details: dict, *, timezone: str | None = None) -> None:
    """Copy what Shopify said about the shop onto its row (a time zone given by the merchant wins)."""
    shop.name = details["name"] or shop.name
    shop.email = details["email"]
    shop.currency = details["currency"]
    shop.timezone = timezone or details["timezone"]
    shop.primary_domain = details["primary_domain"]


def ensure_default_segments(shop: Shop) -> bool:
    """Create the automatic segments when the segments module provides them; True when it ran."""
    try:
        from kinnekt.segments.auto import ensure_default_segments as ensure
    except ImportError:
        return False
    ensure(Session, shop)
    Session.commit()
    return True


def complete_install(shop: Shop) -> None:
    """The install job's work: read the shop, create default segments, start the initial sync if needed, and
    queue the web pixel's creation."""
    from kinnekt.shopify import bulk
    details = fetch_shop_details(client_for(shop))
    apply_shop_details(shop, details)
    Session.commit()
    ensure_default_segments(shop)
    if shop.sync_status == SyncStatus.NEVER:
        bulk.request_sync(shop)
    tasks.enqueue_connect_web_pixel(shop.id)  # the storefront events' pixel, with the shop's key
