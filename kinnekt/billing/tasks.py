"""Jobs of billing: charge a shop's accepted messages (bulk lane, beside sending), ask again for records left
unanswered or refused, and find them again after a crash."""
from __future__ import annotations

from kinnekt import signals
from kinnekt.billing import usage
from kinnekt.db import Session
from kinnekt.jobs import job, register_recoverer
from kinnekt.queue import get_queue


def usage_group(shop_id: int) -> str:
    """The queue's batch group of a shop's messages waiting to be charged."""
    return f"usage:{shop_id}"


@job(lane="bulk")
def record_usage(shop_id: int) -> int:
    """Charge the shop's accepted messages handed over by the senders, batch by batch, until none is left;
    then ask again for its records left unanswered. Returns how many records were made."""
    queue = get_queue()
    made = 0
    while ids := queue.take_batch(usage_group(shop_id), size=2000):
        made += len(usage.record_messages(Session, shop_id, ids))
    usage.retry(Session, shop_id)
    return made


def enqueue_record_usage(shop_id: int, message_ids: list[int]) -> None:
    """Hand accepted messages over to be charged; one run per shop takes whatever has piled up."""
    if message_ids:
        get_queue().enqueue_batched(record_usage, usage_group(shop_id), shop_id, message_ids)


@job(lane="bulk")
def retry_usage(shop_id: int, refused: bool = False) -> int:
    """Ask Shopify again for the shop's unanswered records (and refused ones, after the cap was raised)."""
    return usage.retry(Session, shop_id, refused=refused)


def enqueue_retry_usage(shop_id: int, *, refused: bool = False) -> None:
    """Queue `retry_usage` for the shop (one queued at a time per shop and kind)."""
    get_queue().enqueue(retry_usage, shop_id, refused, job_id=f"usage-{shop_id}-retry{'-refused' if refused else ''}")


@register_recoverer
def requeue_usage() -> int:
    """Queue a run for every shop whose messages wait to be charged (a run lost with its worker), and a retry for
    every shop with records left unanswered."""
    pending_batches = getattr(get_queue(), "pending_batches", None)
    groups = pending_batches("usage:") if pending_batches else []
    for group in groups:
        get_queue().enqueue(record_usage, int(group.split(":", 1)[1]))
    shops = usage.shops_with_unanswered(Session)
    for shop_id in shops:
        enqueue_retry_usage(shop_id)
    return len(groups) + len(shops)


@signals.messages_accepted.connect
def charge_accepted(session, *, shop_id: int, message_ids: list[int]) -> None:
    """A sender's batch was accepted by the provider: queue the charge of its messages."""
    enqueue_record_usage(shop_id, message_ids)
