"""Old path of the segment jobs, kept for one release (queued jobs name it): see kinnekt/segments/tasks.py."""
from kinnekt.segments.tasks import (  # noqa: F401
    build_segment,
    recheck_pending,
    recheck_subscribers,
    requeue_pending_rechecks,
    requeue_unbuilt_segments,
    sweep_segments,
)
