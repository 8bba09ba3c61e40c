"""Campaign results, computed from the rows themselves (messages, clicks, attributions), never from counters.

Definitions (shown to the merchant on the campaign page, the campaign lists and the progress card alike):
- Sent: messages the provider accepted (`accepted`): awaiting a receipt (status sent), delivered, or failed after
  acceptance. So Sent = Delivered + Failed + Awaiting receipt, each counted from its own rows.
  Delivered: a delivery receipt said so. Failed: accepted, then a receipt said it was not delivered (or the
  provider accepted only some parts of a long message). Refused: failed without having been accepted (the
  provider refused the request): not sent. The reasons of each are listed apart, by the provider's words, so
  the reasons add up to their figure.
  Skipped: left out, grouped by skip reason. Outcome unknown: the request may have left, no answer came yet.
  Waiting: not sent yet (pending, or being sent). Ended: not sent because the campaign was ended.
  Every recipient is exactly one of Sent, Refused, Skipped, Outcome unknown, Waiting and Ended.
- Clicks: every counted tap on the campaign's short links (link previews are not counted, see
  kinnekt/web/redirects.py). Unique clicks: recipients who tapped at least once. Click rate: unique clicks / sent.
- Unsubscribes: recipients who opted out within UNSUBSCRIBE_ATTRIBUTION_HOURS of receiving this campaign (a
  message sent or delivered, not one that failed), with no other campaign message received in between (the
  latest campaign gets the blame, once). Unsubscribe rate: unsubscribes / sent.
- Orders and revenue: attributions (kinnekt/campaigns/attribution.py). Revenue per message: revenue / sent.
- Cost: the sum of the provider's price over the campaign's messages.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, and_, distinct, exists, func, or_, select
from sqlalchemy.orm import aliased

from kinnekt import defaults
from kinnekt.campaigns import links
from kinnekt.campaigns.sending import REMAINING
from kinnekt.models import Attribution, Campaign, Click, Link, Message, Order, Shop, SubscriptionEvent
from kinnekt.models.message import MessageStatus
from kinnekt.sms import failures
from kinnekt.sms.receipts import RECEIPT_ERROR_PREFIX

RECEIVED_STATUSES = MessageStatus.ACCEPTED
"""Statuses of a message that reached its phone as far as anyone knows (no receipt said otherwise)."""


def accepted() -> ColumnElement[bool]:
    """SQL: the provider accepted the message, so it counts as sent: received, or failed after acceptance.

    A failed message had been accepted when it has the provider's message id, or a delivery receipt's error
    code (receipts come only for accepted messages). One the provider refused at the request has neither.
    """
    return or_(Message.status.in_(RECEIVED_STATUSES),
               and_(Message.status == MessageStatus.FAILED,
                    or_(Message.provider_id.is_not(None),
                        and_(Message.error_code.is_not(None), Message.error_code.startswith(RECEIPT_ERROR_PREFIX)))))


@dataclass
class CampaignRow:
    """One line of the campaigns list. Show clicks only when `has_links`, orders/revenue when `tracks_orders`."""

    campaign: Campaign
    sent: int = 0
    clicks: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)
    has_links: bool = False
    tracks_orders: bool = False


@dataclass
class CampaignStats:
    """Every figure of one campaign's results (see the module docstring for the definitions)."""

    recipients: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    awaiting_receipt: int = 0
    refused: int = 0
    unknown: int = 0
    waiting: int = 0
    ended: int = 0
    failure_reasons: list[tuple[str, int]] = field(default_factory=list)
    """(why a text the provider accepted then failed, in the merchant's words (kinnekt/sms/failures.py), how
    many), most first."""
    refusal_reasons: list[tuple[str, int]] = field(default_factory=list)
    """(why the provider refused a text at the request, in the same words, how many), most first."""
    skipped: int = 0
    skip_reasons: list[tuple[str, int]] = field(default_factory=list)
    clicks: int = 0
    unique_clicks: int = 0
    unsubscribes: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    has_links: bool = False
    tracks_orders: bool = False

    @property
    def no_receipt(self) -> int:
        """Sent messages no delivery receipt has reported on yet (some carriers never send one)."""
        return self.awaiting_receipt

    @property
    def unaccounted(self) -> int:
        """Recipients in none of the outcomes (always 0: a figure the page would otherwise leave unexplained)."""
        return (self.recipients - self.sent - self.refused - self.skipped - self.unknown - self.waiting
                - self.ended)

    @property
    def click_rate(self) -> float | None:
        """Unique clicks per message sent (0..1), None before anything was sent."""
        return self.unique_clicks / self.sent if self.sent else None

    @property
    def unsubscribe_rate(self) -> float | None:
        """Unsubscribes per message sent (0..1), None before anything was sent."""
        return self.unsubscribes / self.sent if self.sent else None

    @property
    def revenue_per_message(self) -> Decimal | None:
        """Revenue divided by messages sent, None before anything was sent."""
        return (self.revenue / self.sent).quantize(Decimal("0.0001")) if self.sent else None


def has_links(campaign: Campaign) -> bool:
    """True when the campaign's message contains a link (so clicks are tracked)."""
    return bool(links.find_urls(campaign.body))


def tracks_orders(campaign: Campaign) -> bool:
    """True when orders can be credited to the campaign: it has a link or a discount code."""
    return has_links(campaign) or (campaign.discount_mode or "none") != "none"


def campaign_rows(session, shop: Shop, *, kind: str = "campaign", parent_id: int | None = None
                  ) -> tuple[list[CampaignRow], dict]:
    """The shop's campaigns of `kind`, newest first, with sent, clicks, orders and revenue; and their totals.

    `kind` "automation" gives the automations' message campaigns; "run" with `parent_id` the runs of one
    recurring campaign. Four grouped queries in all, whatever the number of campaigns.
    """
    shop_id = shop.id
    # Through the shop's campaigns: the (campaign, status) index answers it; messages have no shop index.
    sent = (select(Message.campaign_id, func.count().label("sent"))
            .where(Message.campaign_id.in_(select(Campaign.id).where(Campaign.shop_id == shop_id)),
                   Message.shop_id == shop_id, accepted())
            .group_by(Message.campaign_id).subquery())
    clicks = (select(Click.campaign_id, func.count().label("clicks"))
              .where(Click.shop_id == shop_id, Click.campaign_id.is_not(None))
              .group_by(Click.campaign_id).subquery())
    orders = (select(Attribution.campaign_id, func.count().label("orders"),
                     func.sum(Attribution.revenue).label("revenue"))
              .where(Attribution.shop_id == shop_id, Attribution.campaign_id.is_not(None))
              .group_by(Attribution.campaign_id).subquery())
    result = session.execute(
        select(Campaign, func.coalesce(sent.c.sent, 0), func.coalesce(clicks.c.clicks, 0),
               func.coalesce(orders.c.orders, 0), orders.c.revenue)
        .outerjoin(sent, sent.c.campaign_id == Campaign.id)
        .outerjoin(clicks, clicks.c.campaign_id == Campaign.id)
        .outerjoin(orders, orders.c.campaign_id == Campaign.id)
        .where(Campaign.shop_id == shop_id, Campaign.kind == kind,
               *([Campaign.parent_id == parent_id] if parent_id is not None else []))
        .order_by(Campaign.created_at.desc(), Campaign.id.desc())).all()
    rows = [CampaignRow(campaign=c, sent=s, clicks=k, orders=o, revenue=r if r is not None else Decimal(0),
                        has_links=has_links(c) or k > 0, tracks_orders=tracks_orders(c) or o > 0)
            for c, s, k, o, r in result]
    totals = {"sent": sum(r.sent for r in rows), "clicks": sum(r.clicks for r in rows),
              "orders": sum(r.orders for r in rows), "revenue": sum((r.revenue for r in rows), Decimal(0))}
    return rows, totals


def for_campaign(session, campaign: Campaign) -> CampaignStats:
    """All figures of one campaign."""
    stats = CampaignStats(has_links=has_links(campaign), tracks_orders=tracks_orders(campaign))
    shop_id, campaign_id = campaign.shop_id, campaign.id
    mine = and_(Message.shop_id == shop_id, Message.campaign_id == campaign_id)
    sent = accepted()
    for status, was_sent, reason, error_code, count, price in session.execute(
            select(Message.status, sent, Message.skip_reason, Message.error_code, func.count(),
                   func.sum(Message.price))
            .where(mine).group_by(Message.status, sent, Message.skip_reason, Message.error_code)):
        stats.recipients += count
        stats.cost += price or Decimal(0)
        stats.sent += count if was_sent else 0
        if status == MessageStatus.DELIVERED:
            stats.delivered += count
        elif status == MessageStatus.SENT:
            stats.awaiting_receipt += count
        elif status == MessageStatus.FAILED:
            if was_sent:
                stats.failed += count
                stats.failure_reasons.append((failures.describe(error_code), count))
            else:
                stats.refused += count
                stats.refusal_reasons.append((failures.describe(error_code), count))
        elif status == MessageStatus.SKIPPED:
            stats.skipped += count
            stats.skip_reasons.append((skip_label(reason), count))
        elif status == MessageStatus.UNKNOWN:
            stats.unknown += count
        elif status == MessageStatus.ENDED:
            stats.ended += count
        else:  # pending, claimed, sending
            stats.waiting += count
    stats.failure_reasons = _merged(stats.failure_reasons)
    stats.refusal_reasons = _merged(stats.refusal_reasons)
    stats.skip_reasons = _merged(stats.skip_reasons)
    clicks, unique = session.execute(
        select(func.count(Click.id), func.count(distinct(Link.message_id)))
        .join(Link, Link.id == Click.link_id)
        .where(Click.shop_id == shop_id, Click.campaign_id == campaign_id)).one()
    stats.clicks, stats.unique_clicks = clicks or 0, unique or 0
    orders, revenue = session.execute(
        select(func.count(Attribution.id), func.sum(Attribution.revenue))
        .where(Attribution.shop_id == shop_id, Attribution.campaign_id == campaign_id)).one()
    stats.orders, stats.revenue = orders or 0, revenue if revenue is not None else Decimal(0)
    stats.unsubscribes = unsubscribes(session, campaign)
    return stats


def skip_label(reason: str | None) -> str:
    """A skip reason in the merchant's words."""
    try:
        from kinnekt.campaigns.audience import SKIP_LABELS
    except ImportError:  # pragma: no cover - audience.py is always there in a full install
        SKIP_LABELS = {}
    if not reason:
        return "Skipped"
    return SKIP_LABELS.get(reason) or reason.replace("_", " ").capitalize()


def _merged(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    totals: dict[str, int] = {}
    for label, count in pairs:
        totals[label] = totals.get(label, 0) + count
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def unsubscribes(session, campaign: Campaign) -> int:
    """Recipients who opted out within the window after this campaign reached them, before any later campaign."""
    hours = dt.timedelta(hours=defaults.UNSUBSCRIBE_ATTRIBUTION_HOURS)
    last_sent = session.scalar(select(func.max(Message.sent_at)).where(
        Message.shop_id == campaign.shop_id, Message.campaign_id == campaign.id, Message.sent_at.is_not(None)))
    if last_sent is None:
        return 0
    later = aliased(Message)
    rows = session.execute(
        select(Message.subscriber_id, Message.sent_at, SubscriptionEvent.at)
        .join(SubscriptionEvent, and_(SubscriptionEvent.subscriber_id == Message.subscriber_id,
                                      SubscriptionEvent.shop_id == Message.shop_id))
        .where(Message.shop_id == campaign.shop_id, Message.campaign_id == campaign.id,
               Message.status.in_(RECEIVED_STATUSES), Message.sent_at.is_not(None),
               SubscriptionEvent.kind == "unsubscribed", SubscriptionEvent.at >= Message.sent_at,
               SubscriptionEvent.at <= last_sent + hours,
               ~exists().where(later.shop_id == Message.shop_id, later.subscriber_id == Message.subscriber_id,
                               later.campaign_id.is_not(None), later.campaign_id != Message.campaign_id,
                               later.sent_at > Message.sent_at, later.sent_at <= SubscriptionEvent.at)))
    return len({subscriber_id for subscriber_id, sent_at, at in rows if at - sent_at <= hours})


def timeline(session, campaign: Campaign, *, timezone: str | None = None) -> dict:
    """Clicks and orders over time: per hour for a short span (<= TIMELINE_HOURLY_MAX_HOURS), else per day.

    Returns {"unit": "hour"|"day", "timezone", "t": [bucket start, unix seconds], "labels": [local text],
    "clicks": [...], "orders": [...]}; empty lists when nothing happened yet. Days are the shop's local days.
    """
    zone = _zone(timezone or _shop_timezone(session, campaign))
    dialect = session.get_bind().dialect.name
    clicks = _hourly(session, dialect, Click, Click.at,
                     [Click.shop_id == campaign.shop_id, Click.campaign_id == campaign.id])
    orders = _hourly(session, dialect, Attribution, Order.created_at,
                     [Attribution.shop_id == campaign.shop_id, Attribution.campaign_id == campaign.id],
                     join=(Order, Order.id == Attribution.order_id))
    empty = {"unit": "hour", "timezone": zone.key, "t": [], "labels": [], "clicks": [], "orders": []}
    hours = sorted(set(clicks) | set(orders))
    if not hours:
        return empty
    start = hours[0]
    if campaign.started_at is not None:
        start = min(start, campaign.started_at.replace(minute=0, second=0, microsecond=0))
    end = hours[-1]
    if (end - start) <= dt.timedelta(hours=defaults.TIMELINE_HOURLY_MAX_HOURS):
        buckets, step = [], dt.timedelta(hours=1)
        at = start
        while at <= end:
            buckets.append(at)
            at += step
        return {"unit": "hour", "timezone": zone.key,
                "t": [int(b.timestamp()) for b in buckets],
                "labels": [_label(b.astimezone(zone), "hour") for b in buckets],
                "clicks": [clicks.get(b, 0) for b in buckets], "orders": [orders.get(b, 0) for b in buckets]}
    day_clicks: dict[dt.date, int] = {}
    day_orders: dict[dt.date, int] = {}
    for hour, count in clicks.items():
        day = hour.astimezone(zone).date()
        day_clicks[day] = day_clicks.get(day, 0) + count
    for hour, count in orders.items():
        day = hour.astimezone(zone).date()
        day_orders[day] = day_orders.get(day, 0) + count
    first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    starts = [dt.datetime(d.year, d.month, d.day, tzinfo=zone) for d in days]
    return {"unit": "day", "timezone": zone.key, "t": [int(s.timestamp()) for s in starts],
            "labels": [_label(s, "day") for s in starts],
            "clicks": [day_clicks.get(d, 0) for d in days], "orders": [day_orders.get(d, 0) for d in days]}


def _hourly(session, dialect: str, source, column, where, join=None) -> dict[dt.datetime, int]:
    """Counts per UTC hour, grouped by the database (portable truncation per dialect)."""
    if dialect == "postgresql":
        bucket = func.date_trunc("hour", column)
    else:
        bucket = func.strftime("%Y-%m-%d %H:00:00", column)
    statement = select(bucket.label("hour"), func.count()).select_from(source)
    if join is not None:
        statement = statement.join(*join)
    statement = statement.where(*where).group_by(bucket)
    result = {}
    for hour, count in session.execute(statement):
        if isinstance(hour, str):
            hour = dt.datetime.fromisoformat(hour)
        result[hour.replace(tzinfo=dt.timezone.utc)] = count
    return result


def _label(moment: dt.datetime, unit: str) -> str:
    if unit == "day":
        return f"{moment:%b} {moment.day}"
    suffix = "AM" if moment.hour < 12 else "PM"
    return f"{moment:%b} {moment.day}, {(moment.hour % 12) or 12} {suffix}"


def _shop_timezone(session, campaign: Campaign) -> str:
    shop = session.get(Shop, campaign.shop_id)
    return shop.timezone if shop is not None else "UTC"


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Progress:
    """The campaign's figures for the progress bar: `sent` and `refused` as this module defines them (sent:
    accepted by the provider, whatever a receipt said later; refused: failed without being accepted)."""

    total: int
    sent: int
    refused: int
    skipped: int
    remaining: int
    unknown: int = 0
    ended: int = 0
    done: bool = False

    @property
    def finished(self) -> int:
        """Rows that need nothing more (everything but remaining)."""
        return self.total - self.remaining

    @property
    def percent(self) -> int:
        """Share of rows finished, 0-100."""
        return 100 if not self.total else int(100 * self.finished / self.total)


def progress(session, campaign: Campaign) -> Progress:
    """Counts of the campaign's rows by outcome; `done` once the campaign is completed, ended or failed."""
    sent = accepted()
    by_status: dict[str, int] = {}
    sent_rows = refused = 0
    for status, was_sent, count in session.execute(
            select(Message.status, sent, func.count()).where(Message.campaign_id == campaign.id)
            .group_by(Message.status, sent)):
        by_status[status] = by_status.get(status, 0) + count
        if was_sent:
            sent_rows += count
        elif status == "failed":
            refused += count
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign.id))
    return Progress(total=sum(by_status.values()), sent=sent_rows, refused=refused,
                    skipped=by_status.get("skipped", 0), remaining=sum(by_status.get(s, 0) for s in REMAINING),
                    unknown=by_status.get("unknown", 0), ended=by_status.get("ended", 0),
                    done=status in ("completed", "ended", "failed"))
