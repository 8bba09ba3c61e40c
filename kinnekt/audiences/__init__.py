"""Segments kept in sync with ad platforms' audiences (Meta custom audiences, Google Ads Customer Match).

- `platform.py`: what every platform client offers the sync (errors, batch results, the HTTP client);
- `meta.py`, `google.py`: each platform's OAuth and audience API, over its documented REST shapes (Google's token
  refresh before a sync is in `tasks.client_for`);
- `connections.py`: connecting an ad account (OAuth state bound to the shop and the browser), choosing the
  account, the email setting, linking segments, disconnecting;
- `sync.py`: one audience's sync by difference with what was sent before (`AudienceMember` rows);
- `tasks.py`: the sync job with its retries, the periodic scan, and the signal receivers (segment edits,
  customers/redact).

See docs/audiences.md.
"""
