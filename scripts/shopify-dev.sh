#!/bin/sh
# Run by `shopify app dev` (shopify.web.toml): the app, plus an RQ worker and scheduler when REDIS_URL is set.
set -eu
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

# The CLI passes the tunnel URL as APP_URL (and HOST); Kinnekt reads SHOPIFY_APP_URL.
SHOPIFY_APP_URL=${SHOPIFY_APP_URL:-${APP_URL:-${HOST:-}}}
PORT=${PORT:-${BACKEND_PORT:-5000}}
export SHOPIFY_APP_URL PORT
# SHOPIFY_API_KEY, SHOPIFY_API_SECRET and SCOPES arrive under the names Kinnekt reads.
# SECRET_KEY, TOKEN_ENCRYPTION_KEY, DATABASE_URL, REDIS_URL, VONAGE_*: from your environment or .env.
# A development app usually has no signed Vonage webhooks yet: without VONAGE_SIGNATURE_SECRET it accepts
# unsigned ones, on purpose (the app logs a warning; production refuses to start that way unless told).
if [ -z "${VONAGE_SIGNATURE_SECRET:-}" ] && [ -z "${VONAGE_UNSIGNED_WEBHOOKS:-}" ]; then
  echo "shopify-dev: VONAGE_SIGNATURE_SECRET is not set; accepting unsigned Vonage webhooks (VONAGE_UNSIGNED_WEBHOOKS=1)" >&2
  VONAGE_UNSIGNED_WEBHOOKS=1
  export VONAGE_UNSIGNED_WEBHOOKS
fi

"$BIN/flask" --app app db upgrade

pids=""
stop() { [ -n "$pids" ] && kill $pids 2>/dev/null || true; }
trap stop EXIT INT TERM
if [ -n "${REDIS_URL:-}" ]; then
  "$BIN/python" -m workers & pids="$pids $!"
  "$BIN/rq" cron workers/cron.py --url "$REDIS_URL" & pids="$pids $!"
fi
"$BIN/flask" --app app run --host localhost --port "$PORT" --no-reload
