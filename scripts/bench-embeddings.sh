#!/usr/bin/env bash
# Embedding throughput: `aula engine` against llama.cpp's `llama-server
# --embeddings` on the same GGUF (all-MiniLM-L6-v2), same threads and batch
# size, at 1 and 16 concurrent clients sending 1 or 32 sentences per request;
# and, when ST_PYTHON names a Python with sentence-transformers, that library
# on the CPU as a reference (model.encode, batch 32, same sentences).
#
#   LLAMA_SERVER=/path/to/llama-server [ST_PYTHON=/path/to/python] bash scripts/bench-embeddings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary}"
B=./target/release/aula
THREADS=${THREADS:-2}
SECONDS_PER_POINT=${SECONDS_PER_POINT:-8}
BATCH=${BATCH:-512}        # tokens per batch, both servers (Aula's default)
MODELS_DIR=$($B home | awk -F'[()]' '/^models \(/ {print $2}')
MODEL="$MODELS_DIR/all-minilm-l6-v2.gguf"
trap 'kill $(jobs -p) 2>/dev/null' EXIT
wait_up() { for _ in $(seq 300); do curl -sf "$1/health" > /dev/null && return 0; sleep 0.1; done; echo "server at $1 did not come up" >&2; return 1; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, threads $THREADS, $(date -u +%F)"
for server in aula llama-server; do
  if [ $server = aula ]; then
    $B engine --model "$MODEL" --name all-minilm-l6-v2 --port 19200 --threads "$THREADS" --batch "$BATCH" --parallel 4 > /dev/null 2>&1 &
  else
    "$LLAMA_SERVER" -m "$MODEL" --alias all-minilm-l6-v2 --port 19200 --embeddings --pooling mean \
      -c 16384 -b "$BATCH" -ub "$BATCH" -np 32 --threads "$THREADS" --threads-batch "$THREADS" > /dev/null 2>&1 &
  fi
  pid=$!
  wait_up http://127.0.0.1:19200
  for c in 1 16; do
    for n in 1 32; do
      python3 scripts/embed_load.py http://127.0.0.1:19200 "$c" "$n" "$SECONDS_PER_POINT" "$server"
    done
  done
  kill $pid; wait $pid 2>/dev/null || true
done
if [ -n "${ST_PYTHON:-}" ]; then
  "$ST_PYTHON" scripts/embed_load.py --sentence-transformers "$SECONDS_PER_POINT" "$THREADS"
fi
