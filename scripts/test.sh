#!/usr/bin/env bash
# Set up (see setup.sh), install what only the tests need, run every test.
#   - the official `openai` Python client, langchain-openai with tiktoken, and
#     JupyterHub (PyPI, into .venv)
#   - JupyterHub's proxy, configurable-http-proxy (npm, into .cache/chp)
#   - PostgreSQL's server binaries (Debian), for the PostgreSQL tests
#   - schemathesis (PyPI, into .venv), for the API fuzzing run at the end
#   - torch, transformers, peft and gguf (PyPI, into ~/.cache/aula/train-venv,
#     once per machine), for the fine-tuning trainer's test
#   - Chromium and chromedriver (Debian) and axe-core (npm, pinned, into
#     .cache/axe), for the web page's browser and accessibility tests
# The tests start their own JupyterHub and PostgreSQL on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check 'openai>=1.40' 'jupyterhub>=4' 'langchain-openai>=0.3' 'tiktoken>=0.7' 'jsonschema>=4' 'schemathesis>=4.3,<5'
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
fi
AXE_VERSION=4.14.1
AXE=.cache/axe/node_modules/axe-core/axe.min.js
if [ ! -f "$AXE" ] || [ "$(node -p 'require("./.cache/axe/node_modules/axe-core/package.json").version' 2>/dev/null)" != "$AXE_VERSION" ]; then
    npm install --silent --no-audit --no-fund --prefix .cache/axe "axe-core@$AXE_VERSION"
fi
CHP=.cache/chp/node_modules/.bin/configurable-http-proxy
if [ ! -x "$CHP" ]; then
    npm install --silent --no-audit --no-fund --prefix .cache/chp configurable-http-proxy
fi
# The fine-tuning trainer's Python (large; kept outside the clone, reused).
AULA_TRAIN_PYTHON=$(bash scripts/setup-trainer.sh | tail -n1)
export AULA_TRAIN_PYTHON
# The same compiler as set-up (a different one would rebuild llama.cpp).
. scripts/toolchain.sh
export AULA_TEST_PYTHON="$PWD/.venv/bin/python"
export AULA_TEST_CHP="$PWD/$CHP"
export AULA_TEST_AXE="$PWD/$AXE"
# The OpenAPI description is scripts/openapi.py's output, as committed.
if ! python3 scripts/openapi.py | cmp -s - crates/aula-gateway/src/openapi.json; then
    echo "crates/aula-gateway/src/openapi.json is not scripts/openapi.py's output: run python3 scripts/openapi.py > crates/aula-gateway/src/openapi.json"
    exit 1
fi
cargo test --release --locked --workspace -- --test-threads=2
# The whole HTTP API fuzzed from that description (a minute per mode).
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash scripts/fuzz-api.sh
