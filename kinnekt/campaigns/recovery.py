"""Recovery of a campaign's lost work: claims whose sender died, sends whose worker died, stalled campaigns.

A claimed row was never requested, so it goes back to pending (`release_claims` when the watchdog finds its
sender dead, `recover` when its lease expired). A row left "sending" may have been sent: it becomes
"unknown", never resent. A running campaign with due rows and no live sender gets its senders queued
again. The statuses and why this never sends a message twice: docs/sending.md.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.campaigns import sending, tasks
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message
from kinnekt.models.campaign import TRIGGERED_KINDS, CampaignStatus
from kinnekt.models.message import MessageStatus


def release_claims(session: OrmSession, campaign_id: int, token: str) -> int:
    """A lost sender's claimed rows go back to pending, unclaimed (none of them was requested); commits."""
    released = session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CLAIMED,
                              Message.claim_token == token)
        .values(status="pending", claim_token=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount or 0
    session.commit()
    return released


def campaigns_with_due_rows(session: OrmSession, *, now: dt.datetime | None = None) -> list[int]:
    """Running campaigns (and automations) with rows due to be sent now and claimed by nobody."""
    now = now or utcnow()
    due = exists().where(Message.campaign_id == Campaign.id, Message.status == MessageStatus.PENDING,
                         Message.claim_token.is_(None), Message.due_at.is_(None) | (Message.due_at <= now))
    return list(session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.IN_PROGRESS,
                                                          Campaign.snapshot_at.is_not(None), due)
                                .order_by(Campaign.id).execution_options(all_shops=True)))


def recover(session: OrmSession, *, now: dt.datetime | None = None) -> dict[str, int]:
    """Release expired claims, mark stale sends unknown, and re-dispatch stalled campaigns; commits.

    Claimed rows whose lease expired go back to pending (never requested). Rows "sending" for longer than
    CAMPAIGN_SENDING_STALE_SECONDS become "unknown" (never resent; see docs/sending.md). A campaign
    with due rows and no batch claimed within CAMPAIGN_STALL_SECONDS gets its senders queued again.
    """
    now = now or utcnow()
    lease = now - dt.timedelta(seconds=defaults.CAMPAIGN_CLAIM_LEASE_SECONDS)
    stale = now - dt.timedelta(seconds=defaults.CAMPAIGN_SENDING_STALE_SECONDS)
    stall = now - dt.timedelta(seconds=defaults.CAMPAIGN_STALL_SECONDS)
    counts = {"released": 0, "unknown": 0, "dispatched": 0}
    recent = now - dt.timedelta(days=1)
    running = session.execute(
        select(Campaign.id, Campaign.status, Campaign.heartbeat_at, Campaign.snapshot_at, Campaign.kind)
        .where((Campaign.status == CampaignStatus.IN_PROGRESS)
               | (Campaign.status.in_(CampaignStatus.STOPPED) & (Campaign.finished_at >= recent)))
        .order_by(Campaign.id).execution_options(all_shops=True)).all()
    for campaign_id, status, heartbeat_at, snapshot_at, kind in running:
        if status != "in_progress":
            # Ended or failed while a worker died mid-send: its one "sending" row still becomes unknown.
            counts["unknown"] += _stale_sends(session, campaign_id, stale, now)
            session.commit()
            continue
        if snapshot_at is None:
            continue  # still starting: the start job (re-queued by the due scan) finishes it
        counts["released"] += session.execute(
            update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.CLAIMED,
                                  Message.updated_at <= lease)
            .values(status="pending", claim_token=None, updated_at=now)
            .execution_options(synchronize_session=False)).rowcount or 0
        counts["unknown"] += _stale_sends(session, campaign_id, stale, now)
        session.commit()
        if heartbeat_at is not None and heartbeat_at > stall:
            continue
        due = session.scalar(select(exists().where(
            Message.campaign_id == campaign_id, Message.status == MessageStatus.PENDING, Message.claim_token.is_(None),
            Message.due_at.is_(None) | (Message.due_at <= now))))
        unfinished = session.scalar(select(exists().where(Message.campaign_id == campaign_id,
                                                          Message.status.in_(sending.REMAINING))))
        if due or (not unfinished and kind not in TRIGGERED_KINDS):  # an idle automation or flow: nothing to complete
            # Fresh job ids: the job of a killed worker still looks "started" in RQ until its timeout passes.
            tasks.enqueue_senders(campaign_id, tag=f"r{int(now.timestamp())}")  # nothing to send: a sender completes it
            counts["dispatched"] += 1
        elif unfinished:
            next_due = session.scalar(select(func.min(Message.due_at)).where(Message.campaign_id == campaign_id,
                                                                             Message.status == MessageStatus.PENDING))
            if next_due is not None:
                sending.wake_at(campaign_id, next_due)
    return counts


def _stale_sends(session: OrmSession, campaign_id: int, stale: dt.datetime, now: dt.datetime) -> int:
    """Rows "sending" since before `stale` lost their worker mid-call: "unknown", never sent again."""
    return session.execute(
        update(Message).where(Message.campaign_id == campaign_id, Message.status == MessageStatus.SENDING,
                              Message.updated_at <= stale)
        .values(status="unknown", error_code="worker-lost", updated_at=now,
                error_reason="the worker stopped during the send; it may have been sent")
        .execution_options(synchronize_session=False)).rowcount or 0
