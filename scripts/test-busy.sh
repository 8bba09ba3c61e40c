#!/usr/bin/env bash
# The whole suite beside a CPU hog: one busy loop per core at normal priority, as on a shared CI machine.
# The suite must pass like this too (no test may depend on the machine being idle). Arguments go to test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install  # as `make test` does: a fresh clone has no virtualenv yet
hogs=()
for _ in $(seq "$(nproc)"); do
  python3 -c "while True: pass" &
  hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
bash scripts/test.sh "$@"
