"""Audience sync jobs: one link's sync with its retries, the periodic scan for links due, and the receivers that
queue syncs after a segment's build and after a customers/redact.

A sync holds its link (`sync_started_at`, claimed by one UPDATE) so two never run at once. Its outcome is written
on the link, which Settings shows: `active` with the figures, `retrying` with the error and when it runs again
(AUDIENCE_RETRY_BASE_SECONDS doubled per failure, capped, or later when the platform named a wait), or `failed`
(a refused token, a refused request, or too many failures in a row: shown; the next daily sync tries again). A
link whose segment was deleted is `stopped` and never synced again; a link or connection that was removed simply
has nothing left to sync: its queued jobs end at once, without an error.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession, object_session

from kinnekt import defaults, signals
from kinnekt.audiences import sync as audience_sync
from kinnekt.audiences.platform import AudienceClient, PlatformError
from kinnekt.db import Session, aware_utc, utcnow
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import AdConnection, AudienceLink, AudienceMember, Segment, Shop
from kinnekt.models.audience import AdPlatform, LinkStatus
from kinnekt.models.segment import BuildStatus
from kinnekt.queue import get_queue

log = logging.getLogger(__name__)

LINKS = AudienceLink.__table__
SYNCABLE = (LinkStatus.ACTIVE, LinkStatus.RETRYING, LinkStatus.FAILED)


def sync_job_id(link_id: int) -> str:
    """The id of a link's sync job queued now (one at a time)."""
    return f"audience-sync-{int(link_id)}"


def enqueue_sync_audience(link_id: int, *, delay: float | None = None, continuation: bool = False) -> None:
    """Queue a sync of the link now, or in `delay` seconds (a retry, or waiting for a segment build); a
    `continuation` (the next slice of a long sync, queued by the running job) has no job id, as that job's id
    is still taken while it ends."""
    queue = get_queue()
    if continuation:
        queue.enqueue(sync_audience, int(link_id))
    elif delay:
        queue.enqueue_in(dt.timedelta(seconds=delay), sync_audience, int(link_id),
                         job_id=f"{sync_job_id(link_id)}-later")
    else:
        queue.enqueue(sync_audience, int(link_id), job_id=sync_job_id(link_id))


@job(lane="bulk")
def sync_audience(link_id: int) -> str:
    """Sync one audience link (see run_sync); returns what happened."""
    return run_sync(Session, link_id)


def client_for(connection: AdConnection) -> AudienceClient:
    """The platform client of a connection's ad account, with its token decrypted; Google's access token is
    refreshed (and saved) when it expires within five minutes (PlatformError "auth" when Google refuses)."""
    from kinnekt.audiences import connections
    if connection.platform == AdPlatform.META:
        from kinnekt.audiences import meta
        return meta.MetaAudiences(meta.Settings.from_app(), connections.access_token(connection) or "",
                                  connection.account_id or "")
    from kinnekt.audiences import google
    settings = google.Settings.from_app()
    token = connections.access_token(connection)
    expires = connection.access_token_expires_at
    if not token or expires is None or expires < utcnow() + dt.timedelta(minutes=5):
        # Google's access tokens last an hour: a fresh one for the sync, saved encrypted.
        stored = connections.refresh_token(connection)
        if not stored:
            raise PlatformError("auth", "Google Ads has no refresh token: connect again")
        grant = google.refresh(settings, stored)
        box = connections.cipher()
        connection.access_token_enc = box.encrypt(grant.access_token)
        connection.access_token_expires_at = grant.expires_at
        if grant.refresh_token:
            connection.refresh_token_enc = box.encrypt(grant.refresh_token)
        object_session(connection).commit()
        token = grant.access_token
    return google.GoogleAudiences(settings, token, connection.account_id or "")


def _claim(session: OrmSession, link_id: int, now: dt.datetime) -> bool:
    stale = now - dt.timedelta(seconds=defaults.AUDIENCE_SYNC_STALE_SECONDS)
    claimed = session.execute(update(LINKS).where(
        LINKS.c.id == link_id, or_(LINKS.c.sync_started_at.is_(None), LINKS.c.sync_started_at < stale))
        .values(sync_started_at=now)).rowcount
    session.commit()
    return bool(claimed)


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after `attempts` failures in a row (at least what the platform asked)."""
    backoff = min(defaults.AUDIENCE_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1),
                  defaults.AUDIENCE_RETRY_MAX_SECONDS)
    return max(backoff, retry_after or 0.0)


def _stop(session: OrmSession, link: AudienceLink, why: str) -> None:
    session.query(AudienceMember).filter(AudienceMember.link_id == link.id).delete(synchronize_session=False)
    link.status, link.last_error, link.next_attempt_at, link.member_count = LinkStatus.STOPPED, why, None, 0
    link.sync_started_at = None
    session.commit()


def _failed(session: OrmSession, link_id: int, exc: PlatformError, now: dt.datetime) -> str:
    session.rollback()
    link = session.get(AudienceLink, link_id)
    if link is None:
        return "gone"
    link.sync_started_at = None
    link.last_error = exc.message[:1000]
    if exc.kind == "auth":
        connection = session.get(AdConnection, link.connection_id)
        if connection is not None:
            connection.error = exc.message[:1000]
    if exc.retryable and link.attempts + 1 < defaults.AUDIENCE_MAX_ATTEMPTS:
        link.attempts += 1
        delay = retry_delay(link.attempts, exc.retry_after)
        link.status, link.next_attempt_at = LinkStatus.RETRYING, now + dt.timedelta(seconds=delay)
        session.commit()
        enqueue_sync_audience(link_id, delay=delay)
        return "retrying"
    link.attempts += 1
    link.status, link.next_attempt_at = LinkStatus.FAILED, None
    session.commit()
    return "failed"


def run_sync(session: OrmSession, link_id: int, *, now: dt.datetime | None = None) -> str:
    """Sync one link if it is still there, active and not held by another sync; write the outcome on it.

    Returns "synced", "retrying", "failed", "stopped", "waiting" (its segment is being built: queued again),
    "busy" (another sync holds it), "no_account", or "gone" (the link or its connection was removed)."""
    now = aware_utc(now)
    link = session.get(AudienceLink, link_id)
    if link is None:
        return "gone"
    if link.status == LinkStatus.STOPPED:
        return "stopped"
    connection = session.get(AdConnection, link.connection_id)
    if connection is None:
        return "gone"
    segment = session.get(Segment, link.segment_id) if link.segment_id is not None else None
    if segment is None:
        _stop(session, link, "The segment was deleted: the audience keeps the people it had and is no longer "
                             "synced.")
        return "stopped"
    if not connection.account_id or not connection.access_token_enc:
        return "no_account"
    if segment.build_status in BuildStatus.ACTIVE:
        enqueue_sync_audience(link_id, delay=defaults.AUDIENCE_BUILD_WAIT_SECONDS)
        return "waiting"
    if not _claim(session, link_id, now):
        return "busy"
    session.refresh(link)
    try:
        client = client_for(connection)
        if link.audience_id is None:
            link.audience_id = client.create_audience(
                link.audience_name, f"Kept in sync by Kinnekt with the segment {segment.name}")
            session.commit()
        result = audience_sync.sync(session, link, client, audience_id=link.audience_id, segment_id=segment.id,
                                    allow_emails=connection.allow_emails,
                                    deadline=time.monotonic() + defaults.AUDIENCE_SYNC_SLICE_SECONDS)
    except audience_sync.SliceEnded:
        # Within a job's time limit: what was sent is committed, a new job goes on from there.
        _release(session, link_id)
        enqueue_sync_audience(link_id, continuation=True)
        return "continued"
    except PlatformError as exc:
        log.warning("audience link %s: sync failed (%s): %s", link_id, exc.kind, exc.message)
        return _failed(session, link_id, exc, now)
    except Exception as exc:
        # The link (or its connection) removed while the sync ran, or anything unforeseen (a job timeout): what
        # was sent stays recorded, and the link retries with backoff like after a passing failure.
        session.rollback()
        if session.get(AudienceLink, link_id) is None:
            return "gone"
        if not isinstance(exc, IntegrityError):
            log.exception("audience link %s: sync failed", link_id)
        return _failed(session, link_id, PlatformError("transient", f"The sync stopped unexpectedly "
                                                                    f"({exc.__class__.__name__}); it will try again"),
                       now)
    link = session.get(AudienceLink, link_id)
    if link is None:
        return "gone"
    link.status, link.attempts, link.next_attempt_at, link.sync_started_at = LinkStatus.ACTIVE, 0, None, None
    link.last_synced_at = now
    link.last_added, link.last_removed, link.last_invalid = result.added, result.removed, result.invalid
    link.last_error = (f"{result.invalid} of the people sent were refused by the platform as invalid"
                       + (f" (for example {', '.join(result.samples[:2])})" if result.samples else "")
                       if result.invalid else None)
    if connection.error and session.get(AdConnection, connection.id) is not None:
        connection.error = None
    session.commit()
    return "synced"


def _release(session: OrmSession, link_id: int) -> None:
    session.execute(update(LINKS).where(LINKS.c.id == link_id).values(sync_started_at=None))
    session.commit()


# ---------------------------------------------------------------------------------------------- periodic

def due_links(session: OrmSession, *, now: dt.datetime | None = None) -> list[int]:
    """Links to sync now: those not synced for AUDIENCE_SYNC_INTERVAL_SECONDS (failed ones too, once a day),
    and retries whose delayed job is overdue (lost with a worker), of installed shops with an account chosen."""
    now = aware_utc(now)
    day_ago = now - dt.timedelta(seconds=defaults.AUDIENCE_SYNC_INTERVAL_SECONDS)
    overdue = now - dt.timedelta(seconds=defaults.AUDIENCE_SCAN_INTERVAL_SECONDS)
    return list(session.scalars(
        select(AudienceLink.id)
        .join(AdConnection, AdConnection.id == AudienceLink.connection_id)
        .join(Shop, Shop.id == AudienceLink.shop_id)
        .where(Shop.uninstalled_at.is_(None), AdConnection.account_id.is_not(None),
               or_(AudienceLink.segment_id.is_(None) & (AudienceLink.status != LinkStatus.STOPPED),
                   AudienceLink.status.in_((LinkStatus.ACTIVE, LinkStatus.FAILED))
                   & or_(AudienceLink.last_synced_at.is_(None), AudienceLink.last_synced_at < day_ago),
                   (AudienceLink.status == LinkStatus.RETRYING) & (AudienceLink.next_attempt_at < overdue)))
        .order_by(AudienceLink.id).execution_options(all_shops=True)))


@job
def sync_due_audiences() -> int:
    """Queue the sync of every link due (daily syncs, lost retries); returns how many were queued."""
    return queue_due_syncs()


@register_recoverer
def queue_due_syncs() -> int:
    """Queue the sync of every link due (also run at start-up)."""
    ids = due_links(Session)
    for link_id in ids:
        enqueue_sync_audience(link_id)
    return len(ids)


# ---------------------------------------------------------------------------------------------- signals

def links_of_segment(session: OrmSession, segment_id: int) -> list[int]:
    """The syncable links of a segment."""
    return list(session.scalars(select(AudienceLink.id).where(
        AudienceLink.segment_id == segment_id, AudienceLink.status.in_(SYNCABLE))
        .execution_options(all_shops=True)))


@signals.segment_rebuilt.connect
def _after_build(session, *, segment_id: int, cause: str, changed: bool, **_details) -> None:
    """A segment's build committed: after an edit, or any build that changed its members, sync its audiences."""
    if cause in ("edit", "edit_trigger") or changed:
        for link_id in links_of_segment(session, segment_id):
            enqueue_sync_audience(link_id)


@signals.subscribers_redacted.connect
def _after_redaction(session, *, shop_id: int, **_details) -> None:
    """A customers/redact deleted subscribers: sync every audience of the shop that still holds them."""
    detached = exists().where(AudienceMember.link_id == AudienceLink.id, AudienceMember.subscriber_id.is_(None))
    for link_id in session.scalars(select(AudienceLink.id).where(AudienceLink.shop_id == shop_id, detached)
                                   .execution_options(all_shops=True)):
        enqueue_sync_audience(link_id)
