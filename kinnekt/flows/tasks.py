"""Jobs of flows: one shop's entries, exits and due runs, and the periodic scan that runs every shop's."""
from __future__ import annotations

import time

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.jobs import job, register_recoverer
from kinnekt.queue import get_queue


@job
def run_flows(shop_id: int) -> dict[str, int]:
    """Start the shop's new runs, end those whose exit condition holds, and advance its due runs batch by batch for
    up to FLOW_ADVANCE_BUDGET_SECONDS (a successor job takes the rest); returns what was done."""
    from kinnekt.flows import engine
    session = Session()
    done = {"entered": engine.enter(session, shop_id), "advanced": 0, "messages": 0}
    deadline = time.monotonic() + defaults.FLOW_ADVANCE_BUDGET_SECONDS
    while True:
        batch = engine.advance(session, shop_id)
        done["advanced"] += batch.runs
        done["messages"] += batch.sent
        if not batch.runs:
            break
        if time.monotonic() >= deadline:
            enqueue_run_flows(shop_id, successor=True)
            break
    return done


def enqueue_run_flows(shop_id: int, *, successor: bool = False) -> None:
    """Queue the shop's flows job; one already waiting covers this request too (a successor has an id of its own,
    RQ refusing the id of the job that is running)."""
    suffix = "-next" if successor else ""
    get_queue().enqueue(run_flows, shop_id, job_id=f"flows-run-{shop_id}{suffix}")


@job
def exit_flows(shop_id: int) -> int:
    """Apply the shop's flows' exit conditions to the waiting runs of the subscribers whose data changed (piled up
    by `enqueue_exit_flows` since the last run), batch by batch until none are left; returns how many runs left."""
    from kinnekt.flows import engine
    queue, ended = get_queue(), 0
    while ids := queue.take_batch(exits_group(shop_id)):
        ended += engine.exit_subscribers(Session(), shop_id, ids)
    return ended


def exits_group(shop_id: int) -> str:
    """The batched group in which a shop's changed subscribers wait for the exits job."""
    return f"flow-exits:{shop_id}"


def enqueue_exit_flows(shop_id: int, subscriber_ids: list[int]) -> None:
    """Add these subscribers to the shop's pending exit checks; one exits job is queued unless one is queued or
    running (that one takes them too)."""
    get_queue().enqueue_batched(exit_flows, exits_group(shop_id), shop_id, subscriber_ids)


@job
def run_all_flows() -> int:
    """The periodic scan: queue the flows job of every shop with a flow on (entries, exits, runs come due)."""
    return requeue_flow_runs()


@register_recoverer
def requeue_flow_runs() -> int:
    """Queue the flows job of every installed shop with a flow switched on; returns how many were queued."""
    from kinnekt.flows import engine
    shop_ids = engine.shops_with_flows_on(Session())
    for shop_id in shop_ids:
        enqueue_run_flows(shop_id)
    pending_batches = getattr(get_queue(), "pending_batches", None)  # a test's stand-in queue has none
    for group in (pending_batches(exits_group("")) if pending_batches else []):  # exits a lost run left pending
        get_queue().enqueue(exit_flows, int(group.split(":", 1)[1]))
    return len(shop_ids)
