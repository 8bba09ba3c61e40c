"""Jobs of automations: fire one shop's automations, and the periodic safety net that fires every shop's."""
from __future__ import annotations

from kinnekt import defaults
from kinnekt.automations import engine
from kinnekt.db import Session
from kinnekt.jobs import job, register_recoverer
from kinnekt.queue import get_queue


@job
def fire_automations(shop_id: int) -> int:
    """Queue the messages of the shop's automations for the segment entries since each one's cursor."""
    session = Session()
    queued = engine.fire(session, shop_id)
    # RQ refuses a job id that is running, so an entry logged while this job ran would wait for the
    # periodic scan: fire again while entries arrived meanwhile.
    for _ in range(defaults.AUTOMATION_FIRE_ROUNDS):
        if not engine.has_unread_entries(session, shop_id):
            break
        queued += engine.fire(session, shop_id)
    return queued


def enqueue_fire_automations(shop_id: int) -> None:
    """Queue the shop's fire job; one already waiting in the queue covers this request too."""
    get_queue().enqueue(fire_automations, shop_id, job_id=f"automations-fire-{shop_id}")


@job
def fire_all_automations() -> int:
    """The periodic scan: queue a fire of every shop with an automation switched on (a lost job is caught here)."""
    return requeue_automation_fires()


@register_recoverer
def requeue_automation_fires() -> int:
    """Queue a fire of every installed shop with an automation switched on; returns how many were queued."""
    shop_ids = engine.shops_with_automations(Session())
    Session.commit()
    for shop_id in shop_ids:
        engine.enqueue_fire(shop_id)
    return len(shop_ids)


@register_recoverer
def settle_automation_holds() -> int:
    """Messages held for a discount code whose fire died before Shopify answered: released or skipped."""
    return engine.settle_stale_holds(Session())
