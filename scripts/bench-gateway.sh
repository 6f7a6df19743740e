#!/usr/bin/env bash
# Gateway overhead: `aula serve` in front of openai-mock vs openai-mock directly.
# Usage: bash scripts/bench-gateway.sh   (after scripts/setup.sh)
# With BASE=path/to/another/aula, that build's gateway is measured in the
# same rounds (on BASE_PORT), for before/after comparisons.
# With TABS=N, each round also measures the gateway (16 connections) while N
# web pages hold their live view open (N `/events` streams, as N browser tabs).
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
if [ -n "${BASE:-}" ]; then
  BASE_PORT=${BASE_PORT:-19002}
  mkdir -p "$home/base"
  cp "$home/aula.toml" "$home/base/aula.toml"
  AULA_HOME="$home/base" "$BASE" serve --port "$BASE_PORT" --config "$home/base/aula.toml" > /dev/null 2>&1 &
fi
sleep 1
for round in 1 2 3; do
  for c in 16 1; do
    n=$(( c == 16 ? 40000 : 5000 ))
    $B bench --url "http://127.0.0.1:$MOCK_PORT" --model mock --concurrency $c --requests $n --json | python3 scripts/bench_summary.py "mock direct, $c conn" gateway
    $B bench --url "http://127.0.0.1:$GW_PORT" --model mock --concurrency $c --requests $n --json | python3 scripts/bench_summary.py "through aula serve, $c conn" gateway
    if [ -n "${BASE:-}" ]; then
      $B bench --url "http://127.0.0.1:$BASE_PORT" --model mock --concurrency $c --requests $n --json | python3 scripts/bench_summary.py "through BASE aula serve, $c conn" gateway
    fi
    if [ -n "${TABS:-}" ] && [ "$c" = 16 ]; then
      tabs=()
      for _ in $(seq "$TABS"); do
        curl -sN "http://127.0.0.1:$GW_PORT/events" > /dev/null &
        tabs+=($!)
      done
      sleep 2
      $B bench --url "http://127.0.0.1:$GW_PORT" --model mock --concurrency $c --requests $n --json | python3 scripts/bench_summary.py "through aula serve, $c conn, $TABS live pages open" gateway
      kill "${tabs[@]}" 2>/dev/null || true
      wait "${tabs[@]}" 2>/dev/null || true
    fi
  done
done
