#!/usr/bin/env bash
# Overhead of the access path: API-key authentication, limits, the fair
# queue and the ledger (two SQLite commits per request), measured as
# `aula serve` with keys and a quota in front of openai-mock, against
# openai-mock directly. Closed loop: each connection sends its next request
# when the last one is answered.
# Usage: bash scripts/bench-access.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
MOCK_PORT=${MOCK_PORT:-19200}
GW_PORT=${GW_PORT:-19201}
N=${N:-20000}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT
export AULA_HOME="$home"
printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:%s/v1"\nparallel = 64\n\n[[limits]]\nrole = "student"\ntokens_per_day = 1000000000\nrequests_per_minute = 1000000\n' "$MOCK_PORT" > "$home/aula.toml"
: > "$home/keys"
for u in $(seq 1 16); do
  $B users add "student$u" > /dev/null 2>&1
  $B keys create "student$u" 2> /dev/null >> "$home/keys"
done
./target/release/openai-mock "$MOCK_PORT" > /dev/null &
$B serve --port "$GW_PORT" > "$home/serve.log" 2>&1 &
sleep 1
for round in 1 2; do
  for c in 1 4; do
    $B bench --url "http://127.0.0.1:$MOCK_PORT" --model mock --users $c --concurrency $c --requests "$N" --json \
      | python3 scripts/bench_summary.py "mock direct, $c conn" gateway
    $B bench --url "http://127.0.0.1:$GW_PORT" --model mock --users $c --concurrency $c --requests "$N" --keys "$home/keys" --json \
      | python3 scripts/bench_summary.py "aula, keys+quota+ledger, $c conn" gateway
  done
done
echo "ledger rows: $($B usage --json | python3 -c 'import json,sys; print(sum(r["requests"] for r in json.load(sys.stdin)))')"
