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


SEND_CAMPAIGN = "workers.campaigns.send_campaign"
"""The dotted path RQ keeps send jobs by (the watchdog looks for them)."""


@job
def send_campaign(campaign_id: int, slot: int = 0, seq: int = 0) -> dict:
    """Claim and send batches of the campaign for a while, then hand over to a successor job (early when the
    worker stops or more urgent work waits)."""
    from kinnekt.campaigns.sending import run
    return run(Session(), campaign_id, slot=slot, seq=seq, may_yield=True, on_claim=_remember_claim)


def _remember_claim(token: str) -> None:
    """Keep the batch's claim token on the RQ job, so that whoever finds the job dead can release its rows."""
    from redis.exceptions import RedisError
    from rq import get_current_job
    current = get_current_job()
    if current is None:  # the in-process queue: no other process can find it dead
        return
    current.meta["claim_token"] = token
    try:
        current.save_meta()
    except RedisError:  # the rows are released by their lease instead
        log.warning("could not save the claim token of job %s", current.id)


def after_lost_sender(lost) -> bool:
    """A send job died with its worker or work horse: release its claimed rows and queue its slot again.
    Returns whether `lost` was a send job."""
    if lost.func_name != SEND_CAMPAIGN or not lost.args:
        return False
    from kinnekt.campaigns import recovery, sending
    campaign_id = int(lost.args[0])
    slot = int(lost.args[1]) if len(lost.args) > 1 else 0
    token = (lost.get_meta(refresh=True) or {}).get("claim_token")
    try:
        released = recovery.release_claims(Session(), campaign_id, token) if token else 0
        sending.dispatch_slot(campaign_id, slot, tag=f"lost-{lost.id.rsplit('-', 1)[-1]}")
    finally:
        Session.remove()
    log.warning("campaign %s: sender %s was lost; %s claimed rows released, slot %s queued again", campaign_id,
                lost.id, released, slot)
    return True


@job
def watch_senders() -> dict[str, int]:
    """The watchdog, every SENDER_WATCH_SECONDS on the urgent lane: a send job whose worker stopped heartbeating
    is dead (its rows released, its slot queued again), and a running campaign with due rows and no send job
    queued or running gets its senders queued. Only RQ has workers that can die apart from the app."""
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry
    from kinnekt.campaigns.recovery import campaigns_with_due_rows
    from kinnekt.campaigns.sending import dispatch
    queue = get_queue()
    if queue.mode != "rq":
        return {}
    sends = queue.lanes["sends"]
    registry = StartedJobRegistry(queue=sends)
    now = utcnow()
    covered: set[int] = set()
    lost = 0
    for started in Job.fetch_many(registry.get_job_ids(cleanup=False), connection=queue.redis):
        if started is None or started.func_name != SEND_CAMPAIGN or not started.args:
            continue
        beat = started.last_heartbeat or started.started_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=dt.timezone.utc)
        if beat is not None and (now - beat).total_seconds() > defaults.SENDER_DEAD_AFTER_SECONDS:
            registry.remove_executions(started)  # seen once: the next watch does not release it again
            started.set_status(JobStatus.FAILED)
            after_lost_sender(started)
            lost += 1
        else:
            covered.add(int(started.args[0]))
    for waiting in Job.fetch_many(sends.get_job_ids(), connection=queue.redis):
        if waiting is not None and waiting.func_name == SEND_CAMPAIGN and waiting.args:
            covered.add(int(waiting.args[0]))
    dispatched = 0
    for campaign_id in campaigns_with_due_rows(Session()):
        if campaign_id not in covered:
            dispatch(campaign_id, tag=f"watch{int(now.timestamp())}")
            dispatched += 1
    Session.commit()
    if lost or dispatched:
        log.warning("sender watchdog: %s lost senders, %s campaigns without a sender", lost, dispatched)
    return {"lost": lost, "dispatched": dispatched}


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
    from kinnekt.campaigns.recovery import recover
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


@register_recoverer
def requeue_lost_senders() -> int:
    """At start-up (and in every recovery): the watchdog's work, so a worker that comes back after Redis lost its
    jobs sends again at once; returns how many senders it queued."""
    return sum(watch_senders().values())
