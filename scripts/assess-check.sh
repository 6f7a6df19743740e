#!/usr/bin/env bash
# The assessed profile against `aula bench` through `aula serve`: what
# `aula plan --hardware this MODEL` says of one stream's decode, prefill and
# N streams' decode (from `aula assess`), and what a student's client gets
# through the gateway (keys, limits, fair queue, ledger on), same engine
# settings as the assessment (4 slots, context 2,048), 3 runs each.
# Usage: bash scripts/assess-check.sh     (after scripts/setup.sh and `aula assess`)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$PWD/target/release/aula
ENGINE_PORT=${ENGINE_PORT:-19120}
GW_PORT=${GW_PORT:-19121}
MODEL_FILE=${MODEL_FILE:-$($B home | awk '/smollm2-135m-instruct.q4_1/ {print $NF}')}
NAME=$(basename "$MODEL_FILE" .gguf | tr 'A-Z' 'a-z')
$B plan --hardware this "$MODEL_FILE" --context 2048 --users 4 --prompt-tokens 512 --json > /tmp/aula-assess-check-plan.json \
  || { echo "assess this machine first: $B assess" >&2; exit 1; }
home=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$home"' EXIT
G=(env AULA_HOME="$home" "$B")
"${G[@]}" engine --model "$MODEL_FILE" --name "$NAME" --port "$ENGINE_PORT" --parallel 4 --context 2048 > "$home/engine.log" 2>&1 &
pids+=($!)
printf '[[models]]\nname = "%s"\nurl = "http://127.0.0.1:%s"\nparallel = 4\n' "$NAME" "$ENGINE_PORT" > "$home/aula.toml"
"${G[@]}" users add student > /dev/null 2>&1
KEY=$("${G[@]}" keys create student 2> /dev/null)
"${G[@]}" serve --port "$GW_PORT" > "$home/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$GW_PORT/readyz" > /dev/null && curl -sf "http://127.0.0.1:$ENGINE_PORT/health" > /dev/null && break
  sleep 0.5
done
# Through the gateway (gw) and, in the same run, straight to the engine (en).
for run in 1 2 3; do
  for via in gw en; do
    if [ $via = gw ]; then url="http://127.0.0.1:$GW_PORT"; auth=(--api-key "$KEY"); else url="http://127.0.0.1:$ENGINE_PORT"; auth=(); fi
    bench() { $B bench --url "$url" --model "$NAME" --stream --temperature 0 "${auth[@]}" --json "$@"; }
    bench --users 1 --requests 4 --prompt-tokens 512 --max-tokens 2 > "$home/$via-prefill$run.json"
    bench --users 1 --requests 4 --prompt-tokens 32 --max-tokens 128 > "$home/$via-one$run.json"
    bench --users 4 --requests 8 --prompt-tokens 32 --max-tokens 128 > "$home/$via-four$run.json"
  done
done
python3 - "$home" <<'PY'
import json, statistics, sys
home = sys.argv[1]
plan = json.load(open("/tmp/aula-assess-check-plan.json"))["estimates"][0]["speed"]
def runs(via, kind, f):
    return [f(json.load(open(f"{home}/{via}-{kind}{i}.json"))) for i in (1, 2, 3)]
# Prefill: prompt tokens over the time to the first token (one decode step
# is in it too, as in the assessment's method).
figures = [
    ("prefill, 1 stream", "prefill_tokens_per_s", "prefill",
     lambda r: r["prompt_tokens"] / r["requests_ok"] / (r["ttft"]["p50_ms"] / 1000)),
    ("decode, 1 stream", "single_stream_tokens_per_s", "one", lambda r: r["answer_rate"]["p50_tps"]),
    ("decode, 4 streams together", "aggregate_tokens_per_s", "four", lambda r: 4 * r["answer_rate"]["p50_tps"]),
]
print(f"{'figure':<28} {'plan':>12} {'through aula serve':>26} {'error':>7} {'straight to the engine':>26} {'error':>7}")
for name, key, kind, f in figures:
    p = plan[key]
    row = f"{name:<28} {p:>12.1f}"
    for via in ("gw", "en"):
        m = runs(via, kind, f)
        med = statistics.median(m)
        row += f" {med:>12.1f} ({min(m):.1f}-{max(m):.1f}) {100 * (p - med) / med:>+6.1f}%"
    print(row)
print("plan:", plan.get("measured", "predicted"))
PY
