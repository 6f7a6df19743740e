#!/usr/bin/env bash
# Gateway overhead: `aula serve` in front of openai-mock vs openai-mock directly.
# Usage: bash scripts/bench-gateway.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
MOCK_PORT=${MOCK_PORT:-19000}
GW_PORT=${GW_PORT:-19001}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT
printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:%s/v1"\n' "$MOCK_PORT" > "$home/aula.toml"
./target/release/openai-mock "$MOCK_PORT" > /dev/null &
AULA_HOME="$home" $B serve --port "$GW_PORT" --config "$home/aula.toml" > /dev/null 2>&1 &
sleep 1
for round in 1 2 3; do
  for c in 16 1; do
    n=$(( c == 16 ? 40000 : 5000 ))
    $B bench --url "http://127.0.0.1:$MOCK_PORT" --model mock --concurrency $c --requests $n --json | python3 scripts/bench_summary.py "mock direct, $c conn" gateway
    $B bench --url "http://127.0.0.1:$GW_PORT" --model mock --concurrency $c --requests $n --json | python3 scripts/bench_summary.py "through aula serve, $c conn" gateway
  done
done
