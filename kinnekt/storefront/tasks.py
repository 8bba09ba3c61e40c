"""Jobs of storefront events: the daily retention sweep."""
from __future__ import annotations

from kinnekt.db import Session
from kinnekt.jobs import job
from kinnekt.queue import get_queue
from kinnekt.storefront import retention


@job(lane="bulk")
def prune_storefront_events() -> int:
    """Delete storefront events older than each shop's retention, in bounded batches; returns how many."""
    return retention.prune(Session())


def enqueue_prune_storefront_events() -> None:
    """Queue the retention sweep (one at a time)."""
    get_queue().enqueue(prune_storefront_events, job_id="storefront-prune")
