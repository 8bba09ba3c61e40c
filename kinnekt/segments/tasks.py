"""Jobs of segments' customer lifecycle: the daily run over every shop, and one shop's run (kinnekt.segments.lifecycle).

Jobs take ids and run in an app context (the `job` decorator; it moves to kinnekt/jobs.py).
"""
from __future__ import annotations

import dataclasses

from kinnekt.db import Session
from kinnekt.models import Shop
from kinnekt.queue import get_queue
from kinnekt.segments import lifecycle
from workers import job


@job
def update_lifecycle_stages() -> int:
    """The daily job: queue one lifecycle run per installed shop; returns how many were queued."""
    shop_ids = lifecycle.shops_to_update(Session)
    for shop_id in shop_ids:
        # The id keeps one run per shop in the queue when the runs fall behind.
        get_queue().enqueue(update_shop_lifecycle, shop_id, job_id=f"lifecycle-{shop_id}")
    return len(shop_ids)


@job
def update_shop_lifecycle(shop_id: int) -> dict | None:
    """Compute one shop's lifecycle stages and expected next orders, and queue the re-checks they cause."""
    shop = Session.get(Shop, shop_id)
    if shop is None:
        return None
    run = lifecycle.update_shop(Session, shop)
    return {**dataclasses.asdict(run), "rechecked": len(run.rechecked)}
