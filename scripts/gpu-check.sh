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

# Fine-tuning on the GPU (issue 34): Aula's trainer, LoRA (bf16) and QLoRA
# (NF4 through bitsandbytes) on the built-in models, 2 epochs of a small
# file; its measured peak against the planner's gpu_trainer_bytes. Needs the
# trainer's Python with PyTorch for CUDA and bitsandbytes
# (AULA_TRAIN_PYTHON, or ~/.cache/aula/train-venv: `pip install bitsandbytes`
# there); skipped, saying so, without them.
TRAIN_PY=${AULA_TRAIN_PYTHON:-$HOME/.cache/aula/train-venv/bin/python}
if ! "$TRAIN_PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu-check: fine-tuning skipped: $TRAIN_PY has no PyTorch for CUDA"
  exit 0
fi
python3 - "$tmp/train.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(64):
        f.write(json.dumps({"messages": [{"role": "user", "content": f"What is the course mascot? ({i})"},
                                         {"role": "assistant", "content": "The course mascot is Quill the owl."}]}) + "\n")
PY
printf '\n| model | method | batch | tokens/s (median step) | peak (GB, measured) | plan (GB) |\n|---|---|---|---|---|---|\n'
for m in "$home/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$home/models/gemma-3-270m-q4_k_m.gguf"; do
  [ -f "$m" ] || continue
  for q in false true; do
    out="$tmp/ft-$(basename "$m")-$q"
    mkdir -p "$out"
    printf '{"base_gguf": "%s", "training_file": "%s", "out_dir": "%s", "n_epochs": 2, "batch_size": 8, "lora_rank": 8, "device": "cuda", "precision": "bf16", "qlora": %s, "gradient_checkpointing": true, "checkpoint_every": 0}' \
      "$m" "$tmp/train.jsonl" "$out" "$q" > "$out/job.json"
    "$TRAIN_PY" trainer/aula_train.py "$out/job.json" > "$out/lines.jsonl" 2> "$out/stderr.log" || true
    plan=$($A plan "$m" --finetune --lora-rank 8 --train-tokens 64 --json 2>/dev/null \
      | python3 -c "import json,sys; t=json.load(sys.stdin)['finetune'][0]['aula_trainer']; print('%.2f' % (t['gpu_qlora_nf4_bytes' if '$q'=='true' else 'gpu_lora_bf16_bytes']/1e9))" || echo "?")
    python3 - "$out/lines.jsonl" "$(basename "$m")" "$([ "$q" = true ] && echo QLoRA || echo LoRA)" "$plan" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
err = [l["message"] for l in lines if l["type"] == "error"]
if err:
    print(f"| {sys.argv[2]} | {sys.argv[3]} | - | failed: {err[-1][:120]} | - | {sys.argv[4]} |")
    sys.exit(0)
rates = [l["tokens_per_s"] for l in lines if l["type"] == "metrics"]
peak = max(l["peak_bytes"] for l in lines if l["type"] == "memory")
print(f"| {sys.argv[2]} | {sys.argv[3]} | 8 | {statistics.median(rates):.0f} | {peak/1e9:.2f} | {sys.argv[4]} |")
PY
  done
done
