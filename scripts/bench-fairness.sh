#!/usr/bin/env bash
# Fairness: one heavy user keeps H requests in flight while 8 light users
# send one request at a time, on a real engine with 4 slots; through
# `aula serve` (token-fair queue, users by API key) and straight against
# the engine (first come, first served). Through aula twice: with the
# engine pausing the heavy user's sequences for light users (`preempt =
# true`, issue 33 item 3) and without (`preempt = false`, slots only).
# Also the light users' idle figure, and the heavy user alone (the
# throughput the pausing run is compared with).
# Usage: bash scripts/bench-fairness.sh   (after scripts/setup.sh)
#   DUR=60s HEAVY="32 128" (heavy requests in flight, one run each)
#   PAIRS=N: instead, N rounds of MODES (default "idle pausing": the light
#   users alone, and beside the heavy user with pausing; also "alone", the
#   heavy user alone, and "slots", pausing off) for each H, the order
#   reversed every other round, so that each figure is compared with ones
#   measured beside it.
#   THINK=3s: the light users think this long on average (exponential)
#   before each request, as students do, instead of asking back to back;
#   alone they then leave slots free, and what the heavy user costs them
#   is the wait for a slot (or a pause).
#   OPEN=1 (with THINK): the light users' questions come at the same
#   times in every run, their think time counted from the last question
#   sent, not from its answer (`aula bench --open-loop`), so that runs
#   answering them at different speeds are given the same work.
#   HEAVY_MAX=192: the heavy user's max_tokens (light users ask for 32;
#   slots are 256 tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
ENGINE_PORT=${ENGINE_PORT:-19100}
GW_PORT=${GW_PORT:-19101}
DUR=${DUR:-60s}
HEAVY=${HEAVY:-32 128}
MODEL_FILE=${MODEL_FILE:-$($B home | awk '/smollm2-135m-instruct.q4_1/ {print $NF}')}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT
export AULA_HOME="$home"
$B engine --model "$MODEL_FILE" --name smol --port "$ENGINE_PORT" --parallel 4 --queue 512 --context 256 > "$home/engine.log" 2>&1 &
# The heavy user's whole backlog waits in the queue (the default per-user
# bound, 16, would answer the rest 429 at once, and the retry storm would
# take the CPU from the engine).
printf '[fairness]\nmax_queued_per_user = 256\n\n[[models]]\nname = "smol"\nurl = "http://127.0.0.1:%s"\nparallel = 4\npreempt = true\n' "$ENGINE_PORT" > "$home/aula.toml"
sed 's/preempt = true/preempt = false/' "$home/aula.toml" > "$home/slots.toml"
: > "$home/keys"
for u in heavy light1 light2 light3 light4 light5 light6 light7 light8; do
  $B users add "$u" > /dev/null 2>&1
  $B keys create "$u" 2> /dev/null >> "$home/keys"
done
# One gateway at a time on this home (a second would stand by): started
# with the configuration named, once the previous one has gone.
gw=""
serve() {
  if [ -n "$gw" ]; then kill "$gw"; wait "$gw" 2>/dev/null || true; fi
  $B serve --port "$GW_PORT" --config "$1" >> "$home/serve.log" 2>&1 &
  gw=$!
  for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/v1/models")" != 000 ] && break
    sleep 0.5
  done
}
serve "$home/aula.toml"
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$ENGINE_PORT/health" > /dev/null && break; sleep 0.5; done
sleep 1
MODES=${MODES:-idle pausing}
think=(${THINK:+--think "$THINK"} ${THINK:+${OPEN:+--open-loop}})
heavy_max=(${HEAVY_MAX:+--heavy-max-tokens "$HEAVY_MAX"})
common=(--model smol --stream --prompt-tokens 32 --duration "$DUR" --json)
# Idle: the 8 light users alone (user 0 of --keys is the heavy one, so skip it).
tail -n 8 "$home/keys" > "$home/light-keys"
head -n 1 "$home/keys" > "$home/heavy-key"
cat > "$home/steps.py" <<'EOF'
import json, sys, time
b, h = json.load(open(sys.argv[1])), json.load(sys.stdin)
wall = time.time() - float(sys.argv[2])
d = {k: h["steps"][k] - b["steps"][k] for k in h["steps"]}
n = max(d["count"], 1)
p = {k: h["pausing"][k] - b["pausing"][k] for k in ("pauses", "copy_ms")}
print(f"  engine: {d['count'] / wall:.1f} steps/s, {d['tokens'] / n:.2f} tokens fed and {d['sampled'] / n:.2f} "
      f"sequences sampled a step, {d['decode_ms'] / n:.1f} ms decoding a step ({d['decode_ms'] / 1000 / wall:.0%} of "
      f"{wall:.0f} s); pauses {p['pauses']}, copies {p['copy_ms']} ms, "
      f"prompt tokens reused {h['prompt_tokens_reused'] - b['prompt_tokens_reused']}")
EOF
if [ -n "${PAIRS:-}" ]; then
  # One scenario of pair P with H heavy requests: idle, alone, slots or pausing.
  one() {
    case $1 in
      idle) serve "$home/aula.toml"; args=(--max-tokens 32 --users 8 "${think[@]}" --keys "$home/light-keys"); label="light users alone" ;;
      alone) serve "$home/aula.toml"; args=(--users 1 --concurrency "$3" --max-tokens "${HEAVY_MAX:-32}" --keys "$home/heavy-key"); label="heavy=$3 alone" ;;
      slots) serve "$home/slots.toml"; args=(--max-tokens 32 --users 9 --heavy "$3" "${think[@]}" "${heavy_max[@]}" --keys "$home/keys"); label="heavy=$3, slots only" ;;
      pausing) serve "$home/aula.toml"; args=(--max-tokens 32 --users 9 --heavy "$3" "${think[@]}" "${heavy_max[@]}" --keys "$home/keys"); label="heavy=$3, pausing" ;;
    esac
    curl -s "http://127.0.0.1:$ENGINE_PORT/health" > "$home/before.json"
    t0=$(date +%s.%N)
    $B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" "${args[@]}" \
      | python3 scripts/bench_summary.py "pair $2: $label" fairness
    # The engine's steps during this run (its window and what ran after it
    # until every answer was closed): how many a second, how full, and the
    # share of the time llama.cpp spent decoding.
    curl -s "http://127.0.0.1:$ENGINE_PORT/health" | python3 "$home/steps.py" "$home/before.json" "$t0"
  }
  for H in $HEAVY; do
    for pair in $(seq "$PAIRS"); do
      order="$MODES"
      [ $((pair % 2)) = 0 ] && order=$(echo $MODES | tr ' ' '\n' | tac | tr '\n' ' ')
      for m in $order; do one "$m" "$pair" "$H"; done
    done
  done
  curl -s "http://127.0.0.1:$ENGINE_PORT/health" | python3 -c 'import json,sys; print("engine pausing:", json.load(sys.stdin)["pausing"])'
  exit 0
fi
$B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" --max-tokens 32 --users 8 "${think[@]}" --keys "$home/light-keys" \
  | python3 scripts/bench_summary.py "light users alone, through aula" fairness
for H in $HEAVY; do
  $B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" --max-tokens "${HEAVY_MAX:-32}" --users 1 --concurrency "$H" --keys "$home/heavy-key" \
    | python3 scripts/bench_summary.py "heavy=$H alone, through aula" fairness
  $B bench --url "http://127.0.0.1:$ENGINE_PORT" "${common[@]}" --max-tokens 32 --users 9 --heavy "$H" "${think[@]}" "${heavy_max[@]}" \
    | python3 scripts/bench_summary.py "heavy=$H, straight to the engine (FCFS)" fairness
  serve "$home/slots.toml"
  $B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" --max-tokens 32 --users 9 --heavy "$H" "${think[@]}" "${heavy_max[@]}" --keys "$home/keys" \
    | python3 scripts/bench_summary.py "heavy=$H, through aula, slots only" fairness
  serve "$home/aula.toml"
  $B bench --url "http://127.0.0.1:$GW_PORT" "${common[@]}" --max-tokens 32 --users 9 --heavy "$H" "${think[@]}" "${heavy_max[@]}" --keys "$home/keys" \
    | python3 scripts/bench_summary.py "heavy=$H, through aula, pausing" fairness
done
curl -s "http://127.0.0.1:$ENGINE_PORT/health" | python3 -c 'import json,sys; print("engine pausing:", json.load(sys.stdin)["pausing"])'
