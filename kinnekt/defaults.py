"""Named tuning knobs, each with the reason for its value."""

WEBHOOK_RECOVERY_GRACE_SECONDS = 60
"""A stored webhook event younger than this is still on its way through the queue; recovery leaves it alone."""

WEBHOOK_MAX_ATTEMPTS = 5
"""After this many failed processing attempts an event is left for a person to look at."""

WEBHOOK_RETENTION_DAYS = 30
"""Processed webhook events are kept this long for support, then pruned."""

RECOVERY_INTERVAL_SECONDS = 60
"""How often due work (scheduled campaigns, stuck events) is looked for, besides start-up."""

PRUNE_INTERVAL_SECONDS = 3600
"""How often housekeeping runs."""

PAGE_SIZE = 50
"""Rows per page in merchant lists."""
