"""Segments follow what subscribers do on the storefront: the receiver of `storefront_activity` queues re-checks of
those subscribers against the shop's segments with browsing rules (kinnekt.segments.tasks.recheck_browsing).

The pixel ingest announces the signal once per committed batch of events; the re-checks pile up per shop and run
at most every STOREFRONT_RECHECK_SECONDS, so a shopper's burst of page views costs one re-check. A shop without a
browsing segment queues nothing. Which segments have browsing rules is remembered per process until a definition of
the shop changes (membership.browsing_segments_cached): the question costs one Redis round trip, not a query.
Rules that move with time (`within` a period, `last_visit`) are also rebuilt by the hourly time sweep, as every
relative-time segment is (kinnekt.segments.membership.sweep).
"""
from __future__ import annotations

from typing import Iterable

from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.segments import membership, tasks


@signals.storefront_activity.connect
def queue_browsing_rechecks(session: OrmSession, *, shop_id: int, subscriber_ids: Iterable[int]) -> int:
    """Queue the re-check of these subscribers against the shop's browsing segments; returns how many were queued
    (0 when the shop has no such segment)."""
    ids = sorted({int(i) for i in subscriber_ids if i is not None})
    if not ids or not membership.browsing_segments_cached(session, shop_id):
        return 0
    tasks.enqueue_recheck_browsing(shop_id, ids)
    return len(ids)
