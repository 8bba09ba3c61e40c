"""Why a campaign's remaining recipients have not been sent to yet, and until when.

A remaining row is pending (or claimed / sending, which a sender is working on right now). A pending row whose
`due_at` lies in the future waits, for one of these reasons, told apart from the row itself:

- **retry**: an earlier attempt got a retryable error (it carries the error code; answers.record sets `due_at`
  to the backoff's end).
- **quiet hours**: quiet hours are on now in the recipient's time zone, and the row is due by their end
  (sending._send_one and audience.first_due defer to the end of the window).
- **local time**: the campaign sends at its time in each recipient's time zone, not reached yet there.
- **slot**: waiting a few seconds for a sending slot (the shared rate limit was busy).

Rows due now are "queued": a sender takes them next. The answer is a few grouped counts (one query grouped by
the recipient's time zone), so it is cheap enough for the campaigns list and the 2-second progress poll.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, case, func, select

from kinnekt.campaigns import quiet_hours
from kinnekt.db import aware_utc, utcnow
from kinnekt.models import Campaign, Message, Shop, Subscriber
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.message import MessageStatus

LABELS = {
    "quiet_hours": "Waiting for quiet hours to end",
    "local_time": "Waiting for the send time in their time zone",
    "retry": "Retrying after a provider error",
    "slot": "Waiting for a sending slot",
    "queued": "Being sent now",
}
"""Each reason in the merchant's words, in the order they are shown."""


@dataclass(frozen=True)
class Wait:
    """`count` remaining recipients held back for `reason` (a LABELS key), due from `first` to `last` (UTC)."""

    reason: str
    count: int
    first: dt.datetime | None = None
    last: dt.datetime | None = None

    @property
    def label(self) -> str:
        """The reason in the merchant's words."""
        return LABELS[self.reason]


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.timezone.utc)


def _merge(waits: dict[str, Wait], reason: str, count: int, first, last) -> None:
    old = waits.get(reason)
    if old is None:
        waits[reason] = Wait(reason, count, first, last)
        return
    firsts = [t for t in (old.first, first) if t is not None]
    lasts = [t for t in (old.last, last) if t is not None]
    waits[reason] = Wait(reason, old.count + count, min(firsts) if firsts else None, max(lasts) if lasts else None)


def waits(session, campaign: Campaign, *, now: dt.datetime | None = None) -> list[Wait]:
    """The campaign's remaining recipients grouped by why they wait, in LABELS order (empty when none remain)."""
    if campaign.status not in CampaignStatus.ACTIVE:
        return []
    now = aware_utc(now or utcnow())
    shop = session.get(Shop, campaign.shop_id)
    later = and_(Message.status == MessageStatus.PENDING, Message.due_at.is_not(None), Message.due_at > now)
    retry = Message.error_code.is_not(None)
    rows = session.execute(
        select(Subscriber.timezone,
               case((later, case((retry, "retry"), else_="later")), else_="queued").label("wait_kind"),
               func.count(), func.min(Message.due_at), func.max(Message.due_at))
        .select_from(Message).outerjoin(Subscriber, Subscriber.id == Message.subscriber_id)
        .where(Message.shop_id == campaign.shop_id, Message.campaign_id == campaign.id,
               Message.status.in_(MessageStatus.OPEN))
        .group_by(Subscriber.timezone, "wait_kind")).all()
    found: dict[str, Wait] = {}
    for zone_name, kind, count, first, last in rows:
        first, last = _utc(first), _utc(last)
        if kind == "queued":
            _merge(found, "queued", count, None, None)
            continue
        if kind == "retry":
            _merge(found, "retry", count, first, last)
            continue
        zone = quiet_hours.zone_for(zone_name, shop.timezone)
        if quiet_hours.is_quiet(shop, now, zone) and last <= quiet_hours.defer(shop, now, zone):
            reason = "quiet_hours"
        elif campaign.recipient_local_time:
            reason = "local_time"
        elif quiet_hours.is_quiet(shop, first - dt.timedelta(minutes=1), zone):
            reason = "quiet_hours"  # deferred to a window's end still to come (a clock change, a late start)
        else:
            reason = "slot"
        _merge(found, reason, count, first, last)
    return [found[key] for key in LABELS if key in found]


def by_campaign(session, campaigns, *, now: dt.datetime | None = None) -> dict[int, list[Wait]]:
    """`waits` for each campaign in progress among `campaigns`, by id (a list has few of them at a time)."""
    now = now or utcnow()
    return {c.id: waits(session, c, now=now) for c in campaigns if c.status == CampaignStatus.IN_PROGRESS}
