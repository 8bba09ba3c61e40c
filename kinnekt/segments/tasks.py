"""Jobs of segments: build one segment, re-check changed subscribers, the periodic time sweep, and the customer
lifecycle's daily run over every shop with one shop's run (kinnekt.segments.lifecycle)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time

from sqlalchemy import select

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import Segment, Shop
from kinnekt.models.segment import BuildStatus
from kinnekt.queue import get_queue
from kinnekt.segments import lifecycle, membership


@job(lane="bulk")
def build_segment(segment_id: int, cause: str = "build") -> dict | None:
    """Rebuild one segment's members (after create or edit, or for the sweep); returns what changed."""
    result = membership.build(Session, segment_id, cause=cause, if_owed=cause in membership.REQUESTED_CAUSES)
    return dataclasses.asdict(result) if result is not None else None


def enqueue_build_segment(segment_id: int, cause: str = "build", *, once_as: str | None = None) -> None:
    """Queue a build of the segment. Each request queues its own job unless `once_as` ("sweep", "recover") names
    a kind of build kept once per segment in the queue."""
    job_id = None if once_as is None else f"segment-{once_as}-{segment_id}"
    get_queue().enqueue(build_segment, segment_id, cause, job_id=job_id)


@job
def recheck_subscribers(shop_id: int, subscriber_ids: list[int]) -> int:
    """Re-check these subscribers against every segment of their shop; returns how many memberships changed."""
    return len(membership.recheck(Session, shop_id, subscriber_ids))


@job
def recheck_pending(shop_id: int) -> int:
    """Re-check every subscriber of the shop whose data changed since the last run, batch by batch, until none is
    left or RECHECK_RUN_SECONDS have passed (then a successor run takes the rest: while changes keep coming, one
    run must not hold its worker, or outlive the job timeout); returns how many memberships changed."""
    queue = get_queue()
    changed = 0
    deadline = time.monotonic() + defaults.RECHECK_RUN_SECONDS
    while ids := queue.take_batch(membership.recheck_group(shop_id)):
        changed += len(membership.recheck(Session, shop_id, ids))
        if time.monotonic() >= deadline:
            queue.enqueue(recheck_pending, shop_id)  # the group's run mark stays set: this is its run now
            break
    return changed


def enqueue_recheck(shop_id: int, subscriber_ids: list[int]) -> None:
    """Add these subscribers to the shop's pending re-checks; one run per shop at a time takes all that piled
    up."""
    get_queue().enqueue_batched(recheck_pending, membership.recheck_group(shop_id), shop_id, subscriber_ids)


@job
def recheck_browsing(shop_id: int) -> int:
    """Re-check the subscribers with new storefront events against the shop's segments with browsing rules, each
    subscriber once per run (one seen again is handed to the next run, which starts STOREFRONT_RECHECK_SECONDS
    later at the earliest); returns how many memberships changed."""
    queue = get_queue()
    group = membership.browsing_group(shop_id)
    segment_ids = membership.browsing_segments_cached(Session, shop_id)
    changed, seen, again = 0, set(), set()
    deadline = time.monotonic() + defaults.RECHECK_RUN_SECONDS
    while ids := queue.take_batch(group):
        fresh = [i for i in ids if i not in seen]
        again.update(i for i in ids if i in seen)
        seen.update(fresh)
        if fresh and segment_ids:
            changed += len(membership.recheck(Session, shop_id, fresh, segment_ids=segment_ids))
        if time.monotonic() >= deadline:
            queue.enqueue_in(dt.timedelta(seconds=defaults.STOREFRONT_RECHECK_SECONDS), recheck_browsing, shop_id)
            break  # the group's run mark stays set: the delayed successor is its run now
    if again:
        enqueue_recheck_browsing(shop_id, sorted(again))
    return changed


def enqueue_recheck_browsing(shop_id: int, subscriber_ids: list[int]) -> None:
    """Add these subscribers to the shop's pending browsing re-checks; a run is queued STOREFRONT_RECHECK_SECONDS
    ahead unless one is queued or running, so a burst of events costs one run, and a subscriber is re-checked at
    most once in that time."""
    get_queue().enqueue_batched(recheck_browsing, membership.browsing_group(shop_id), shop_id, subscriber_ids,
                                delay=defaults.STOREFRONT_RECHECK_SECONDS)


@register_recoverer
def requeue_pending_rechecks() -> int:
    """Queue a run for every shop with re-checks pending (a run lost with its worker leaves its mark for a while)."""
    pending_batches = getattr(get_queue(), "pending_batches", None)  # a test's stand-in queue has none
    groups = pending_batches("recheck:") if pending_batches else []
    for group in groups:
        get_queue().enqueue(recheck_pending, int(group.split(":", 1)[1]))
    browsing = pending_batches("browsing:") if pending_batches else []
    for group in browsing:
        get_queue().enqueue(recheck_browsing, int(group.split(":", 1)[1]))
    return len(groups) + len(browsing)


@job
def sweep_segments() -> int:
    """The periodic sweep: queue a rebuild of every segment with relative-time rules; returns how many."""
    segment_ids = membership.segments_to_sweep(Session)
    for segment_id in segment_ids:
        # The id keeps one sweep build per segment in the queue when a sweep falls behind.
        enqueue_build_segment(segment_id, "sweep", once_as="sweep")
    requeue_unbuilt_segments()
    return len(segment_ids)


@register_recoverer
def requeue_unbuilt_segments() -> int:
    """Queue again the builds that were requested but never finished (a lost in-process queue, a dead worker)."""
    segment_ids = Session.scalars(select(Segment.id).where(Segment.build_status.in_(BuildStatus.ACTIVE))
                                  .order_by(Segment.id)).all()
    for segment_id in segment_ids:
        enqueue_build_segment(segment_id, "build", once_as="recover")
    return len(segment_ids)


@job
def update_lifecycle_stages() -> int:
    """The daily job: queue one lifecycle run per installed shop; returns how many were queued."""
    shop_ids = lifecycle.shops_to_update(Session)
    for shop_id in shop_ids:
        enqueue_update_shop_lifecycle(shop_id)
    return len(shop_ids)


@job(lane="bulk")
def update_shop_lifecycle(shop_id: int) -> dict | None:
    """Compute one shop's lifecycle stages and expected next orders, and queue the re-checks they cause."""
    shop = Session.get(Shop, shop_id)
    if shop is None:
        return None
    run = lifecycle.update_shop(Session, shop)
    return {**dataclasses.asdict(run), "rechecked": len(run.rechecked)}


def enqueue_update_shop_lifecycle(shop_id: int) -> None:
    """Queue one shop's lifecycle run; the id keeps one run per shop in the queue when the runs fall behind."""
    get_queue().enqueue(update_shop_lifecycle, shop_id, job_id=f"lifecycle-{shop_id}")
