"""RQ jobs of subscribers: import a large CSV upload batch by batch, and resume imports whose job was lost."""
from __future__ import annotations

import time

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.models import SubscriberImport
from kinnekt.queue import stop_requested
from kinnekt.subscribers import importing
from workers import job
from workers.jobs import register_recoverer


@job
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


@register_recoverer
def resume_subscriber_imports() -> int:
    """Queue again the imports whose job was lost (queued ones, and running ones without progress for a while)."""
    ids = importing.imports_to_resume(Session)
    for import_id in ids:
        importing.queue_import(import_id)
    return len(ids)
