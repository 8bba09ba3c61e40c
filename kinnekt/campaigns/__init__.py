"""Campaigns: lifecycle, audience snapshot, sending, composer, links and stats (issue 6)."""
