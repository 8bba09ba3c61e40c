#!/usr/bin/env bash
# The lint, then the whole test suite twice: on SQLite and on PostgreSQL, each with its 12 slowest tests and its time.
# Needs Redis; installs Chromium when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
PG_URL=${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
export REDIS_URL_FOR_TESTS=${REDIS_URL_FOR_TESTS:-redis://127.0.0.1:6379/15}

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "!! could not install chromium; browser tests will be skipped"
  else
    echo "!! /usr/bin/chromium missing (install the 'chromium' package); browser tests will be skipped"
  fi
fi

unset DATABASE_URL REDIS_URL KINNEKT_DEMO
status=0
echo "== lint (ruff; settings in pyproject.toml)"
"$BIN/ruff" check . || status=$?
# Each half's output is kept so that its failures can be repeated at the very end, where a truncated log still shows
# them (a CI log's tail otherwise only names the last half's result).
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
started=$SECONDS
echo "== tests on SQLite"
"$BIN/pytest" --durations=12 "$@" 2>&1 | tee "$logs/sqlite.log" || status=$?
sqlite_seconds=$((SECONDS - started))
echo "== tests on PostgreSQL ($PG_URL)"
DATABASE_URL="$PG_URL" "$BIN/pytest" --durations=12 "$@" 2>&1 | tee "$logs/postgresql.log" || status=$?
echo "== time: SQLite ${sqlite_seconds} s, PostgreSQL $((SECONDS - started - sqlite_seconds)) s"
for half in sqlite postgresql; do
  echo "== $half: $(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$logs/$half.log" | tail -1 | tr -d '=' | xargs)"
  grep -E '^(FAILED|ERROR) ' "$logs/$half.log" | sed "s/^/   $half: /" || true
done
exit $status
