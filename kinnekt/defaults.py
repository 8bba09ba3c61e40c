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

STATISTICS_INTERVAL_SECONDS = 3600
"""How often SQLite's planner statistics are gathered again (kinnekt/db_statistics.py); about 20 ms for the demo
store, and bounded by SQLITE_ANALYSIS_LIMIT for a large database. PostgreSQL's autovacuum does it there."""

SQLITE_ANALYSIS_LIMIT = 10000
"""SQLite's ANALYZE reads at most about this many rows of each index (PRAGMA analysis_limit): exact statistics
for a store of the demo's size, estimates from a bounded read for a large one, so that a refresh holding the
write lock never takes long."""

SUBSCRIBER_IMPORT_ANALYZE_ROWS = 500
"""A subscriber import made inside the request gathers statistics of the subscriber tables afterwards when it
added at least this many rows (fewer do not change the planner's choices; the periodic refresh catches up)."""

PAGE_SIZE = 50
"""Rows per page in merchant lists."""

# --- Shopify (kinnekt/shopify) ---

SHOPIFY_CONNECT_TIMEOUT_SECONDS = 5.0
"""Connecting to Shopify takes well under a second; longer means a network problem worth retrying."""

SHOPIFY_READ_TIMEOUT_SECONDS = 30.0
"""A GraphQL Admin call that has not answered in this long is treated as failed (and retried)."""

SHOPIFY_MAX_RETRIES = 4
"""Retries of one Admin call after a 5xx, a 429, a THROTTLED reply or a network error, before giving up."""

SHOPIFY_RETRY_BASE_SECONDS = 0.5
"""First backoff after a 5xx or network error; doubled on each retry (with jitter), capped below."""

SHOPIFY_RETRY_MAX_SECONDS = 20.0
"""Longest single wait between retries, so a job never sleeps for minutes on one call."""

SHOPIFY_THROTTLE_RESERVE_POINTS = 50
"""Before a call, wait until the cost bucket (as last reported) holds at least this many points, so
background jobs leave room for other calls of the same app and shop."""

TOKEN_ENDPOINT_TIMEOUT_SECONDS = 10.0
"""The token endpoint answers in well under a second; token exchange runs inside a page load, so wait less."""

TOKEN_REFRESH_AHEAD_SECONDS = 300
"""Refresh an expiring offline access token this long before it expires (tokens live 60 minutes)."""

TOKEN_LOCK_TIMEOUT_SECONDS = 30
"""How long a per-shop token refresh may hold its lock, and how long others wait for it."""

OAUTH_TIMESTAMP_TOLERANCE_SECONDS = 90
"""An OAuth install/callback request whose signed timestamp is further off than this is refused (as
Shopify's own libraries do), so a captured callback URL cannot be replayed later."""

OAUTH_STATE_MAX_AGE_SECONDS = 600
"""The state nonce of an authorization-code install is valid this long."""

BULK_POLL_INTERVAL_SECONDS = 20
"""How often a running bulk sync is polled when the bulk_operations/finish webhook has not arrived."""

BULK_START_RETRY_SECONDS = 60
"""Wait before starting a bulk query again when Shopify says too many are running."""

BULK_IMPORT_BATCH_SIZE = 200
"""Rows upserted (and committed) per batch while importing a bulk result file; an import's peak memory grows
with this (about 20 kB per order with its line items), never with the size of the file."""

RECONCILE_INTERVAL_SECONDS = 900
"""How often each shop is asked for customers, orders and products changed since the last run, so a
webhook Shopify never delivered does not mean lost data."""

RECONCILE_OVERLAP_SECONDS = 300
"""Reconciliation looks back this much further than its last run: clocks differ and changes commit late."""

RECONCILE_PAGE_SIZE = 100
"""Objects per page in reconciliation queries (cost ≈ page size plus nested connections)."""

CATALOG_SEARCH_LIMIT = 20
"""Results shown by the product / collection picker search."""

DISCOUNT_CODES_PER_CALL = 250
"""discountRedeemCodeBulkAdd accepts at most 250 codes per call."""

DISCOUNT_BULK_POLL_SECONDS = 1.0
"""Wait between polls of an asynchronous discount code import."""

DISCOUNT_BULK_MAX_POLLS = 120
"""Give up waiting for a discount code import after this many polls (it stays running at Shopify)."""

SEGMENT_SWEEP_INTERVAL_SECONDS = 3600
"""How often segments with relative-time rules are rebuilt: their rules move by whole days, so an hour
keeps them at most an hour behind without rebuilding every shop's segments all day long."""

RECHECK_RUN_SECONDS = 3.0
"""A run of a shop's piled-up re-checks hands the rest to a successor after this long: under a steady stream of
webhooks the pile never empties, and one job must neither hold a worker nor reach RQ's job timeout."""

STOREFRONT_RECHECK_SECONDS = 5.0
"""Storefront events re-check their subscribers' browsing segments in runs at least this far apart: a shopper's
burst of page views costs one re-check, and segments follow browsing within seconds."""

SEGMENT_RECHECK_CHUNK = 500
"""Subscriber ids per re-check query; keeps the bound parameters of one statement far below the limits."""

SEGMENT_RECHECK_SEGMENTS_PER_QUERY = 50
"""Segments evaluated as the columns of one re-check query, so a shop with many keeps each statement small."""

SEGMENT_RECHECK_CACHE_SHOPS = 256
"""Shops whose compiled time-independent segment rules a process keeps, so a re-check skips recompiling them."""

SEGMENT_EXPORT_CHUNK = 2000
"""Rows fetched per round trip (yield_per) while streaming a segment's members as CSV."""

LIFECYCLE_INTERVAL_SECONDS = 86400
"""How often every shop's customers get their lifecycle stage again: stages move with weeks of recency, so once a
day keeps them current without re-reading every customer's orders all day long."""

LIFECYCLE_MIN_CUSTOMERS = 50
"""Customers with a counted order a shop needs before stages are scored against its own customers (quintiles):
with fewer, a fifth of them is a handful of people, so the fixed thresholds below are used instead."""

LIFECYCLE_RECENCY_DAYS = (30, 90, 180, 365)
"""Fixed thresholds (small shops): days since the last order at or under which the recency score is 5, 4, 3, 2
(more than the last: 1). A season, a quarter, half a year and a year are how merchants speak of lapsed buyers."""

LIFECYCLE_FREQUENCY_ORDERS = (2, 3, 4, 6)
"""Fixed thresholds (small shops): counted orders from which the frequency score is 2, 3, 4, 5 (one order: 1)."""

LIFECYCLE_UPDATE_CHUNK = 500
"""Customers written per statement (and re-checks queued per call) by the lifecycle job."""

STATIC_LIST_MAX_BYTES = 5 * 1024 * 1024
"""Largest CSV file accepted for a static list (a phone per line: some 300,000 numbers)."""

STATIC_LIST_MAX_ROWS = 100_000
"""Most rows in one static-list CSV, so an upload is checked and saved inside one web request."""

SUBSCRIBER_IMPORT_INLINE_ROWS = 2_000
"""A subscriber CSV of up to this many rows is imported inside the upload's request (a few seconds: each number
is looked up for its country, carrier and time zone). A larger one runs as a job with a progress bar: 100,000
rows take a minute or more, past any web server's timeout."""

SUBSCRIBER_IMPORT_MAX_COLUMNS = 60
"""Most columns a subscriber CSV may have: the mapping step shows each with a choice (phone, names, email, every
profile property, a new one, ignore); a shop has at most 52 properties, so 60 leaves room for a few extra ones."""

SUBSCRIBER_IMPORT_PREVIEW_ROWS = 5
"""Rows the mapping step shows as they would be stored."""

SUBSCRIBER_IMPORT_CHECK_ROWS = 2_000
"""Rows the mapping step checks for values that do not fit their column (each number is parsed for its country,
about 0.1 ms): the whole of a file imported inline, the start of a larger one (the page says so)."""

SUBSCRIBER_IMPORT_DRAFTS = 3
"""Uploads a shop may keep waiting for their column mapping (each up to STATIC_LIST_MAX_BYTES); a new upload
drops the oldest beyond this, and any older than SUBSCRIBER_IMPORT_DRAFT_HOURS."""

SUBSCRIBER_IMPORT_DRAFT_HOURS = 24
"""An upload whose mapping was not confirmed within this many hours is dropped (the merchant uploads it again): at
the shop's next upload, or by the periodic prune (subscribers.tasks.prune_import_drafts)."""

SUBSCRIBER_IMPORT_BATCH_ROWS = 500
"""Rows an import job reads, saves and commits at a time with its progress (the bar moves every second or so);
a job cut short loses at most one batch of work."""

SUBSCRIBER_IMPORT_JOB_SECONDS = 60
"""An import job hands the rest of its file to a successor job after this long (RQ's job timeout is 180 s)."""

SUBSCRIBER_IMPORT_STALE_SECONDS = 120
"""A running subscriber import that has recorded no progress for this long lost its worker; recovery resumes it."""

# --- SMS (kinnekt/sms, kinnekt/subscribers) ---

SMS_HTTP_TIMEOUT_SECONDS = 15
"""Vonage answers a send in well under a second; a send without an answer after this is an unknown outcome."""

SMS_RATE_WINDOW_MARGIN_MS = 25
"""Grants are spaced (1 s + this + SMS_RATE_SLACK_MS) / N apart, so a request may reach Vonage up to this
late relative to the next ones (network jitter, a busy worker) before one second there could hold N + 1.
At 30/s this gives 29.0 sends a second, within 4% of the limit."""

SMS_RATE_SLACK_MS = 10
"""A grant made this much after its scheduled time still counts from that time (waiting workers wake a few
ms late); without it every late wake-up would stretch the spacing and the rate would sag below the limit."""

SMS_RATE_REGRANT_AFTER_MS = 12
"""A campaign send whose slot was granted longer ago than this (the database commit before the request
was slow) takes a fresh slot, so a late request cannot crowd the ones granted after it."""

SMS_RATE_MAX_WAIT_SECONDS = 30
"""Longest a send waits for the shared rate limiter before giving up (the message is retried later)."""

SMS_SEND_MAX_ATTEMPTS = 5
"""Attempts of one message after retryable failures (throttled, provider busy, no connection) before it fails."""

SMS_SEND_RETRY_SECONDS = (5, 30, 120, 600)
"""Wait before each retry of a message that failed retryably (the last value repeats)."""

SMS_SIGNATURE_MAX_AGE_SECONDS = 300
"""A signed Vonage webhook whose `timestamp` is further than this from now is refused (replay window)."""

SMS_INBOUND_RECOVERY_GRACE_SECONDS = 60
"""A stored inbound SMS younger than this is still on its way through the queue; recovery leaves it alone."""

SMS_CONCAT_WAIT_SECONDS = 600
"""How long the parts of a long inbound SMS are awaited; after that the parts that came are handled."""

SMS_SENDING_STALE_SECONDS = 900
"""A reply still "sending" after this long lost its worker mid-call: it becomes "unknown", never resent."""

SMS_CLAIM_LEASE_SECONDS = 120
"""A reply "claimed" this long (nothing requested yet: it was waiting for the rate limiter, at most
SMS_RATE_MAX_WAIT_SECONDS) lost its worker: it goes back to pending and is queued again."""

SMS_RECEIPT_RETRY_SECONDS = 10
"""Wait before looking again for the message of a receipt that arrived before its send was recorded."""

SMS_RECEIPT_MAX_ATTEMPTS = 3
"""Looks for a receipt's message before it is logged as belonging to no message of ours."""

BULK_IMPORT_STALE_SECONDS = 600
"""An import that has not recorded progress for this long was cut short (a crash); recovery queues it again."""

# --- Campaign composer ---

CAMPAIGN_BODY_MAX_SEGMENTS = 10
"""Longest campaign message, in SMS segments (counted with the compliance footer and short links)."""

CAMPAIGN_SAMPLE_FIRST_NAME = "Alex"
"""First name used to count and preview a message with {first_name} (each recipient's own name is used when
sending, so the real count varies a little)."""

CAMPAIGN_SHORT_URL_LENGTH = 30
"""Length assumed for a short tracked link when the links module cannot say (https://host/r/code)."""


# --- Settings (shop SMS settings page) ------------------------------------------------------------------

SENDER_ID_MAX_LENGTH = 11
"""Longest alphanumeric sender id carriers accept (a longer one is cut or refused on the way to the phone)."""

SENDER_RATE_PER_SECOND = {"toll_free": 3, "long_code": 1, "mobile": 1, "alphanumeric": 0}
"""Messages per second a shop's own sender may send, by its kind (kinnekt/sms/senders.rate_for), beside the
account's SMS_RATE_PER_SECOND (a send waits for both). A US toll-free number carries 3 a second once verified; a
US 10DLC long code starts low (1 a second, the floor of the limiter's whole-second rates) until its campaign's
registration grants more, which is then set on the number (`sender_numbers.messages_per_second`); other long codes
and mobile numbers 1 a second, as Vonage rates a long virtual number; an alphanumeric sender (0) only the
account's limit."""

SENDER_SEARCH_SIZE = 10
"""Numbers shown per search in Settings (Vonage's number/search `size`; it allows up to 100)."""

COMPLIANCE_FOOTER_MAX_LENGTH = 120
"""Longest compliance footer: it rides on a subscriber's first message, so it must leave room for the text."""

HELP_TEXT_MAX_LENGTH = 300
"""Longest HELP reply (about two SMS parts with the shop's name in front)."""

SMART_SENDING_MAX_HOURS = 168
"""Longest smart-sending window (a week); 0 turns smart sending off."""

SUPPRESSION_MAX_MESSAGES = 100
"""Highest global-suppression threshold (messages received without a click); 0 turns suppression off."""

ATTRIBUTION_WINDOW_MIN_DAYS = 1
"""Shortest attribution window a merchant may choose."""

ATTRIBUTION_WINDOW_MAX_DAYS = 90
"""Longest attribution window a merchant may choose."""


# --- Storefront signup (app proxy, mobile popup, shareable link) --------------------------------------

APP_PROXY_MAX_SKEW_SECONDS = 90
"""An app proxy request whose signed `timestamp` is further than this from now is refused (replays)."""

POPUP_RESEND_COOLDOWN_SECONDS = 600
"""A number signed up through the popup again within this time gets no second confirmation text."""

POPUP_SIGNUPS_PER_IP_PER_HOUR = 5
"""Popup sign-up attempts accepted from one IP address per hour, whatever the numbers (known to the shop or
not), so a script cannot text strangers or probe who is on the list."""

POPUP_SIGNUPS_PER_NUMBER_PER_DAY = 5
"""Popup sign-up attempts accepted for one number per day, from any IP address, so many addresses together
cannot text one person over and over."""

POPUP_REOPTIN_INTERVAL_DAYS = 30
"""A number that opted out is texted a confirmation request by a web sign-up at most once in this many days;
its opt-out stands until it replies."""

SIGNUP_ATTEMPTS_KEEP_SECONDS = 86400
"""Sign-up attempts are kept this long (the longest limit's window), then pruned."""

# --- Campaign links and attribution ---

LINK_CODE_LENGTH = 8
"""Characters in a short link code (letters and digits from `secrets`): 62**8 codes, so guessing one is hopeless."""

LINK_CODE_ATTEMPTS = 5
"""New codes tried when a fresh code collides with an existing one (at this length it practically never does)."""

LINK_REF_PARAM = "kn"
"""Query parameter the redirect adds to the target: the link's code, so an order's landing site names its click."""

LINK_PREVIEW_AGENTS = ("facebookexternalhit", "facebot", "twitterbot", "slackbot", "slack-imgproxy",
                       "whatsapp", "telegrambot", "discordbot", "linkedinbot", "skypeuripreview",
                       "googleimageproxy", "applebot", "bingpreview", "embedly", "pinterestbot", "redditbot",
                       "vkshare", "bot/", "crawler", "spider")
"""User-agent fragments (lower-case) of link-preview fetchers and crawlers: they are redirected but not counted
as clicks (iMessage and WhatsApp fetch every link in a message as it arrives, which is no click)."""

ATTRIBUTION_BATCH_SIZE = 500
"""Orders attributed per batch (one query each for their codes, subscribers and clicks) during a recompute."""

UNSUBSCRIBE_ATTRIBUTION_HOURS = 24
"""An opt-out this soon after a campaign message is counted against that campaign (the latest one received)."""

TIMELINE_HOURLY_MAX_HOURS = 72
"""A campaign chart spanning at most this many hours is drawn per hour; a longer one per day (shop time zone)."""

# --- Campaigns ---

CAMPAIGN_BATCH_SIZE = 100
"""Messages a sender claims at once; small enough that a batch at 30/s finishes well inside the claim lease."""

CAMPAIGN_SENDERS = 2
"""Send jobs run in parallel for one campaign (one per worker process of this 2-core deployment)."""

CAMPAIGN_JOB_SECONDS = 60
"""A send job stops claiming new batches after this long and queues its successor (RQ's job timeout is 180 s)."""

CAMPAIGN_CLAIM_LEASE_SECONDS = 300
"""A "claimed" row whose worker has not touched it for this long goes back to pending (it was never requested)."""

CAMPAIGN_SENDING_STALE_SECONDS = 300
"""A row "sending" this long lost its worker mid-call: it becomes "unknown" and is never sent again.
Longer than the rate limiter's wait plus the HTTP timeout, so a live send is never taken for a dead one."""

CAMPAIGN_STALL_SECONDS = 180
"""Recovery queues new send jobs for a running campaign with due rows and no batch claimed for this long."""

CAMPAIGN_RETRY_SECONDS = (5, 30, 120, 600)
"""Wait before each retry of a campaign message that failed retryably (throttled, provider busy; the last repeats)."""

CAMPAIGN_MAX_ATTEMPTS = 5
"""Provider calls for one campaign message before a retryable failure becomes final."""

CAMPAIGN_RATE_WAIT_RETRY_SECONDS = 2
"""A message that got no rate-limiter slot in time goes back to pending, due again after this long."""

CAMPAIGN_LOCAL_TIME_LOOKAHEAD_HOURS = 26
"""Send-at-local-time campaigns start up to this much before their send_at (UTC+14 reaches a wall-clock
time 26 hours before UTC-12): the due scan looks this far ahead and starts each at its first recipient's time."""

# --- Automations (kinnekt/automations/engine.py) ---

AUTOMATION_FIRE_CHUNK = 500
"""Segment log entries an automation reads per transaction: its messages and the advanced cursor commit
together, so a big edit or sweep is worked through in steps of this size without one long lock."""

AUTOMATION_FIRE_ROUNDS = 5
"""Extra rounds a fire job makes while entries arrived during its run (RQ does not queue a second job with the
id of one that is running); what is left after these waits for the next job or the periodic scan."""

AUTOMATION_SCAN_SECONDS = 60
"""How often every shop with an automation switched on is fired anyway (a safety net: the job queued after a
membership change is the fast path)."""

AUTOMATION_HOLD_SECONDS = 900
"""An automation's message held for its discount code this long (its fire died before Shopify answered) is
released if its shared code exists by then, else skipped (kinnekt/automations/engine.settle_stale_holds)."""

# --- Flows (kinnekt/flows/engine.py) ---

FLOW_RUN_BATCH = 500
"""Due runs of one shop a worker takes per transaction (locked with SKIP LOCKED on PostgreSQL): their exits,
steps, messages and moves commit together."""

FLOW_TRIGGER_LOOKBACK_SECONDS = 300
"""How far before the last read each trigger scan reads again (a row stamped before its transaction committed
is not missed); reading an entry twice is harmless, runs being unique per (flow, trigger_key)."""

FLOW_ADVANCE_SECONDS = 30
"""How often the periodic job enters new runs and advances due ones in every shop with a flow on (a run due at
10:00 moves within this long of it; the job queued after ingest is the fast path)."""

FLOW_ADVANCE_BUDGET_SECONDS = 20
"""How long one advance job works through batches before it queues its successor."""

FLOW_STEPS_PER_PASS = 20
"""Steps one run may take in one batch when they fall due at once (a send followed by a condition and another
send); a longer chain goes on in the next batch."""

# --- Subscribers pages (kinnekt/web/subscribers.py) ---

SUBSCRIBER_DETAIL_ROWS = 25
"""Rows shown in each list of a subscriber's detail page (messages, clicks, orders, history): the latest ones."""

CAMPAIGN_DUE_SCAN_SECONDS = 30
"""How often scheduled campaigns whose time has come are started (their enqueue_at job is the precise path)."""

# --- Database ---

DB_PING_AFTER_IDLE_SECONDS = 10
"""A pooled PostgreSQL connection idle longer than this is checked with SELECT 1 before use (a dead one is
replaced); busier ones are used directly, saving a round trip per transaction."""

# --- Workers (workers/worker.py) ---

WORKER_MONITOR_SECONDS = 2
"""How often a worker heartbeats while its work horse runs (RQ's default is 30 s): a worker that died with
its job is seen as dead after SENDER_DEAD_AFTER_SECONDS, so this must be well below that."""

WORKER_STOP_GRACE_SECONDS = 7
"""After SIGTERM, how long a work horse may take to stop (a sender finishes the message in hand and hands its
campaign over) before it is killed; orchestrators kill after 30 s and operators expect a stop within 10."""

WORKER_RECONNECT_MAX_SECONDS = 10
"""Longest wait between two attempts to reach Redis again after it went away (the first is 0.5 s, doubling)."""

SEND_YIELD_AFTER_SECONDS = {"urgent": 1.0, "default": 3.0}
"""A campaign sender hands over to a successor job (and its worker takes the waiting job first) when a job of
a higher lane has waited this long: inbound texts and replies, then webhooks and re-checks, go before sends."""

SEND_YIELD_CHECK_SECONDS = 0.25
"""How often a sender looks at the higher lanes (a Redis round trip), between two messages."""

SEND_YIELD_MIN_SECONDS = 5.0
"""A send job sends at least this long before it hands over to higher lanes (a stop request aside), so that a
backlog of webhooks cannot stop a campaign altogether: under overload, sends and the rest take turns."""

WORKER_SLICE_SECONDS = 5.0
"""After a send job handed over, its worker takes jobs of the higher lanes for at most this long before it takes
the waiting send job again (urgent jobs still first): the other half of taking turns."""

SENDER_WATCH_SECONDS = 3
"""How often the watchdog (kinnekt.campaigns.tasks.watch_senders) looks for campaign senders whose worker died."""

SENDER_DEAD_AFTER_SECONDS = 8
"""A running send job whose worker has not heartbeaten for this long (WORKER_MONITOR_SECONDS apart) is dead: its
claimed rows are released and its slot queued again, so sending resumes within about 15 seconds."""

# --- Home (kinnekt/dashboard.py) ---

DASHBOARD_PERIOD_DAYS = (7, 30, 90)
"""The periods the home page can show (its switch): the last 7, 30 or 90 days, today included, in the shop's
time zone (the same days as the segment rules' "last N days")."""

DASHBOARD_DEFAULT_DAYS = 30
"""The period the home page opens on."""

DASHBOARD_LIST_ROWS = 5
"""Campaigns listed in each of the home page's "Recent" and "Scheduled" cards (the rest are on Campaigns)."""

OPT_OUT_RATE_WARNING = 0.02
"""Opt-outs per message sent above which a campaign is flagged on the home page (2%). Carriers and industry
guidance treat a campaign losing more than about 2-3% of its recipients to STOP replies as a sign of unwanted
messages, and US carriers watch opt-out rates when vetting 10DLC traffic: past this, look at the audience,
the frequency and the offer before sending more."""

FAILURE_RATE_WARNING = 0.05
"""Failed deliveries per message sent above which the home page flags delivery health (5%). A failure rate
past about 5% usually means stale or invalid numbers, or carrier filtering of the content or sender; carriers
may throttle or block senders whose traffic keeps failing."""

CONSENT_WRITE_ROUNDS = 3
"""Writes of one subscriber's SMS consent to Shopify in one job: a change made while a write is on its way is
written by the next round (its own job could not be queued beside the running one); three rounds cover a
STOP and a START in the same second, and a longer flapping is left to the next change."""


# --- Storefront events from the web pixel (kinnekt/storefront/) ---

PIXEL_MAX_BODY_BYTES = 64 * 1024
"""Largest batch the pixel endpoint reads. The pixel sends at most PIXEL_MAX_EVENTS slimmed events (about 600
bytes each, a long URL included); a bigger body is not from our pixel and is refused (413) unread."""

PIXEL_MAX_EVENTS = 50
"""Most events in one batch. The pixel sends every PIXEL_FLUSH_SECONDS or at 20 events, whichever is first."""

PIXEL_EVENTS_PER_SHOP_PER_MINUTE = 180_000
"""Events one shop may send per minute (3,000 a second, three times the rate benchmarked in bench/pixel.py);
past it a batch is refused with 429 and the pixel drops it. A bound on what a leaked key can cost, not a
business limit: a flash sale of a large store stays well below it."""

PIXEL_EVENTS_PER_BROWSER_PER_MINUTE = 240
"""Events one browser (clientId) may send per minute: a person clicking through a store makes a few a minute;
a script replaying events does not get far."""

PIXEL_RATE_WINDOW_SECONDS = 60
"""The window the pixel limits count in (fixed windows in Redis, or in the process without Redis)."""

PIXEL_KEY_CACHE_SECONDS = 10.0
"""How long a process remembers which installed shop a pixel key belongs to (kinnekt/storefront/pixel_keys.py):
an uninstall or a new key made in another process stops the old key's events within this time (at once in the
process that made it)."""

PIXEL_CLOCK_SKEW_SECONDS = 86400
"""An event whose timestamp is further than this from the time it arrived is stored at its arrival time: a
browser's clock may be set wrong, and a far-future or years-old time would break "in the last N days" rules."""

STOREFRONT_RETENTION_DEFAULT_DAYS = 90
"""How long storefront events are kept unless the merchant chose otherwise (Settings)."""

STOREFRONT_RETENTION_MIN_DAYS = 1
STOREFRONT_RETENTION_MAX_DAYS = 730
"""The retention a merchant may choose: a day to two years."""

STOREFRONT_PRUNE_BATCH = 5_000
"""Events deleted per statement by the daily retention job, so no delete holds locks for long."""

STOREFRONT_PRUNE_INTERVAL_SECONDS = 86400
"""The retention job runs daily."""


# -- billing (kinnekt/billing) --

BILLING_MIN_CAP = 10
"""Lowest capped amount (US dollars per 30 days) a merchant may pick: below it a small campaign already stops."""
BILLING_MAX_CAP = 10_000
"""Highest capped amount a merchant may type; a typo of extra zeros must not authorise a fortune."""
BILLING_DEFAULT_CAP = 100
"""The capped amount the plan form suggests: about 12,000 one-part US texts."""
USAGE_BATCH_SIZE = 500
"""Messages per usage record at most: one Shopify call per 500 accepted texts, and a description still short."""
USAGE_RETRY_AFTER_SECONDS = 120
"""A usage record still pending this long (Shopify unreachable, a worker died) is asked for again by recovery."""
BILLING_BLOCKED_RECHECK_SECONDS = 300
"""A campaign stopped by billing looks again this often (a plan that reopens also wakes it at once)."""


# -- US carrier registration (kinnekt/sms/registration.py) --

REGISTRATION_POLL_SECONDS = 900
"""How often the registrations waiting for the carriers are asked about at Vonage: a review takes days, and a
quarter of an hour is soon enough to let a merchant send after an approval."""
REGISTRATION_TIMEOUT_SECONDS = 20
"""How long one call to Vonage's registration APIs may take (connect and read)."""
FLOW_US_HOLD_SECONDS = 900
"""A flow run that would text a US number while the shop has no approved US sender (a flow switched on before the
hold began) stays at its send step and is looked at again this much later: as often as registrations are polled."""

# -- ad platform audiences (kinnekt/audiences) --

AUDIENCE_BATCH_SIZE = 10_000
"""People per add or remove request: Meta's documented maximum for /{audience_id}/users ("a maximum of 10000 at a
time"); Google's offline user data job takes the same per addOperations request here (its limit is 100,000
operations per request)."""
AUDIENCE_READ_CHUNK = 5_000
"""Segment members (and synced rows) read per query while a sync compares them: memory stays flat."""
AUDIENCE_SYNC_INTERVAL_SECONDS = 86_400
"""Each audience is synced at least this often (daily), besides after each edit of its segment."""
AUDIENCE_SCAN_INTERVAL_SECONDS = 3_600
"""How often the periodic job looks for audiences due (daily ones, retries whose delayed job was lost)."""
AUDIENCE_RETRY_BASE_SECONDS = 60
"""A failed sync is retried after this, doubled per failure in a row (60 s, 2 min, 4 min, …)."""
AUDIENCE_RETRY_MAX_SECONDS = 6 * 3_600
"""…but never more than six hours apart."""
AUDIENCE_MAX_ATTEMPTS = 8
"""Failures in a row after which a link stops retrying (failed, its error shown) until the next daily sync."""
AUDIENCE_SYNC_STALE_SECONDS = 3_600
"""A sync holding its link longer than this is taken for dead (its worker lost) and the link may sync again."""
AUDIENCE_BUILD_WAIT_SECONDS = 30
"""A sync finding its segment being rebuilt waits this long and tries again (never a half-built set)."""
AUDIENCE_OAUTH_MAX_AGE_SECONDS = 900
"""How long a connect link and the state it sends to the platform's login stay valid."""
AUDIENCE_HTTP_TIMEOUT_SECONDS = 30.0
"""Timeout of one request to an ad platform."""
AUDIENCE_POLL_SECONDS = 5.0
"""Between two polls of a Google offline user data job while it runs."""
AUDIENCE_OAUTH_PER_MINUTE = 30
"""Requests a minute one address may make to the public OAuth start and callback pages of ad platforms."""
AUDIENCE_SYNC_SLICE_SECONDS = 120
"""A sync commits its batches and hands over to a new job after this long, well inside RQ's 180 s job timeout:
a million-member first sync runs as several jobs, each going on from what the last one committed."""


# ---------------------------------------------------------------------------------------------- Shopify segments

SHOPIFY_SEGMENTS_PAGE_SIZE = 250
"""Segments listed per `segments` page (Shopify's largest page; a shop has a few dozen)."""
SHOPIFY_SEGMENT_MEMBERS_PAGE_SIZE = 1000
"""Members per `customerSegmentMembers` page: Shopify's documented maximum, so a segment costs the fewest calls."""
SHOPIFY_SEGMENT_QUERY_THRESHOLD = 10_000
"""Above this many members (the first page's totalCount) a segment is read through a members query
(`customerSegmentMembersQueryCreate`): one evaluation at Shopify, so ten or more pages are one snapshot."""
SHOPIFY_SEGMENT_QUERY_POLL_SECONDS = 2.0
"""Between polls of a members query's `done` (Shopify runs one in seconds)."""
SHOPIFY_SEGMENT_QUERY_MAX_POLLS = 150
"""Polls before a members query counts as failed (5 minutes at 2 s): the segment keeps its old members."""
SHOPIFY_SEGMENT_WRITE_CHUNK = 5000
"""Member ids written (inserted, deleted) or looked up per statement: far under PostgreSQL's bind limit."""
SHOPIFY_SEGMENT_REFRESH_SECONDS = 6 * 3600
"""How often every shop's Shopify segments are read again (the merchant can refresh at once with a button)."""
SHOPIFY_TAG_BATCH = 25
"""Customers tagged or untagged per GraphQL request (aliased `tagsAdd` / `tagsRemove`, 10 points each: 250 of a
bucket of 1000 or more, so a request never waits for more than the bucket holds)."""
SHOPIFY_TAG_CLAIM_SECONDS = 300
"""A tag mirror sync holds its mirror this long (renewed after each batch): a second worker finds it taken; a
crashed worker's claim lapses so the next sync takes over."""
SHOPIFY_TAG_SAFETY_NET_SECONDS = 3600
"""How often every mirror is compared with its segment anyway (a subscriber linked to a customer later)."""
