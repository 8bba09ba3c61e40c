"""The campaign state machine: draft -> scheduled -> in_progress -> completed, plus ended (by the merchant) and failed.

- Draft and Scheduled campaigns have the on/off switcher (`enabled`); a scheduled campaign switched off is
  not started. "Send now" campaigns go straight to In Progress and have no switcher.
- A scheduled campaign is started by `start` (a job queued with enqueue_at for its time, and the periodic
  due scan in case that job was lost). Every job re-checks status, switcher and install state when it runs.
- `start` snapshots the audience, creates the discount codes, and queues the senders; it is safe to run
  again after a crash (the snapshot is idempotent, the state transitions are conditional UPDATEs).
- End: the campaign becomes Ended and its pending and claimed rows "ended" in one transaction; a message
  already "sending" finishes. Delete: anything but a campaign in progress (end it first).
- Failed: a campaign that could not run (its segments were deleted, the app was uninstalled, Shopify
  refused the discount), with the reason for the merchant. Nothing has been sent when a start fails.
- Recurring (kinnekt/campaigns/recurrence.py): stays Scheduled (switchable, editable) while runs remain; each
  due start creates a run (kind "run") that goes through `start` like any campaign, and moves the campaign to
  its next run; it completes after its end date. End stops further runs (a run in progress is ended on its own).
  Delete takes its runs along, and is refused while one of them is in progress.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from decimal import Decimal

from sqlalchemy import delete as sa_delete, func, select, update
from sqlalchemy.orm import Session as OrmSession, aliased

from kinnekt import defaults, signals
from kinnekt.campaigns import audience, quiet_hours, recurrence, tasks
from kinnekt.db import utcnow
from kinnekt.models import Campaign, CampaignSegment, Message, Segment, Shop, Subscriber
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.message import MessageStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.sms import registration

log = logging.getLogger(__name__)

SWITCHABLE = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)
"""Statuses with the on/off switcher; they can also be edited and deleted."""

FINISHED = CampaignStatus.FINISHED
"""Statuses after which nothing more is sent."""

UNINSTALLED_REASON = "App uninstalled"


class CampaignError(ValueError):
    """An action the campaign's state does not allow, or a campaign that cannot be sent; the message says why."""


def _now(now: dt.datetime | None) -> dt.datetime:
    return utcnow() if now is None else now.astimezone(dt.timezone.utc)


def save(session: OrmSession, shop: Shop, values: dict, campaign: Campaign | None = None) -> Campaign:
    """Create a draft, or update a draft / scheduled campaign, from `composer.validate` values; commits."""
    if campaign is None:
        campaign = Campaign(shop_id=shop.id, status=CampaignStatus.DRAFT, enabled=True, name=values.get("name") or "")
        session.add(campaign)
    elif campaign.status not in SWITCHABLE:
        raise CampaignError(f"A campaign that is {campaign.status_label} cannot be edited.")
    same_rule = (campaign.repeat_anchor is not None and values.get("send_at", campaign.send_at) == campaign.send_at
                 and values.get("repeat", campaign.repeat) == campaign.repeat)
    for key in ("name", "body", "send_now", "send_at", "recipient_local_time", "discount_mode", "discount_code",
                "discount_kind", "discount_value", "repeat", "repeat_until", "cap_choice"):
        if key in values:
            setattr(campaign, key, values[key])
    if campaign.discount_mode == "none":
        campaign.discount_code = campaign.discount_kind = campaign.discount_value = None
    if campaign.send_now:
        campaign.send_at, campaign.recipient_local_time = None, False
        campaign.repeat = "none"
    if (campaign.repeat or "none") == "none":
        campaign.repeat, campaign.repeat_until, campaign.repeat_anchor = "none", None, None
    elif not same_rule:
        # The rule (weekday or day of month, wall-clock time) is the first run as chosen; an edit that keeps
        # the shown next run keeps it (a "day 31" campaign shown on Feb 28 stays on day 31).
        campaign.repeat_anchor = campaign.send_at
    session.flush()
    if "include_segment_ids" in values or "exclude_segment_ids" in values:
        wanted = {int(i): "include" for i in values.get("include_segment_ids") or ()}
        wanted.update({int(i): "exclude" for i in values.get("exclude_segment_ids") or () if int(i) not in wanted})
        known = set(session.scalars(select(Segment.id).where(Segment.shop_id == shop.id,
                                                             Segment.id.in_(list(wanted))))) if wanted else set()
        session.execute(sa_delete(CampaignSegment).where(CampaignSegment.campaign_id == campaign.id))
        for segment_id, mode in sorted(wanted.items()):
            if segment_id in known:
                session.add(CampaignSegment(shop_id=shop.id, campaign_id=campaign.id, segment_id=segment_id,
                                            mode=mode))
    session.commit()
    session.expire(campaign, ["audience"])
    return campaign


def schedule(session: OrmSession, campaign: Campaign, *, now: dt.datetime | None = None) -> Campaign:
    """Schedule the campaign (Send now: In Progress at once and its start queued); raises CampaignError."""
    now = _now(now)
    session.refresh(campaign)
    if campaign.status not in SWITCHABLE:
        raise CampaignError(f"A campaign that is {campaign.status_label} cannot be scheduled.")
    shop = session.get(Shop, campaign.shop_id)
    if shop is None or not shop.installed:
        raise CampaignError("The app is not installed on this store.")
    if not (campaign.body or "").strip():
        raise CampaignError("Write the message before scheduling the campaign.")
    include_ids, _ = audience.campaign_segments(session, campaign)
    if not include_ids:
        raise CampaignError("Choose at least one segment to send to.")
    if campaign.discount_mode == "shared" and not (campaign.discount_code or "").strip():
        raise CampaignError("Enter the discount code.")
    held = us_hold_reason(session, campaign, shop, now=now)
    if held:
        raise CampaignError(held)
    if campaign.send_now:
        moved = session.execute(
            update(Campaign).where(Campaign.id == campaign.id, Campaign.status.in_(SWITCHABLE))
            .values(status=CampaignStatus.IN_PROGRESS, enabled=True, started_at=now, failure_reason=None,
                    finished_at=None)
            .execution_options(synchronize_session=False)).rowcount
        session.commit()
        session.refresh(campaign)
        if moved:
            _enqueue_start(campaign.id)
        return campaign
    if campaign.send_at is None:
        raise CampaignError("Choose when to send the campaign.")
    if campaign.send_at <= now:
        raise CampaignError("Choose a time in the future.")
    if recurrence.is_recurring(campaign) and not recurrence.last_day_ok(
            campaign.send_at, campaign.repeat_until, quiet_hours.zone_for(shop.timezone)):
        raise CampaignError("The end date is before the first run.")
    campaign.status = CampaignStatus.SCHEDULED
    campaign.failure_reason = None
    session.commit()
    _enqueue_start(campaign.id, at=start_time(session, campaign), now=now)
    return campaign


def set_enabled(session: OrmSession, campaign: Campaign, enabled: bool) -> Campaign:
    """Switch a draft or scheduled campaign on or off; commits. A scheduled campaign that is off never starts."""
    moved = session.execute(
        update(Campaign).where(Campaign.id == campaign.id, Campaign.status.in_(SWITCHABLE),
                               Campaign.send_now.is_(False))
        .values(enabled=bool(enabled)).execution_options(synchronize_session=False)).rowcount
    session.commit()
    session.refresh(campaign)
    if not moved:
        raise CampaignError(f"A campaign that is {campaign.status_label} cannot be switched on or off.")
    if enabled and campaign.status == CampaignStatus.SCHEDULED:
        recurrence.catch_up(session, campaign, now=utcnow())
    if enabled and campaign.status == CampaignStatus.SCHEDULED:
        _enqueue_start(campaign.id, at=start_time(session, campaign))
    return campaign


def end(session: OrmSession, campaign: Campaign, *, now: dt.datetime | None = None) -> Campaign:
    """End a campaign in progress: the remaining recipients are not texted (a message being sent finishes).

    A scheduled recurring campaign ends too: it makes no further runs (a run in progress goes on).
    """
    now = _now(now)
    endable = (Campaign.status == CampaignStatus.IN_PROGRESS) | (
        (Campaign.status == CampaignStatus.SCHEDULED) & (Campaign.kind == "campaign") & (Campaign.repeat != "none"))
    moved = session.execute(
        update(Campaign).where(Campaign.id == campaign.id, endable)
        .values(status=CampaignStatus.ENDED, finished_at=now).execution_options(synchronize_session=False)).rowcount
    if moved:
        stop_rows(session, campaign.id, now=now)
    session.commit()
    session.refresh(campaign)
    if not moved:
        raise CampaignError(f"Only a campaign in progress can be ended; this one is {campaign.status_label}.")
    return campaign


def stop_rows(session: OrmSession, campaign_id: int, *, now: dt.datetime | None = None) -> int:
    """Mark the campaign's pending and claimed rows "ended" (in the caller's transaction); returns how many."""
    return session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status.in_(MessageStatus.WAITING))
        .values(status=MessageStatus.ENDED, claim_token=None, updated_at=_now(now))
        .execution_options(synchronize_session=False)).rowcount or 0


def delete(session: OrmSession, campaign: Campaign) -> None:
    """Delete a campaign that is not in progress, with its messages, links and statistics (and a recurring
    campaign's runs, unless one of them is in progress); commits."""
    session.refresh(campaign)
    if campaign.status == CampaignStatus.IN_PROGRESS:
        raise CampaignError("End the campaign before deleting it.")
    campaign_id = campaign.id
    runs = aliased(Campaign)
    running = select(runs.id).where(runs.parent_id == campaign_id, runs.status == CampaignStatus.IN_PROGRESS).exists()
    if session.scalar(select(running)):
        raise CampaignError("A run of this campaign is in progress: end it before deleting the campaign.")
    gone = session.execute(sa_delete(Campaign).where(Campaign.id == campaign_id,
                                                     Campaign.status != CampaignStatus.IN_PROGRESS,
                                                     ~running)
                           .execution_options(synchronize_session=False)).rowcount
    session.commit()
    if not gone:
        raise CampaignError("End the campaign before deleting it.")
    session.expunge(campaign)


def fail(session: OrmSession, campaign_id: int, reason: str, *, now: dt.datetime | None = None) -> bool:
    """Mark a campaign that cannot run as Failed with the reason; its unsent rows end. Commits."""
    now = _now(now)
    moved = session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(CampaignStatus.ACTIVE))
        .values(status=CampaignStatus.FAILED, failure_reason=reason, finished_at=now)
        .execution_options(synchronize_session=False)).rowcount
    if moved:
        stop_rows(session, campaign_id, now=now)
    session.commit()
    if moved:
        log.warning("campaign %s failed: %s", campaign_id, reason)
    return bool(moved)


# ---------------------------------------------------------------------------------------------- starting

def start_time(session: OrmSession, campaign: Campaign) -> dt.datetime | None:
    """When the campaign must start: send_at, or for recipients' local time the first zone that reaches it."""
    if campaign.send_now:
        return campaign.started_at or utcnow()
    if campaign.send_at is None:
        return None
    if not campaign.recipient_local_time:
        return campaign.send_at
    shop = session.get(Shop, campaign.shop_id)
    shop_zone = quiet_hours.zone_for(shop.timezone)
    zones = session.scalars(select(func.coalesce(Subscriber.timezone, shop.timezone or "UTC")).distinct()
                            .where(Subscriber.shop_id == shop.id,
                                   Subscriber.status == SubscriberStatus.SUBSCRIBED)).all()
    times = [quiet_hours.wall_clock_in(campaign.send_at, shop_zone, quiet_hours.zone_for(z, shop.timezone))
             for z in zones] or [campaign.send_at]
    return min(times)


def due_campaigns(session: OrmSession, *, now: dt.datetime | None = None) -> list[int]:
    """Ids of scheduled, switched-on campaigns of installed shops whose start time has come."""
    now = _now(now)
    ahead = now + dt.timedelta(hours=defaults.CAMPAIGN_LOCAL_TIME_LOOKAHEAD_HOURS)
    candidates = session.scalars(
        select(Campaign).join(Shop, Shop.id == Campaign.shop_id)
        .where(Campaign.status == CampaignStatus.SCHEDULED, Campaign.enabled.is_(True), Campaign.send_at.is_not(None),
               Campaign.send_at <= ahead, Shop.uninstalled_at.is_(None))
        .order_by(Campaign.send_at, Campaign.id).execution_options(all_shops=True)).all()
    due = []
    for campaign in candidates:
        when = campaign.send_at if not campaign.recipient_local_time else start_time(session, campaign)
        if when is not None and when <= now:
            due.append(campaign.id)
    return due


def start(session: OrmSession, campaign_id: int, *, now: dt.datetime | None = None) -> str:
    """Start (or finish starting) a campaign: snapshot, discount codes, then queue the senders. Returns what it did.

    Re-checks everything when it runs: a campaign switched off, edited to a later time, ended, deleted,
    or of an uninstalled shop is not started.
    """
    explicit_now = now is not None
    now = _now(now)
    campaign = session.get(Campaign, campaign_id, populate_existing=True)
    if campaign is None:
        return "no campaign"
    shop = session.get(Shop, campaign.shop_id, populate_existing=True)
    if campaign.status == CampaignStatus.SCHEDULED:
        if shop is None or not shop.installed:
            fail(session, campaign_id, UNINSTALLED_REASON, now=now)
            return "failed"
        if not campaign.enabled:
            return "switched off"
        when = start_time(session, campaign)
        if when is not None and dt.timedelta(0) < when - now <= dt.timedelta(seconds=2) and not explicit_now:
            # RQ's scheduler keeps whole seconds, so the enqueue_at job can run up to a second early: wait.
            time.sleep((when - now).total_seconds())
            now = when
        if when is None or when > now:
            return "not due"
        if recurrence.is_recurring(campaign):
            return _start_run(session, campaign, now)
        moved = session.execute(
            update(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.SCHEDULED,
                                   Campaign.enabled.is_(True))
            .values(status=CampaignStatus.IN_PROGRESS,
                    started_at=now).execution_options(synchronize_session=False)).rowcount
        session.commit()
        if not moved:
            return "not scheduled"
        session.refresh(campaign)
    if campaign.status != CampaignStatus.IN_PROGRESS:
        return f"not started: {campaign.status}"
    if shop is None or not shop.installed:
        campaign_status_end_uninstalled(session, campaign_id, now)
        return "ended"
    if campaign.snapshot_at is None:
        include_ids, _ = audience.campaign_segments(session, campaign)
        if not include_ids:
            fail(session, campaign_id, "Its segments were deleted, so it has nobody to send to.", now=now)
            return "failed"
        reason = us_hold_reason(session, campaign, shop, now=now) or create_shared_discount(session, campaign, shop,
                                                                                             now)
        if reason:
            fail(session, campaign_id, reason, now=now)
            return "failed"
        try:
            audience.snapshot(session, campaign, now=now)
        except audience.AudienceError as exc:
            session.rollback()
            fail(session, campaign_id, str(exc), now=now)
            return "failed"
        reason = _unique_codes(session, campaign, shop, now)
        if reason:
            fail(session, campaign_id, reason, now=now)
            return "failed"
        signals.announce(signals.audience_snapshot_taken, session, campaign=campaign, shop=shop)
        session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.snapshot_at.is_(None))
                        .values(snapshot_at=now).execution_options(synchronize_session=False))
        session.commit()
    tasks.enqueue_senders(campaign_id)
    return "started"


def us_hold_reason(session: OrmSession, campaign: Campaign, shop: Shop, *, now: dt.datetime | None = None
                   ) -> str | None:
    """Why the campaign may not start because its audience has US numbers and the shop has no approved US sender
    (kinnekt.sms.registration.us_block_reason: only shops with senders of their own are held), or None."""
    blocked = registration.us_block_reason(session, shop.id)
    if blocked is None:
        return None
    include_ids, exclude_ids = audience.campaign_segments(session, campaign)
    if not include_ids:
        return None
    try:
        us = audience.breakdown(session, shop, include_ids, exclude_ids, now=_now(now)).sendable_by_country.get("US", 0)
    except audience.AudienceError:
        session.rollback()
        return None  # the start reports the audience's own problem
    if not us:
        return None
    return f"Its audience has {us:,} US {'number' if us == 1 else 'numbers'}. {blocked}"


def _start_run(session: OrmSession, campaign: Campaign, now: dt.datetime) -> str:
    """A recurring campaign is due: create its run, start that, and queue the campaign's next start."""
    run_id, following = recurrence.run_due(session, campaign, now=now)
    if run_id is None:
        return "not scheduled"
    outcome = start(session, run_id, now=now)
    if following is not None:
        session.refresh(campaign)
        _enqueue_start(campaign.id, at=start_time(session, campaign), now=now)
    return f"run {run_id} {outcome}"


def campaign_status_end_uninstalled(session: OrmSession, campaign_id: int, now: dt.datetime) -> None:
    """A running campaign of a shop that uninstalled the app ends with that reason (its rows end)."""
    session.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.IN_PROGRESS)
                    .values(status=CampaignStatus.ENDED, failure_reason=UNINSTALLED_REASON, finished_at=now)
                    .execution_options(synchronize_session=False))
    stop_rows(session, campaign_id, now=now)
    session.commit()


def discount_terms(campaign: Campaign, now: dt.datetime) -> dict:
    """The campaign's discount as Shopify's create calls take it: title, value (percent or amount off), start."""
    from kinnekt.shopify.discounts import DiscountValue
    value = Decimal(str(campaign.discount_value if campaign.discount_value is not None else 0))
    worth = DiscountValue.amount_off(value) if campaign.discount_kind == "amount" else DiscountValue.percent_off(value)
    return {"title": f"Kinnekt: {campaign.name}"[:255], "value": worth, "starts_at": now}


def _refusal(exc: Exception) -> str:
    return f"Shopify refused the discount code: {exc}"


def create_shared_discount(session: OrmSession, campaign: Campaign, shop: Shop, now: dt.datetime) -> str | None:
    """Create the campaign's shared code at Shopify once (demo shops: nothing to create); commits; the failure
    reason, or None."""
    if campaign.discount_mode != "shared" or campaign.discount_shopify_id or shop.is_demo:
        return None
    from kinnekt.shopify.discounts import DiscountInputError, create_shared_code
    from kinnekt.shopify.graphql import ShopifyError
    try:
        created = create_shared_code(shop, code=campaign.discount_code or "", **discount_terms(campaign, now))
    except (DiscountInputError, ShopifyError) as exc:
        return _refusal(exc)
    campaign.discount_shopify_id = created.discount_id
    session.commit()
    return None


def _unique_codes(session: OrmSession, campaign: Campaign, shop: Shop, now: dt.datetime) -> str | None:
    """Give each pending row its own code and create them at Shopify; the failure reason, or None.

    The codes are stored on the rows first (committed), then created: a start that crashed in between
    creates the same codes again rather than handing out codes Shopify never heard of.
    """
    if campaign.discount_mode != "unique" or campaign.discount_shopify_id:
        return None
    from kinnekt.shopify.discounts import DiscountInputError, create_unique_codes, generate_codes
    from kinnekt.shopify.graphql import ShopifyError
    missing = session.scalars(select(Message.id).where(Message.campaign_id == campaign.id,
                                                       Message.status == MessageStatus.PENDING,
                                                       Message.discount_code.is_(None)).order_by(Message.id)).all()
    if missing:
        codes = generate_codes(len(missing), prefix=(campaign.discount_code or "").strip().upper())
        session.execute(update(Message), [{"id": m, "discount_code": c} for m, c in zip(missing, codes)])
        session.commit()
    codes = session.scalars(select(Message.discount_code).where(Message.campaign_id == campaign.id,
                                                                Message.discount_code.is_not(None))
                            .order_by(Message.id)).all()
    if not codes or shop.is_demo:
        return None
    try:
        created = create_unique_codes(shop, list(codes), **discount_terms(campaign, now))
    except (DiscountInputError, ShopifyError) as exc:
        return _refusal(exc)
    if created.failed:
        refused = [code for code, _ in created.failed]
        session.execute(update(Message).where(Message.campaign_id == campaign.id, Message.discount_code.in_(refused),
                                              Message.status == MessageStatus.PENDING)
                        .values(status=MessageStatus.SKIPPED, skip_reason="no_discount_code", due_at=None)
                        .execution_options(synchronize_session=False))
    campaign.discount_shopify_id = created.discount_id
    session.commit()
    return None


def _enqueue_start(campaign_id: int, *, at: dt.datetime | None = None, now: dt.datetime | None = None) -> None:
    if at is None or at <= _now(now):
        tasks.enqueue_start_campaign(campaign_id)
    else:
        tasks.enqueue_start_campaign(campaign_id, at=at)


def resume_after_billing(session: OrmSession, shop_id: int) -> int:
    """The shop's plan lets it send again (kinnekt.billing.plans): wake the senders of its running campaigns and
    automations (their rows waited as pending, kinnekt.campaigns.sending.billing_stop); returns how many."""
    ids = session.scalars(select(Campaign.id).where(Campaign.shop_id == shop_id,
                                                    Campaign.status == CampaignStatus.IN_PROGRESS)
                          .execution_options(all_shops=True)).all()
    tag = f"billing-{int(time.time())}"
    for campaign_id in ids:
        tasks.enqueue_senders(campaign_id, tag=tag)
    return len(ids)

