"""Jobs of subscribers: handle inbound texts, import a large CSV upload batch by batch, prune sign-up attempts and
uploads never mapped, and recover texts and imports whose job was lost."""
from __future__ import annotations

import time

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.jobs import job, register_recoverer
from kinnekt.models import SubscriberImport
from kinnekt.queue import get_queue, stop_requested
from kinnekt.subscribers import importing, inbound, signup_limits


@job(lane="urgent")
def process_inbound(inbound_id: int) -> str:
    """Handle one stored inbound text (STOP, HELP, START, keyword, other); returns its intent."""
    return inbound.process(Session(), inbound_id)


def enqueue_process_inbound(inbound_id: int) -> None:
    """Queue the handling of a stored inbound text (one job per text)."""
    get_queue().enqueue(process_inbound, inbound_id, job_id=f"sms-inbound-{inbound_id}")


@register_recoverer
def requeue_inbound_sms() -> int:
    """Queue inbound texts stored but not handled, and handle long texts whose missing parts never came."""
    ids = inbound.due_for_recovery(Session())
    for inbound_id in ids:
        inbound.queue_handling(inbound_id)
    return len(ids) + inbound.assemble_overdue(Session())


@job(lane="bulk")
def import_subscribers(import_id: int) -> str:
    """Import an upload batch by batch, recording progress on its SubscriberImport row (the page polls it).

    After defaults.SUBSCRIBER_IMPORT_JOB_SECONDS, or when the worker is asked to stop, the job hands the rest to
    a successor job between two batches (RQ's job timeout is 180 s; other bulk work gets its turn meanwhile).
    """
    deadline = time.monotonic() + defaults.SUBSCRIBER_IMPORT_JOB_SECONDS
    try:
        status = importing.import_batches(Session, import_id,
                                          should_stop=lambda: stop_requested() or time.monotonic() > deadline)
    except Exception as exc:
        importing.fail_import(Session, import_id, f"The import stopped on an error ({type(exc).__name__}).")
        raise
    if status == "paused":
        upload = Session.get(SubscriberImport, import_id)
        importing.queue_import(import_id, after_row=upload.processed_rows)
    return status


def enqueue_import_subscribers(import_id: int, *, after_row: int | None = None) -> None:
    """Queue the job that imports this upload: one queued job per import, or the successor of a run that
    stopped after `after_row` rows (a running job's id cannot be queued again)."""
    suffix = "" if after_row is None else f"-after-{after_row}"
    get_queue().enqueue(import_subscribers, import_id, job_id=f"subscriber-import-{import_id}{suffix}")


@register_recoverer
def resume_subscriber_imports() -> int:
    """Queue again the imports whose job was lost (queued ones, and running ones without progress for a while)."""
    ids = importing.imports_to_resume(Session)
    for import_id in ids:
        importing.queue_import(import_id)
    return len(ids)


@job
def prune_signup_attempts() -> int:
    """Delete sign-up attempts older than the popup's limits look back; returns how many."""
    return signup_limits.prune(Session())


@job
def prune_import_drafts() -> int:
    """Delete uploads left waiting for their column mapping past their lifetime; returns how many."""
    return importing.prune_drafts(Session())
