"""Old path of the attribution recompute job, kept for one release (queued jobs name it): see
kinnekt/campaigns/tasks.py."""
from kinnekt.campaigns.tasks import recompute_attribution  # noqa: F401
