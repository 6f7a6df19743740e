#!/usr/bin/env bash
# A class against a running box, checked against the planner: how many
# students does `aula plan --students` say this machine holds (from its
# `aula assess` figures), and how many does it hold when that many students
# with their own keys think, ask and read through `aula serve`?
#
# 1. A short warm-up run learns the real prompt and answer lengths (the
#    chat template adds tokens; a model may stop before --max-tokens).
# 2. `aula plan --hardware this MODEL --students` predicts the class held at
#    the target (median answer >= RATE tok/s, p95 first token <= TTFT).
# 3. `aula bench --think` runs classes of N students from the prediction
#    upward (or downward) until one misses the target; the largest that
#    met it is the measured figure.
#
# Usage: bash scripts/class-load.sh     (after scripts/setup.sh and `aula assess`)
# Knobs: MODEL_FILE, THINK (5s), PROMPT (64 words), ANSWER (64 tokens),
#        RATE (10), TTFT_MS (2000), DUR (120s), SLOTS (4), MAX_STUDENTS (64).
set -euo pipefail
cd "$(dirname "$0")/.."
B=$PWD/target/release/aula
ENGINE_PORT=${ENGINE_PORT:-19110}
GW_PORT=${GW_PORT:-19111}
THINK=${THINK:-5s}
PROMPT=${PROMPT:-64}
ANSWER=${ANSWER:-64}
RATE=${RATE:-10}
TTFT_MS=${TTFT_MS:-2000}
DUR=${DUR:-120s}
SLOTS=${SLOTS:-4}
MAX_STUDENTS=${MAX_STUDENTS:-64}
MODEL_FILE=${MODEL_FILE:-$($B home | awk '/smollm2-135m-instruct.q4_1/ {print $NF}')}
NAME=$(basename "$MODEL_FILE" .gguf | tr 'A-Z' 'a-z')
$B plan --hardware this "$MODEL_FILE" --json > /dev/null \
  || { echo "assess this machine first: $B assess" >&2; exit 1; }

for port in "$ENGINE_PORT" "$GW_PORT"; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "port $port is taken (set ENGINE_PORT / GW_PORT)" >&2; exit 1
  fi
done
home=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$home"' EXIT
G=(env AULA_HOME="$home" "$B")   # the gateway's own home; `aula plan` reads this machine's
"${G[@]}" engine --model "$MODEL_FILE" --name "$NAME" --port "$ENGINE_PORT" --parallel "$SLOTS" \
  --queue 1024 --context 2048 > "$home/engine.log" 2>&1 &
pids+=($!)
printf '[[models]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\nparallel = %s\n' \
  "$NAME" "$ENGINE_PORT" "$SLOTS" > "$home/aula.toml"
: > "$home/keys"
for i in $(seq 1 "$MAX_STUDENTS"); do
  "${G[@]}" users add "s$i" > /dev/null 2>&1
  "${G[@]}" keys create "s$i" 2> /dev/null >> "$home/keys"
done
"${G[@]}" serve --port "$GW_PORT" > "$home/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$GW_PORT/readyz" > /dev/null && curl -sf "http://127.0.0.1:$ENGINE_PORT/health" > /dev/null && break
  sleep 0.5
done

bench() { # students, extra args...
  local n=$1; shift
  head -n "$n" "$home/keys" > "$home/k$n"
  $B bench --url "http://127.0.0.1:$GW_PORT" --model "$NAME" --stream --temperature 0 \
    --prompt-tokens "$PROMPT" --max-tokens "$ANSWER" --users "$n" --keys "$home/k$n" --json "$@"
}

read -r P A < <(bench 1 --requests 12 | python3 -c '
import json, sys
r = json.load(sys.stdin)
n = max(r["requests_ok"], 1)
print(round(r["prompt_tokens"] / n), round(r["completion_tokens"] / n))')
if [ "${A:-0}" -lt 1 ]; then
  echo "the warm-up got no answer; the gateway's log:" >&2; tail -n 20 "$home/serve.log" >&2; exit 1
fi
echo "warm-up: $P prompt tokens and $A answer tokens a request (as the engine counted them)"

PRED=$($B plan --hardware this "$MODEL_FILE" --users "$SLOTS" --students --think "$THINK" \
  --prompt-tokens "$P" --answer-tokens "$A" --rate "$RATE" --ttft "${TTFT_MS}ms" --json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["capacity"]["students"])')
echo "predicted: $PRED students (aula plan --hardware this --students --think $THINK --prompt-tokens $P --answer-tokens $A)"

meets() { # students -> prints one line, returns 0 when the class met the target
  bench "$1" --think "$THINK" --duration "$DUR" | python3 -c '
import json, sys
r = json.load(sys.stdin)
rate = (r.get("answer_rate") or {}).get("p50_tps", 0)
ttft = r["ttft"]["p95_ms"]
ok = r["requests_failed"] == 0 and rate >= float(sys.argv[2]) and ttft <= float(sys.argv[3])
n, done, failed, p50 = sys.argv[1], r["requests_ok"], r["requests_failed"], r["ttft"]["p50_ms"]
verdict = "meets" if ok else "misses"
print(f"  {n:>3} students: {done} answers, {failed} failed; first token p50 {p50/1000:.2f} s, p95 {ttft/1000:.2f} s; median answer {rate:.1f} tok/s -> {verdict}")
sys.exit(0 if ok else 1)' "$1" "$RATE" "$TTFT_MS"
}

step=$(( PRED / 8 > 1 ? PRED / 8 : 1 ))
n=$(( PRED > 1 ? PRED : 1 ))
held=0
if meets "$n"; then
  held=$n
  while (( n + step <= MAX_STUDENTS )); do
    n=$(( n + step ))
    if meets "$n"; then held=$n; else break; fi
  done
else
  while (( n - step >= 1 )); do
    n=$(( n - step ))
    if meets "$n"; then held=$n; break; fi
  done
fi
python3 - "$PRED" "$held" "$step" <<'EOF'
import sys
pred, held, step = map(int, sys.argv[1:])
err = (pred - held) / held * 100 if held else float("inf")
print(f"measured: {held} students held (steps of {step}); predicted {pred}: {err:+.0f}% against the measurement")
EOF
