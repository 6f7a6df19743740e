#!/usr/bin/env bash
# Set up (see setup.sh), install the test-only Python client, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check 'openai>=1.40'
export AULA_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --release --locked --workspace -- --test-threads=2
