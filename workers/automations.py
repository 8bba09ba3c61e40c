"""Old path of the automation jobs, kept for one release (queued jobs name it): see kinnekt/automations/tasks.py."""
from kinnekt.automations.tasks import (  # noqa: F401
    fire_all_automations,
    fire_automations,
    requeue_automation_fires,
    settle_automation_holds,
)
