#!/usr/bin/env bash
# The fine-tuning trainer's Python (torch, transformers, peft, gguf) in a
# virtual environment kept outside the clone — PyPI's torch wheel with its
# dependencies is about 3.4 GB, so it is installed once per machine and
# reused: $AULA_TRAIN_VENV, default ~/.cache/aula/train-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AULA_TRAIN_VENV:-$HOME/.cache/aula/train-venv}
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import torch, transformers, peft, gguf' >/dev/null 2>&1; then
  echo "aula setup-trainer: installing torch, transformers, peft and gguf into $venv (large, once)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r trainer/requirements.txt
fi
echo "$venv/bin/python"
