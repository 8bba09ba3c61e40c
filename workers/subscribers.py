"""Old path of the subscriber import jobs, kept for one release (queued jobs name it): see
kinnekt/subscribers/tasks.py."""
from kinnekt.subscribers.tasks import import_subscribers, resume_subscriber_imports  # noqa: F401
