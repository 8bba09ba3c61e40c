"""Finding and registering shops: the demo shop, shops met through a session token, custom-app shops."""
from __future__ import annotations

from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Shop


def by_domain(domain: str) -> Shop | None:
    """The shop with this myshopify domain, if we know it."""
    return Session.scalar(select(Shop).where(Shop.domain == domain.lower()))


def for_session(domain: str, id_token: str) -> Shop:
    """The shop a verified session token names, installed by token exchange when we need its token.

    A shop we have never seen, one that uninstalled, or one whose token was refused goes through token
    exchange (kinnekt.shopify.install); that raises kinnekt.shopify.tokens.InvalidSessionToken when Shopify
    refuses the session token, and another kinnekt.shopify.tokens.TokenError when a shop not installed here
    could not be installed (Shopify unreachable): nothing was changed.
    """
    from kinnekt.shopify import install
    shop = by_domain(domain)
    if shop is not None and (shop.is_demo or not install.needs_install(shop)):
        return shop
    return install.connect_from_session(domain, id_token)
