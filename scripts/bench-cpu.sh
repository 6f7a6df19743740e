#!/usr/bin/env bash
# The CPU kernels `aula engine` picks at run time against other choices, in
# one run, rounds interleaved: prefill (a 480-token prompt, 1 output token:
# prompt tokens / time to first token) and decode (32-token prompt, 128
# greedy tokens, one stream) of SmolLM2 and Gemma 3.
#
#   bash scripts/bench-cpu.sh                      # the automatic choice vs forced variants
#   NATIVE_AULA=/path/to/aula bash scripts/bench-cpu.sh   # ... and another build (e.g. -C target-cpu=native)
#   AULA=/path/to/aula ...                          # bench that build instead of ./target/release/aula
#
# VARIANTS (default "auto haswell") names what to compare: `auto` is the
# engine's own choice, any other word is forced with AULA_CPU_VARIANT.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${AULA:-./target/release/aula}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
VARIANTS=${VARIANTS:-"auto haswell"}
MODELS_DIR=$($B home | awk -F'[()]' '/^models \(/ {print $2}')
trap 'kill $(jobs -p) 2>/dev/null' EXIT
wait_up() { for _ in $(seq 300); do curl -sf "$1/health" > /dev/null && return 0; sleep 0.1; done; echo "server at $1 did not come up" >&2; return 1; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, threads $THREADS, $(date -u +%F)"
$B doctor 2>/dev/null | head -3
configs=()
for v in $VARIANTS; do configs+=("variant:$v"); done
[ -n "${NATIVE_AULA:-}" ] && configs+=("native:$NATIVE_AULA")
for file in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
  model="$MODELS_DIR/$file"
  name=$(basename "$file" .gguf | tr 'A-Z' 'a-z')
  for rep in $(seq "$REPS"); do
    for cfg in "${configs[@]}"; do
      kind=${cfg%%:*}; arg=${cfg#*:}
      if [ "$kind" = native ]; then
        exe=$arg; label="native build"; envs=()
      else
        exe=$B; label="variant $arg"
        if [ "$arg" = auto ]; then envs=(); else envs=(AULA_CPU_VARIANT="$arg"); fi
      fi
      env "${envs[@]}" "$exe" engine --model "$model" --name "$name" --port 19150 --parallel 1 --context 1024 \
        --threads "$THREADS" > /dev/null 2>&1 &
      pid=$!
      wait_up http://127.0.0.1:19150
      $B bench --url http://127.0.0.1:19150 --model "$name" --requests 6 --max-tokens 1 --prompt-tokens 480 \
        --stream --json | python3 scripts/bench_summary.py "$name $label rep $rep" prefill
      $B bench --url http://127.0.0.1:19150 --model "$name" --requests 4 --max-tokens 128 --prompt-tokens 32 \
        --stream --json | python3 scripts/bench_summary.py "$name $label rep $rep decode"
      kill $pid; wait $pid 2>/dev/null || true
    done
  done
done
