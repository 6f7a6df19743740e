#!/usr/bin/env bash
# Fairness: one heavy user keeps H requests in flight while 8 light users
# send one request at a time, on a real engine with 4 slots; through
# `aula serve` (token-fair queue, users by API key) and straight against
# the engine (first come, first served). Also the light users' idle figure.
# Usage: bash scripts/bench-fairness.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
ENGINE_PORT=${ENGINE_PORT:-19100}
GW_PORT=${GW_PORT:-19101}
DUR=${DUR:-60s}
MODEL_FILE=${MODEL_FILE:-$($B home | awk '/smollm2-135m-instruct.q4_1/ {print $NF}')}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT
export AULA_HOME="$home"
$B engine --model "$MODEL_FILE" --name smol --port "$ENGINE_PORT" --parallel 4 --queue 512 --context 256 > "$home/engine.log" 2>&1 &
printf '[[models]]\nname = "smol"\nurl = "http://127.0.0.1:%s"\nparallel = 4\n' "$ENGINE_PORT" > "$home/aula.toml"
: > "$home/keys"
for u in heavy light1 light2 light3 light4 light5 light6 light7 light8; do
  $B users add "$u" > /dev/null 2>&1
  $B keys create "$u" 2> /dev/null >> "$home/keys"
done
$B serve --port "$GW_PORT" > "$home/serve.log" 2>&1 &
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$ENGINE_PORT/health" > /dev/null && break; sleep 0.5; done
sleep 1
common=(--model smol --stream --prompt-tokens 32 --max-tokens 32 --duration "$DUR" --json)
# Idle: the 8 light users alone (user 0 of --keys is the heavy one, so skip it).
tail -n 8 "$home/keys" > "$home/light-keys"
$B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" --users 8 --keys "$home/light-keys" \
  | python3 scripts/bench_summary.py "light users alone, through aula" fairness
for H in 32 128; do
  $B bench --url "http://127.0.0.1:$ENGINE_PORT" "${common[@]}" --users 9 --heavy "$H" \
    | python3 scripts/bench_summary.py "heavy=$H, straight to the engine (FCFS)" fairness
  $B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" --users 9 --heavy "$H" --keys "$home/keys" \
    | python3 scripts/bench_summary.py "heavy=$H, through aula (token-fair)" fairness
done
