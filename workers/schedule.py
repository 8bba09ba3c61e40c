"""Old path of the periodic job list, kept for one release: see kinnekt/schedule.py."""
from kinnekt.schedule import periodic_jobs  # noqa: F401
