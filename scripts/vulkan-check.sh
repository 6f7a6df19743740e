#!/usr/bin/env bash
# The Vulkan engine without a GPU: Mesa's lavapipe (Vulkan on the CPU), as
# llama.cpp's own CI runs its Vulkan backend. Builds Aula with
# `--features vulkan` into target-vulkan/ (the CPU build in target/ is left
# alone), then serves SmolLM2 with all, some and no layers offloaded to the
# Vulkan device and checks: the layers offloaded, the device's buffers in
# /health against the CPU build's, and the greedy answer against the CPU
# build's. Not part of .ci/run (the build takes long on a small machine; its
# time is in BENCHMARKS.md). Usage: bash scripts/vulkan-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in mesa-vulkan-drivers libvulkan-dev glslc spirv-headers vulkan-tools; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
header="${VULKAN_SDK:-/usr}/include/vulkan/vulkan_core.h"
if ! grep -q VK_EXT_layer_settings "$header" 2>/dev/null; then
  # llama.cpp's Vulkan backend uses VK_EXT_layer_settings, which Debian 12's
  # headers (1.3.239) lack: Debian 13's, unpacked under .cache/ (nothing is
  # installed), found through CPATH ahead of /usr/include.
  echo "vulkan-check: $header ($(grep -m1 '^#define VK_HEADER_VERSION ' "$header" 2>/dev/null)) lacks" \
    "VK_EXT_layer_settings; using Debian 13's headers" >&2
  inc=$(bash scripts/vulkan-headers.sh)
  export CPATH="$inc${CPATH:+:$CPATH}"
fi
. scripts/toolchain.sh
t0=$SECONDS
cargo build --release --locked --bins --features vulkan --target-dir target-vulkan
echo "vulkan-check: build took $((SECONDS - t0)) s"
[ -x target/release/aula ] || cargo build --release --locked --bins
# lavapipe: a CPU-type Vulkan device, used only when named; no fp16 or
# cooperative matrices there. (Set after the build: llama-cpp-sys-2 passes
# GGML_* variables to CMake, so at build time they would force a rebuild.)
export GGML_VK_VISIBLE_DEVICES=0 GGML_VK_DISABLE_F16=1 GGML_VK_DISABLE_COOPMAT=1
AULA_VK=target-vulkan/release/aula AULA_CPU=target/release/aula \
  .venv/bin/python scripts/vulkan_check.py
