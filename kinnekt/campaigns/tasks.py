"""Jobs of campaigns: start one (snapshot, codes, dispatch), send its batches, wake it, recover lost work, and
recompute attribution after the attribution window changed."""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select

from kinnekt import defaults
from kinnekt.campaigns import attribution, lifecycle, recovery, sending
from kinnekt.db import Session, utcnow
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import Campaign, Shop
from kinnekt.models.campaign import CampaignStatus
from kinnekt.queue import get_queue, job_path

log = logging.getLogger(__name__)


@job(lane="sends")
def start_campaign(campaign_id: int) -> str:
    """Start a due campaign (re-checks status, switcher and install state); a recurring one makes its run instead
    (kinnekt.campaigns.recurrence). Returns what it did."""
    return lifecycle.start(Session(), campaign_id)


def enqueue_start_campaign(campaign_id: int, *, at: dt.datetime | None = None) -> None:
    """Queue the start of a campaign now, or at the aware instant `at` (one start per campaign and instant)."""
    if at is None:
        get_queue().enqueue(start_campaign, campaign_id, job_id=f"campaign-{campaign_id}-start")
    else:
        get_queue().enqueue_at(at, start_campaign, campaign_id,
                               job_id=f"campaign-{campaign_id}-start-at-{int(at.timestamp())}")


@job(lane="sends")
def send_campaign(campaign_id: int, slot: int = 0, seq: int = 0) -> dict:
    """Claim and send batches of the campaign for a while, then hand over to a successor job (early when the
    worker stops or more urgent work waits)."""
    return sending.run(Session(), campaign_id, slot=slot, seq=seq, may_yield=True, on_claim=_remember_claim)


SEND_CAMPAIGN = frozenset({job_path(send_campaign), "workers.campaigns.send_campaign"})
"""The dotted paths RQ keeps send jobs by (the watchdog looks for them); the second is the path before the jobs
moved out of workers/, which send jobs queued by the previous release still have."""


def enqueue_senders(campaign_id: int, *, tag: str = "0") -> None:
    """Queue the campaign's senders, one per slot; a job id already queued or running is not queued twice.

    A wake-up passes its own `tag`, so it never waits on a sender that is just finishing (a second sender
    for a while is harmless: claims are disjoint).
    """
    for slot in range(max(1, defaults.CAMPAIGN_SENDERS)):
        enqueue_send_campaign(campaign_id, slot, tag=tag)


def enqueue_send_campaign(campaign_id: int, slot: int, seq: int = 0, *, tag: str | None = None) -> None:
    """Queue one sender slot of the campaign: the successor number `seq`, or a new sender told apart by `tag`
    (a dispatch, a wake-up, a lost job); a job id already queued or running is not queued twice."""
    job_id = f"campaign-{campaign_id}-send-{slot}-{seq if tag is None else tag}"
    get_queue().enqueue(send_campaign, campaign_id, slot, seq, job_id=job_id)


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
    if lost.func_name not in SEND_CAMPAIGN or not lost.args:
        return False
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


@job(lane="urgent")
def watch_senders() -> dict[str, int]:
    """The watchdog, every SENDER_WATCH_SECONDS on the urgent lane: a send job whose worker stopped heartbeating
    is dead (its rows released, its slot queued again), and a running campaign with due rows and no send job
    queued or running gets its senders queued. Only RQ has workers that can die apart from the app."""
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry
    queue = get_queue()
    if queue.mode != "rq":
        return {}
    sends = queue.lanes["sends"]
    registry = StartedJobRegistry(queue=sends)
    now = utcnow()
    covered: set[int] = set()
    lost = 0
    for started in Job.fetch_many(registry.get_job_ids(cleanup=False), connection=queue.redis):
        if started is None or started.func_name not in SEND_CAMPAIGN or not started.args:
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
        if waiting is not None and waiting.func_name in SEND_CAMPAIGN and waiting.args:
            covered.add(int(waiting.args[0]))
    dispatched = 0
    for campaign_id in recovery.campaigns_with_due_rows(Session()):
        if campaign_id not in covered:
            enqueue_senders(campaign_id, tag=f"watch{int(now.timestamp())}")
            dispatched += 1
    Session.commit()
    if lost or dispatched:
        log.warning("sender watchdog: %s lost senders, %s campaigns without a sender", lost, dispatched)
    return {"lost": lost, "dispatched": dispatched}


@job
def wake_campaign(campaign_id: int) -> str:
    """Rows deferred by quiet hours, local time or a retry are due: queue the senders again."""
    enqueue_senders(campaign_id, tag=f"w{int(utcnow().timestamp())}")
    return "dispatched"


def enqueue_wake_campaign(campaign_id: int, when: dt.datetime) -> None:
    """Queue a wake-up of the campaign's senders for `when`; one wake-up per campaign and second."""
    get_queue().enqueue_at(when, wake_campaign, campaign_id,
                           job_id=f"campaign-{campaign_id}-wake-{int(when.timestamp())}")


@job
def start_due_campaigns() -> int:
    """Start every scheduled campaign whose time has come (the enqueue_at job may have been lost)."""
    return requeue_campaigns()


@register_recoverer
def requeue_campaigns() -> int:
    """Queue starts of due campaigns and of starts cut short, settle lost sends, re-dispatch stalled campaigns."""
    session = Session()
    now = utcnow()
    queued = 0
    for campaign_id in lifecycle.due_campaigns(session, now=now):
        enqueue_start_campaign(campaign_id)
        queued += 1
    grace = now - dt.timedelta(seconds=defaults.CAMPAIGN_STALL_SECONDS)
    unstarted = session.scalars(select(Campaign.id).where(
        Campaign.status == CampaignStatus.IN_PROGRESS, Campaign.snapshot_at.is_(None),
        (Campaign.started_at.is_(None)) | (Campaign.started_at <= grace)).execution_options(all_shops=True)).all()
    for campaign_id in unstarted:
        enqueue_start_campaign(campaign_id)
        queued += 1
    counts = recovery.recover(session, now=now)
    if any(counts.values()):
        log.info("campaign recovery: %s", counts)
    return queued + counts["dispatched"]


@register_recoverer
def requeue_lost_senders() -> int:
    """At start-up (and in every recovery): the watchdog's work, so a worker that comes back after Redis lost its
    jobs sends again at once; returns how many senders it queued."""
    return sum(watch_senders().values())


@job(lane="bulk")
def recompute_attribution(shop_id: int) -> str:
    """Re-attribute the shop's orders with its current attribution window (kinnekt.campaigns.attribution)."""
    session = Session()
    shop = session.get(Shop, shop_id)
    if shop is None or not shop.installed:
        return "no shop"
    attribution.recompute(session, shop)
    return "done"


def enqueue_recompute_attribution(shop_id: int) -> None:
    """Queue a recompute of the shop's attribution (the Settings page, after the window changed)."""
    get_queue().enqueue(recompute_attribution, shop_id, job_id=f"attribution-recompute-{shop_id}")
