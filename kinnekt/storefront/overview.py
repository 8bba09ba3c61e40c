"""What the Settings page says about a shop's storefront events: how many came lately, and from how many people."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from kinnekt.db import utcnow
from kinnekt.models import Shop
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent

RECENT_DAYS = 7


@dataclass(frozen=True)
class Overview:
    """Events of the last RECENT_DAYS days, how many of them are a subscriber's, and identified browsers."""

    recent_events: int
    recent_attributed: int
    identified_browsers: int
    last_event_at: dt.datetime | None


def overview(session, shop: Shop, now: dt.datetime | None = None) -> Overview:
    """The shop's storefront events at a glance (indexed counts: shop and time, then browsers)."""
    since = (now or utcnow()) - dt.timedelta(days=RECENT_DAYS)
    recent, attributed, last = session.execute(
        select(func.count(), func.count(StorefrontEvent.subscriber_id), func.max(StorefrontEvent.occurred_at))
        .where(StorefrontEvent.shop_id == shop.id, StorefrontEvent.occurred_at >= since)).one()
    browsers = session.scalar(select(func.count()).select_from(StorefrontBrowser)
                              .where(StorefrontBrowser.shop_id == shop.id))
    return Overview(recent or 0, attributed or 0, browsers or 0, last)
