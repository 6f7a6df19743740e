#!/usr/bin/env bash
# Set up (see setup.sh) and serve the built-in models on http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec ./target/release/aula serve "$@"
