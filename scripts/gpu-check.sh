#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (the GB10, an H100/H200): build the CUDA
# engine (or use the one built), serve the built-in SmolLM2 and, when GGUF=
# names one, a larger model, fully offloaded to CUDA0; compare what /health
# says the device holds with `aula plan`'s prediction (its offload split)
# and with what nvidia-smi says the engine's process uses; run `aula bench`
# at 1 and 8 streams; print one table to paste into BENCHMARKS.md.
# Usage: [GGUF=path/to/model.gguf] bash scripts/gpu-check.sh
set -euo pipefail
if [ -n "${GGUF:-}" ]; then GGUF=$(realpath "$GGUF"); fi
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi: this is for a machine with an NVIDIA GPU" >&2; exit 2; }
unset AULA_ENGINE_KEY
A=./target/release/aula
# Read doctor's output once: a pipe closed early (grep -q, head) would make
# it fail under pipefail.
doctor=$($A doctor 2>/dev/null || true)
if ! grep -q '^gpu backends: cuda' <<<"$doctor"; then
  AULA_BACKEND=cuda bash scripts/setup.sh
  doctor=$($A doctor)
fi
home=${AULA_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/aula}
models=("$home/models/SmolLM2-135M-Instruct.Q4_1.gguf")
if [ -n "${GGUF:-}" ]; then models+=("$GGUF"); fi
tmp=$(mktemp -d)
pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$tmp"' EXIT

# The engine process's own GPU memory (MiB), from nvidia-smi's compute apps
# (memory.used of the whole GPU is [N/A] on the GB10, and counts others).
gpu_mib() {
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
    | awk -F', *' -v p="$1" '$1==p && $2 ~ /^[0-9]+$/ {s+=$2; n++} END {print n ? s : "n/a"}'
}
bench() {
  $A bench --url "http://127.0.0.1:$port" --model gpu-check --concurrency "$1" --requests "$2" \
    --max-tokens 128 --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["requests_failed"]==0, r["errors"]; print(round(r["output_tokens_per_s"],1))'
}

nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader
head -n 3 <<<"$doctor"
printf '| model | layers on GPU | CUDA0 buffers (MiB): model / KV / compute | plan, device (MiB): model / KV / compute (sum) | nvidia-smi, engine process (MiB) | 1 stream tok/s | 8 streams tok/s |\n|---|---|---|---|---|---|---|\n'
for m in "${models[@]}"; do
  [ -f "$m" ] || { echo "gpu-check: no model at $m" >&2; exit 1; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  $A engine --model "$m" --name gpu-check --port "$port" --parallel 8 --context 4096 \
    --gpu-layers all --device CUDA0 > "$tmp/engine.log" 2>&1 &
  pid=$!
  up=""
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/health" > "$tmp/health.json"; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if [ -z "$up" ]; then
    echo "gpu-check: the engine for $m did not come up" >&2
    tail -n 20 "$tmp/engine.log" >&2
    exit 1
  fi
  used=$(gpu_mib "$pid")
  plan=$($A plan "$m" --context 4096 --users 8 --gpu-layers all --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["offload"][0]["split"]
M = 2**20
print("%.0f / %.0f / %.0f (%.0f)" % (s["weights_device_bytes"] / M, s["kv_device_bytes"] / M,
                                    s["compute_device_bytes"] / M, s["device_bytes"] / M))')
  vals=$(python3 - "$tmp/health.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["placement"]
gpu = {k: v for k, v in p["buffers"].items() if k.startswith("CUDA") and not k.endswith("_Host")}
if not gpu:
    print("gpu-check: no CUDA buffers in /health: the engine runs on the CPU", file=sys.stderr)
M = 2**20
m = sum(v["model_bytes"] for v in gpu.values()) / M
kv = sum(v["kv_cache_bytes"] for v in gpu.values()) / M
c = sum(v["compute_bytes"] for v in gpu.values()) / M
off = p["layers_offloaded"]
print(f"{off[0]}/{off[1]}" if off else "0", f"{m:.0f}_/_{kv:.0f}_/_{c:.0f}")
PY
)
  read -r off dev <<<"$vals"
  one=$(bench 1 8)
  eight=$(bench 8 32)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(basename "$m")" "$off" "${dev//_/ }" "$plan" "$used" "$one" "$eight"
done
echo "(nvidia-smi's figure includes the CUDA context, which the planner puts at 500 MB.)"
