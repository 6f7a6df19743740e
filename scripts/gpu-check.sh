#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (the GB10, an H100/H200): build the CUDA
# engine (or use the one built), serve the built-in SmolLM2 and, when GGUF=
# names one, a larger model, fully offloaded; compare what /health says the
# device holds with `aula plan`'s prediction and with nvidia-smi; run
# `aula bench` at 1 and 8 streams; print one table to paste into
# BENCHMARKS.md. Usage: [GGUF=path/to/model.gguf] bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi: this is for a machine with an NVIDIA GPU" >&2; exit 2; }
if ! ./target/release/aula doctor 2>/dev/null | grep -q "gpu backends: cuda"; then
  AULA_BACKEND=cuda bash scripts/setup.sh
fi
A=./target/release/aula
models=("$HOME/.local/share/aula/models/SmolLM2-135M-Instruct.Q4_1.gguf")
[ -n "${GGUF:-}" ] && models+=("$GGUF")
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader
$A doctor | head -3
printf '| model | layers on GPU | device buffers (MiB): model / KV / compute | plan (MiB) | nvidia-smi used (MiB) | 1 stream tok/s | 8 streams tok/s |\n|---|---|---|---|---|---|---|\n'
for m in "${models[@]}"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  $A engine --model "$m" --port "$port" --parallel 8 --context 4096 --gpu-layers all > /tmp/gpu-check-engine.log 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" > /tmp/gpu-check-health.json && break; sleep 1; done
  after=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  plan=$($A plan "$m" --context 4096 --users 8 --json | python3 -c 'import json,sys; e=json.load(sys.stdin)["estimates"][0]["memory"]; print(round(e["total_bytes"]/2**20))')
  read -r off dev <<<"$(python3 - <<'PY'
import json
h = json.load(open("/tmp/gpu-check-health.json"))
p = h["placement"]
gpu = {k: v for k, v in p["buffers"].items() if k.startswith("CUDA") and not k.endswith("_Host")}
m = sum(v["model_bytes"] for v in gpu.values()) / 2**20
kv = sum(v["kv_cache_bytes"] for v in gpu.values()) / 2**20
c = sum(v["compute_bytes"] for v in gpu.values()) / 2**20
off = p["layers_offloaded"]
print(f"{off[0]}/{off[1]}" if off else "0", f"{m:.0f}/{kv:.0f}/{c:.0f}")
PY
)"
  one=$($A bench --url "http://127.0.0.1:$port" --model x --concurrency 1 --requests 8 --max-tokens 128 --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["output_tokens_per_s"],1))')
  eight=$($A bench --url "http://127.0.0.1:$port" --model x --concurrency 8 --requests 32 --max-tokens 128 --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["output_tokens_per_s"],1))')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(basename "$m")" "$off" "$dev" "$plan" "$((after - before))" "$one" "$eight"
done
