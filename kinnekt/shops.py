"""Finding and registering shops: the demo shop, shops met through a session token, custom-app shops."""
from __future__ import annotations

from sqlalchemy import select

from kinnekt.db import Session, utcnow
from kinnekt.models import Shop


def by_domain(domain: str) -> Shop | None:
    """The shop with this myshopify domain, if we know it."""
    return Session.scalar(select(Shop).where(Shop.domain == domain.lower()))


def for_session(domain: str) -> Shop:
    """The shop a verified session token names; a shop we have never seen is registered as installed.

    Token exchange for its offline token happens in kinnekt.shopify (the Shopify integration issue);
    until it has run the shop is marked `needs_reauth` so no background call is attempted.
    """
    shop = by_domain(domain)
    if shop is None:
        shop = Shop(domain=domain.lower(), name=domain.split(".")[0], installed_at=utcnow(), needs_reauth=True)
        Session.add(shop)
        Session.commit()
    elif shop.uninstalled_at is not None:
        shop.uninstalled_at = None
        shop.installed_at = utcnow()
        shop.needs_reauth = True
        Session.commit()
    return shop
