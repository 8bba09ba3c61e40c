"""Flows: multi-step automations (a trigger, then waits, sends and conditions), one run per person per entry."""
