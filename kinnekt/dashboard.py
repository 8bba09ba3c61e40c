"""The home page's figures for one shop: growth by source, opt-outs, attributed revenue, campaigns, flows'
results and sending health, over the last 7, 30 or 90 days in the shop's time zone.

Each figure is defined as it is elsewhere in the app, and computed by the same code where one exists:
- New subscribers: subscribers whose `subscribed_at` (their latest subscription) falls in the period, by
  source; the segment rule "Subscribed: last N days" counts the same people.
- Opt-outs: "unsubscribed" entries of the consent history in the period (what a subscriber's history shows).
- Attributed revenue: attributions (kinnekt/campaigns/attribution.py) of orders placed in the period, split
  by campaigns and flows (automations became flows); campaign pages sum the same rows without the period.
- Campaigns and flows: kinnekt.campaigns.stats.campaign_rows, as on the Campaigns page; a flow's figures are
  the sums of its send steps' campaigns.
- Failure rate: messages sent in the period (kinnekt.campaigns.stats.accepted) that then failed, over them.
- Opt-out rate: per campaign started in the period, kinnekt.campaigns.stats.unsubscribes over its sent
  messages, as on the campaign's page; flagged above defaults.OPT_OUT_RATE_WARNING.
- Waiting for quiet hours: numbers whose message is held until the end of the quiet hours they are in now.
- Customer lifecycle: subscribed numbers by their customer's lifecycle stage now (kinnekt.segments.lifecycle,
  updated daily), which the segment rule `lifecycle_stage` reads too; not tied to the period.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import String, distinct, func, literal, or_, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.campaigns import quiet_hours, stats
from kinnekt.models import Attribution, Campaign, Flow, FlowStep, Message, Order, Shop, Subscriber, SubscriptionEvent
from kinnekt.models.campaign import TRIGGERED_KINDS, CampaignStatus
from kinnekt.models.message import MessageStatus
from kinnekt.models.subscriber import SOURCE_LABELS, SOURCES, SubscriberStatus
from kinnekt.segments import lifecycle, periods

CAMPAIGN_KINDS = ("campaign", "run")
"""Campaign rows that are campaigns the merchant sent (a recurring campaign's runs included), not automations."""

FINISHED = CampaignStatus.FINISHED | {CampaignStatus.IN_PROGRESS}
"""Statuses of a campaign that has started: the "Recent campaigns" card lists these."""


class InvalidPeriod(ValueError):
    """The period asked for is not one the home page offers; the message says which are."""


@dataclass(frozen=True)
class Period:
    """The last `days` local days of the shop, today included: [start, now] in UTC, and each day's date."""

    days: int
    zone: ZoneInfo
    start: dt.datetime
    now: dt.datetime
    dates: tuple[dt.date, ...]

    @property
    def label(self) -> str:
        """The period in the merchant's words."""
        return f"Last {self.days} days"


@dataclass
class Growth:
    """New subscribers per local day by source, and opt-outs per day, over a period (chart data)."""

    zone: str
    t: list[int]
    labels: list[str]
    sources: list[dict]
    opt_outs: list[int]

    @property
    def new_subscribers(self) -> int:
        """New subscribers over the period, every source together."""
        return sum(sum(s["counts"]) for s in self.sources)

    @property
    def total_opt_outs(self) -> int:
        """Opt-outs over the period."""
        return sum(self.opt_outs)

    @property
    def empty(self) -> bool:
        """True when nobody joined or left in the period."""
        return not self.new_subscribers and not self.total_opt_outs

    def chart(self) -> dict:
        """The JSON the chart script draws (static/js/dashboard-chart.js)."""
        return {"timezone": self.zone, "t": self.t, "labels": self.labels,
                "sources": [{"key": s["key"], "label": s["label"], "counts": s["counts"]} for s in self.sources],
                "opt_outs": self.opt_outs}


@dataclass
class Revenue:
    """Attributed orders and revenue of a period, in the shop's currency."""

    orders: int = 0
    revenue: Decimal = Decimal(0)
    campaigns: Decimal = Decimal(0)
    automations: Decimal = Decimal(0)


@dataclass
class CampaignHealth:
    """One campaign started in the period: its sent messages, opt-outs and opt-out rate."""

    campaign: Campaign
    sent: int
    opt_outs: int

    @property
    def rate(self) -> float | None:
        """Opt-outs per message sent (0..1), None before anything was sent."""
        return self.opt_outs / self.sent if self.sent else None

    @property
    def flagged(self) -> bool:
        """True above the opt-out rate carriers treat as a warning sign."""
        return self.rate is not None and self.rate > defaults.OPT_OUT_RATE_WARNING


@dataclass
class Health:
    """Sending health of a period: failures against sent, opt-outs per campaign, and the thresholds."""

    sent: int = 0
    failed: int = 0
    campaigns: list[CampaignHealth] = field(default_factory=list)
    waiting_for_quiet_hours: int = 0
    failure_threshold: float = defaults.FAILURE_RATE_WARNING
    opt_out_threshold: float = defaults.OPT_OUT_RATE_WARNING

    @property
    def failure_rate(self) -> float | None:
        """Failed deliveries per message sent (0..1), None when nothing was sent."""
        return self.failed / self.sent if self.sent else None

    @property
    def failure_flagged(self) -> bool:
        """True above the failure rate that points at bad numbers or carrier filtering."""
        return self.failure_rate is not None and self.failure_rate > self.failure_threshold

    @property
    def campaign_sent(self) -> int:
        """Messages sent by the period's campaigns (the opt-out rate's denominator)."""
        return sum(c.sent for c in self.campaigns)

    @property
    def opt_outs(self) -> int:
        """Opt-outs counted against the period's campaigns."""
        return sum(c.opt_outs for c in self.campaigns)

    @property
    def opt_out_rate(self) -> float | None:
        """Opt-outs per campaign message sent over the period's campaigns, None when none sent."""
        return self.opt_outs / self.campaign_sent if self.campaign_sent else None

    @property
    def flagged_campaigns(self) -> list[CampaignHealth]:
        """The period's campaigns above the opt-out threshold, worst first."""
        return sorted((c for c in self.campaigns if c.flagged), key=lambda c: -(c.rate or 0))


@dataclass
class Dashboard:
    """Everything the home page shows."""

    period: Period
    subscribers: int
    has_subscribers: bool
    growth: Growth
    revenue: Revenue
    recent: list[stats.CampaignRow]
    scheduled: list[stats.CampaignRow]
    automations: list[tuple[Flow, FlowResult]]  # the flows (automations became flows)
    health: Health
    lifecycle: lifecycle.Distribution

    @property
    def is_new_shop(self) -> bool:
        """True for a shop that never had a subscriber nor a campaign (the page shows how to start instead)."""
        return not self.has_subscribers and not self.recent and not self.scheduled


def zone_of(shop: Shop) -> ZoneInfo:
    """The shop's time zone; UTC when it has none or an unknown one."""
    try:
        return ZoneInfo(shop.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def period(shop: Shop, days: int, now: dt.datetime) -> Period:
    """The last `days` local days (one of defaults.DASHBOARD_PERIOD_DAYS) at `now`, in the shop's time zone."""
    if days not in defaults.DASHBOARD_PERIOD_DAYS:
        choices = ", ".join(str(d) for d in defaults.DASHBOARD_PERIOD_DAYS[:-1])
        raise InvalidPeriod(f"Choose a period of {choices} or {defaults.DASHBOARD_PERIOD_DAYS[-1]} days.")
    zone = zone_of(shop)
    start, _end = periods.period_bounds(f"last_{days}_days", now=now, zone=zone)
    today = periods.local_today(now, zone)
    dates = tuple(today - dt.timedelta(days=n) for n in range(days - 1, -1, -1))
    return Period(days=days, zone=zone, start=start, now=now, dates=dates)


def parse_days(raw: str | None) -> int:
    """The `?days=` argument as a period length; missing gives the default, anything else offered is refused."""
    if raw is None or raw == "":
        return defaults.DASHBOARD_DEFAULT_DAYS
    raw = raw.strip()
    if raw.isascii() and raw.isdigit() and int(raw) in defaults.DASHBOARD_PERIOD_DAYS:
        return int(raw)
    choices = ", ".join(str(d) for d in defaults.DASHBOARD_PERIOD_DAYS[:-1])
    raise InvalidPeriod(f"Choose a period of {choices} or {defaults.DASHBOARD_PERIOD_DAYS[-1]} days.")


def subscribers_now(session: OrmSession, shop: Shop) -> int:
    """Subscribed numbers of the shop now (the Subscribers page's "Subscribed" filter)."""
    return session.scalar(select(func.count()).select_from(Subscriber).where(
        Subscriber.shop_id == shop.id, Subscriber.status == SubscriberStatus.SUBSCRIBED)) or 0


def growth(session: OrmSession, shop: Shop, span: Period) -> Growth:
    """New subscribers per local day by source, and opt-outs per local day, over the period."""
    joined = _per_day(session, span, Subscriber.subscribed_at,
                      [Subscriber.shop_id == shop.id, Subscriber.subscribed_at.is_not(None)], Subscriber.source)
    left = _per_day(session, span, SubscriptionEvent.at,
                    [SubscriptionEvent.shop_id == shop.id, SubscriptionEvent.kind == "unsubscribed"], None)
    known = [s for s in SOURCES if any((day, s) in joined for day in span.dates)]
    others = sorted({key for _day, key in joined if key not in SOURCES})
    sources = [{"key": key, "label": SOURCE_LABELS.get(key, key.replace("_", " ").capitalize()),
                "counts": [joined.get((day, key), 0) for day in span.dates]} for key in known + others]
    starts = [periods.day_start(day, span.zone) for day in span.dates]
    return Growth(zone=span.zone.key, t=[int(s.timestamp()) for s in starts],
                  labels=[f"{day:%b} {day.day}" for day in span.dates], sources=sources,
                  opt_outs=[left.get((day, None), 0) for day in span.dates])


def revenue(session: OrmSession, shop: Shop, span: Period) -> Revenue:
    """Orders placed in the period that are credited to a campaign or an automation, and their revenue."""
    result = Revenue()
    for kind, count, total in session.execute(
            select(Campaign.kind, func.count(Attribution.id), func.sum(Attribution.revenue))
            .join(Order, Order.id == Attribution.order_id)
            .join(Campaign, Campaign.id == Attribution.campaign_id)
            .where(Attribution.shop_id == shop.id, Order.shop_id == shop.id, Campaign.shop_id == shop.id,
                   Order.created_at >= span.start, Order.created_at <= span.now)
            .group_by(Campaign.kind)):
        total = total if total is not None else Decimal(0)
        result.orders += count
        result.revenue += total
        if kind in TRIGGERED_KINDS:  # flows, and automations' campaigns not yet flows
            result.automations += total
        else:
            result.campaigns += total
    return result


def recent_campaigns(rows: list[stats.CampaignRow], limit: int = defaults.DASHBOARD_LIST_ROWS
                     ) -> list[stats.CampaignRow]:
    """The latest campaigns that started, latest first, with their results (rows from stats.campaign_rows)."""
    started = [r for r in rows if r.campaign.status in FINISHED and r.campaign.started_at is not None]
    return sorted(started, key=lambda r: (r.campaign.started_at, r.campaign.id), reverse=True)[:limit]


def scheduled_campaigns(rows: list[stats.CampaignRow], limit: int = defaults.DASHBOARD_LIST_ROWS
                        ) -> list[stats.CampaignRow]:
    """Campaigns scheduled to send, soonest first (those switched off are listed too: the page says so)."""
    waiting = [r for r in rows if r.campaign.status == CampaignStatus.SCHEDULED]
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return sorted(waiting, key=lambda r: (r.campaign.send_at or far, r.campaign.id))[:limit]


@dataclass
class FlowResult:
    """A flow's sent messages, clicks, orders and revenue: the sums over its send steps' campaigns (every version),
    shown as a campaign row is (templates/campaigns/_results.html)."""

    sent: int = 0
    clicks: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)
    has_links: bool = False
    tracks_orders: bool = False


def flow_results(session: OrmSession, shop: Shop) -> list[tuple[Flow, FlowResult]]:
    """Each flow (automations became flows) with its sent messages, clicks, orders and revenue, built-ins first."""
    rows, _totals = stats.campaign_rows(session, shop, kind="flow")
    by_campaign = {row.campaign.id: row for row in rows}
    flows = session.scalars(select(Flow).where(Flow.shop_id == shop.id)
                            .order_by(Flow.builtin.is_(None), Flow.name, Flow.id)).all()
    steps = session.execute(select(FlowStep.flow_id, FlowStep.campaign_id).where(
        FlowStep.shop_id == shop.id, FlowStep.campaign_id.is_not(None))).all()
    results = {flow.id: FlowResult() for flow in flows}
    for flow_id, campaign_id in steps:
        row, result = by_campaign.get(campaign_id), results.get(flow_id)
        if row is None or result is None:
            continue
        result.sent += row.sent
        result.clicks += row.clicks
        result.orders += row.orders
        result.revenue += row.revenue
        result.has_links = result.has_links or row.has_links
        result.tracks_orders = result.tracks_orders or row.tracks_orders
    return [(flow, results[flow.id]) for flow in flows]


def health(session: OrmSession, shop: Shop, span: Period, rows: list[stats.CampaignRow]) -> Health:
    """Failures over messages sent in the period, opt-outs per campaign started in it, numbers in quiet hours."""
    result = Health()
    # Only campaigns still sending in the period can have sent in it, so a shop's older campaigns' rows (most of
    # its messages, in time) are never read. A day of margin: a message in flight when a campaign was ended
    # finishes after it (recovery.recover marks those unknown within a day).
    live = select(Campaign.id).where(Campaign.shop_id == shop.id,
                                     or_(Campaign.finished_at.is_(None),
                                         Campaign.finished_at >= span.start - dt.timedelta(days=1)))
    sent, failed = session.execute(
        select(func.count(), func.count().filter(Message.status == MessageStatus.FAILED))
        .where(Message.campaign_id.in_(live),
               Message.shop_id == shop.id, stats.accepted(),
               Message.sent_at >= span.start, Message.sent_at <= span.now)).one()
    result.sent, result.failed = sent or 0, failed or 0
    for row in rows:
        started = row.campaign.started_at
        if row.campaign.kind in CAMPAIGN_KINDS and started is not None and span.start <= started <= span.now:
            result.campaigns.append(CampaignHealth(campaign=row.campaign, sent=row.sent,
                                                   opt_outs=stats.unsubscribes(session, row.campaign)))
    result.waiting_for_quiet_hours = waiting_for_quiet_hours(session, shop, span.now)
    return result


def waiting_for_quiet_hours(session: OrmSession, shop: Shop, now: dt.datetime) -> int:
    """Numbers with a message held until the quiet hours they are in now end (they get it then).

    A message deferred by quiet hours waits, pending, until the end of the window (quiet_hours.defer); one due at
    exactly that instant while its recipient is inside that window is held by it.
    """
    if quiet_hours.window(shop) is None:
        return 0
    zone = func.coalesce(Subscriber.timezone, literal(shop.timezone or "UTC", String))
    held = 0
    for due_at, zone_name, numbers in session.execute(
            select(Message.due_at, zone, func.count(distinct(Message.to_phone)))
            .outerjoin(Subscriber, Subscriber.id == Message.subscriber_id)
            .where(Message.campaign_id.in_(select(Campaign.id).where(Campaign.shop_id == shop.id)),
                   Message.shop_id == shop.id, Message.status == MessageStatus.PENDING, Message.due_at > now)
            .group_by(Message.due_at, zone)):
        recipient_zone = quiet_hours.zone_for(zone_name, shop.timezone)
        if quiet_hours.is_quiet(shop, now, recipient_zone) and due_at == quiet_hours.defer(shop, now, recipient_zone):
            held += numbers
    return held


def summary(session: OrmSession, shop: Shop, days: int, now: dt.datetime) -> Dashboard:
    """Every figure of the home page for the last `days` days at `now`."""
    span = period(shop, days, now)
    # A recurring campaign's runs are campaigns of their own that send: listed and checked like the others.
    rows = stats.campaign_rows(session, shop)[0] + stats.campaign_rows(session, shop, kind="run")[0]
    any_subscriber = session.scalar(select(Subscriber.id).where(Subscriber.shop_id == shop.id).limit(1))
    return Dashboard(period=span, subscribers=subscribers_now(session, shop),
                     has_subscribers=any_subscriber is not None, growth=growth(session, shop, span),
                     revenue=revenue(session, shop, span), recent=recent_campaigns(rows),
                     scheduled=scheduled_campaigns(rows), automations=flow_results(session, shop),
                     health=health(session, shop, span, rows), lifecycle=lifecycle.distribution(session, shop))


def _per_day(session: OrmSession, span: Period, column, where: list, group) -> dict[tuple[dt.date, str | None], int]:
    """Counts of rows whose `column` falls in the period, per (local day, `group` value).

    The database groups by UTC hour (by minute in a zone whose offset is not whole hours), so a few thousand
    buckets at most come back, whatever the number of rows; Python moves each bucket to its local day.
    """
    unit = "hour" if _whole_hours(span) else "minute"
    if session.get_bind().dialect.name == "postgresql":
        bucket = func.date_trunc(unit, column)
    else:
        bucket = func.strftime("%Y-%m-%d %H:00:00" if unit == "hour" else "%Y-%m-%d %H:%M:00", column)
    columns = [bucket.label("bucket"), func.count()]
    if group is not None:
        columns.insert(1, group)
    statement = (select(*columns).where(*where, column >= span.start, column <= span.now)
                 .group_by(bucket, *([group] if group is not None else [])))
    counts: dict[tuple[dt.date, str | None], int] = {}
    for row in session.execute(statement):
        moment, key, count = (row[0], row[1], row[2]) if group is not None else (row[0], None, row[1])
        if isinstance(moment, str):
            moment = dt.datetime.fromisoformat(moment)
        day = moment.replace(tzinfo=dt.timezone.utc).astimezone(span.zone).date()
        counts[(day, key)] = counts.get((day, key), 0) + count
    return counts


def _whole_hours(span: Period) -> bool:
    """True when the zone's offset is a whole number of hours throughout the period (UTC hours map to its days)."""
    offsets = {span.zone.utcoffset(dt.datetime.combine(day, dt.time(12))) for day in span.dates}
    return all(offset is not None and offset.total_seconds() % 3600 == 0 for offset in offsets)
