#!/usr/bin/env bash
# Two builds of the gateway side by side in front of one openai-mock, 16
# connections, measured in alternating rounds (A, B, A, B, ...) so that this
# VM's drift hits both alike. For before/after comparisons:
#   bash scripts/bench-gateway-ab.sh target/release/aula /path/to/other/aula [ROUNDS]
# STREAM=1 measures streamed answers (64 tokens each, 5,000 requests a
# measurement) instead of whole ones.
# (An aula built elsewhere with clang may need LD_LIBRARY_PATH=/usr/lib/llvm-16/lib.)
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-8}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$home"' EXIT
printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:19600/v1"\n' > "$home/aula.toml"
mkdir -p "$home/a" "$home/b"
./target/release/openai-mock 19600 > /dev/null &
AULA_HOME="$home/a" "$A" serve --port 19601 --config "$home/aula.toml" > /dev/null 2>&1 &
AULA_HOME="$home/b" "$B" serve --port 19602 --config "$home/aula.toml" > /dev/null 2>&1 &
sleep 2
if [ "${STREAM:-0}" = 1 ]; then MODE=(--stream --requests 5000); else MODE=(--requests 30000); fi
rps() {
  ./target/release/aula bench --url "http://127.0.0.1:$1" --model mock --concurrency 16 "${MODE[@]}" --json \
    | python3 -c "import json,sys; print(round(json.load(sys.stdin)['requests_per_s']))"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: A $(rps 19601) req/s   B $(rps 19602) req/s"
done
