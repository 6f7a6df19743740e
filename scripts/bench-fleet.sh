#!/usr/bin/env bash
# On-demand loading: time from the first request for an unloaded model to its
# first token, and what users of another, loaded model see meanwhile.
# Usage: bash scripts/bench-fleet.sh   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
PORT=${PORT:-19300}
M=$(dirname "$($B home | awk '/smollm2-135m-instruct.q4_1/ {print $NF}')")
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$home"' EXIT
export AULA_HOME="$home"
cat > "$home/aula.toml" <<TOML
[[models]]
name = "smol"
gguf = "$M/SmolLM2-135M-Instruct.Q4_1.gguf"
context = 512
parallel = 2
threads = 1

[[models]]
name = "gemma"
gguf = "$M/gemma-3-270m-q4_k_m.gguf"
context = 512
parallel = 1
threads = 1
preload = false
TOML
$B serve --port "$PORT" > "$home/serve.log" 2>&1 &
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 0.2; done
common=(--url "http://127.0.0.1:$PORT" --model smol --stream --prompt-tokens 16 --max-tokens 16 --users 2 --json)
echo "smol alone:"
$B bench "${common[@]}" --duration 15s | python3 scripts/bench_summary.py "  smol, 2 users, nothing loading" fleet
for round in 1 2 3; do
  $B unload gemma --url "http://127.0.0.1:$PORT" > /dev/null
  $B bench "${common[@]}" --duration 15s > "$home/during.json" &
  sleep 5
  $B bench --url "http://127.0.0.1:$PORT" --model gemma --stream --prompt-tokens 16 --max-tokens 8 --requests 1 --json \
    | python3 scripts/bench_summary.py "  gemma's first request (round $round: includes its load)" fleet
  wait %2 2>/dev/null || wait
  python3 scripts/bench_summary.py "  smol, 2 users, while gemma loads (round $round)" fleet < "$home/during.json"
done
