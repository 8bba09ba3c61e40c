"""Jobs of campaigns: start one (snapshot, codes, dispatch), send its batches, wake it, and recover lost work."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign
from kinnekt.queue import get_queue
from workers import job
from workers.jobs import register_recoverer

log = logging.getLogger(__name__)


@job
def start_campaign(campaign_id: int) -> str:
    """Start a due campaign (re-checks status, switcher and install state); a recurring one makes its run instead
    (kinnekt.campaigns.recurrence). Returns what it did."""
    from kinnekt.campaigns.lifecycle import start
    return start(Session(), campaign_id)


@job
def send_campaign(campaign_id: int, slot: int = 0, seq: int = 0) -> dict:
    """Claim and send batches of the campaign for a while, then hand over to a successor job."""
    from kinnekt.campaigns.sending import run
    return run(Session(), campaign_id, slot=slot, seq=seq)


@job
def wake_campaign(campaign_id: int) -> str:
    """Rows deferred by quiet hours, local time or a retry are due: queue the senders again."""
    from kinnekt.campaigns.sending import dispatch
    dispatch(campaign_id, tag=f"w{int(utcnow().timestamp())}")
    return "dispatched"


@job
def start_due_campaigns() -> int:
    """Start every scheduled campaign whose time has come (the enqueue_at job may have been lost)."""
    return requeue_campaigns()


@register_recoverer
def requeue_campaigns() -> int:
    """Queue starts of due campaigns and of starts cut short, settle lost sends, re-dispatch stalled campaigns."""
    from kinnekt.campaigns.lifecycle import due_campaigns
    from kinnekt.campaigns.sending import recover
    session = Session()
    now = utcnow()
    queued = 0
    for campaign_id in due_campaigns(session, now=now):
        get_queue().enqueue(start_campaign, campaign_id, job_id=f"campaign-{campaign_id}-start")
        queued += 1
    grace = now - dt.timedelta(seconds=defaults.CAMPAIGN_STALL_SECONDS)
    unstarted = session.scalars(select(Campaign.id).where(
        Campaign.status == "in_progress", Campaign.snapshot_at.is_(None),
        (Campaign.started_at.is_(None)) | (Campaign.started_at <= grace)).execution_options(all_shops=True)).all()
    for campaign_id in unstarted:
        get_queue().enqueue(start_campaign, campaign_id, job_id=f"campaign-{campaign_id}-start")
        queued += 1
    counts = recover(session, now=now)
    if any(counts.values()):
        log.info("campaign recovery: %s", counts)
    return queued + counts["dispatched"]
