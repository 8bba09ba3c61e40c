"""Jobs of automations: fire one shop's automations, and the periodic safety net that fires every shop's."""
from __future__ import annotations

from kinnekt.db import Session
from workers import job
from workers.jobs import register_recoverer


@job
def fire_automations(shop_id: int) -> int:
    """Queue the messages of the shop's automations for the segment entries since each one's cursor."""
    from kinnekt import defaults
    from kinnekt.automations.engine import fire, has_unread_entries
    session = Session()
    queued = fire(session, shop_id)
    # RQ refuses a job id that is running, so an entry logged while this job ran would wait for the
    # periodic scan: fire again while entries arrived meanwhile.
    for _ in range(defaults.AUTOMATION_FIRE_ROUNDS):
        if not has_unread_entries(session, shop_id):
            break
        queued += fire(session, shop_id)
    return queued


@job
def fire_all_automations() -> int:
    """The periodic scan: queue a fire of every shop with an automation switched on (a lost job is caught here)."""
    return requeue_automation_fires()


@register_recoverer
def requeue_automation_fires() -> int:
    """Queue a fire of every installed shop with an automation switched on; returns how many were queued."""
    from kinnekt.automations.engine import enqueue_fire, shops_with_automations
    shop_ids = shops_with_automations(Session())
    Session.commit()
    for shop_id in shop_ids:
        enqueue_fire(shop_id)
    return len(shop_ids)


@register_recoverer
def settle_automation_holds() -> int:
    """Messages held for a discount code whose fire died before Shopify answered: released or skipped."""
    from kinnekt.automations.engine import settle_stale_holds
    return settle_stale_holds(Session())
