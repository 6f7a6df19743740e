#!/usr/bin/env bash
# cargo-fuzz over Aula's parsers of untrusted input (not CI: it needs nightly
# Rust and minutes per target). Each target runs for FUZZ_SECONDS (default
# 120); a crash or a timeout stops the script, and the input that did it is
# left in fuzz/artifacts/TARGET/ — turn it into a regression test next to the
# code it broke, then fix.
#   bash scripts/fuzz.sh                 # all four targets
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh request
# Targets: gguf (the GGUF reader), request (chat, completion and embedding
# bodies), config (aula.toml), template (chat templates from GGUF files).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-120}
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf request config template)
cd fuzz
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${SECS}s"
  t0=$SECONDS
  # -timeout: an input that takes over 10 s is a hang; rss_limit: 2 GiB.
  log="/tmp/aula-fuzz-$t.log"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t failed (log: $log; inputs: fuzz/artifacts/$t/)"
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  echo "fuzz: $t clean after $((SECONDS - t0))s"
done
