"""Jobs started from the Settings page: recompute attribution after the attribution window changed."""
from __future__ import annotations

import logging

from kinnekt.db import Session
from kinnekt.models import Shop
from workers import job

log = logging.getLogger(__name__)


@job
def recompute_attribution(shop_id: int) -> str:
    """Re-attribute the shop's orders with its current attribution window (kinnekt.campaigns.attribution)."""
    try:
        from kinnekt.campaigns import attribution
    except ImportError:
        return "unavailable"
    session = Session()
    shop = session.get(Shop, shop_id)
    if shop is None or not shop.installed:
        return "no shop"
    attribution.recompute(session, shop)
    return "done"
