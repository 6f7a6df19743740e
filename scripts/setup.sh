#!/usr/bin/env bash
# Install what Aula needs on a fresh Debian 12 or 13 (or Ubuntu 24.04, which
# DGX OS is built on) machine, fetch the two built-in models from PyPI, and
# build. Safe to run again: it skips what is done. Reaches only the
# distribution's packages, PyPI and the Rust crate registry.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -r /etc/os-release ]; then
  . /etc/os-release
  echo "aula setup: detected ${PRETTY_NAME:-${ID:-an unknown distribution}}"
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# bindgen (llama-cpp-sys-2) loads libclang at build time.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "aula setup: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# clang 16 or later and its OpenMP runtime, for llama.cpp's AMX kernels
# (see scripts/toolchain.sh): the distribution's own version (Debian 12:
# 16, Debian 13: 19, Ubuntu 24.04: 18); optional: without them the default
# compiler is used.
if [ -z "${CC:-}" ] && ! (. scripts/toolchain.sh; [ -n "${CC:-}" ]); then
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -q || true
    v=""
    for c in 16 19 18 20 21 22 17; do
      if apt-cache show "clang-$c" >/dev/null 2>&1 && apt-cache show "libomp-$c-dev" >/dev/null 2>&1; then
        v=$c; break
      fi
    done
    if [ -n "$v" ]; then
      echo "aula setup: installing clang-$v and libomp-$v-dev"
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "clang-$v" "libomp-$v-dev" \
        || echo "aula setup: clang-$v did not install; building with the default compiler (no AMX kernels)"
    else
      echo "aula setup: no clang from 16 on is available; building with the default compiler (no AMX kernels)"
    fi
  fi
fi
. scripts/toolchain.sh
echo "aula setup: C/C++ compiler for llama.cpp: ${CC:-default}"

# A private Python environment for the model fetcher and the test client.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python scripts/fetch_models.py

# Which llama.cpp build: the GPU this machine has (CUDA for NVIDIA with the
# toolkit, for that GPU's architecture only; Vulkan where a Vulkan GPU and
# glslc are present), else the CPU. AULA_BACKEND=cpu|cuda|vulkan overrides.
read -r backend cuda_arch < <(bash scripts/detect-backend.sh)
features=()
case "$backend" in
  cuda)
    features=(--features cuda)
    export CMAKE_CUDA_ARCHITECTURES="$cuda_arch"
    ;;
  vulkan)
    features=(--features vulkan)
    # Headers newer than the system's (scripts/vulkan-headers.sh): found
    # through CPATH, ahead of /usr/include.
    if [ -n "${AULA_VULKAN_INCLUDE:-}" ]; then
      export CPATH="$AULA_VULKAN_INCLUDE${CPATH:+:$CPATH}"
    fi
    ;;
esac
echo "aula setup: llama.cpp backend: $backend${cuda_arch:+ ($cuda_arch)}"
# AULA_CARGO_TIMINGS=1 (scripts/test.sh) keeps cargo's timing report, which
# says how long llama.cpp itself took (scripts/cargo_timings.py).
timings=()
[ -n "${AULA_CARGO_TIMINGS:-}" ] && timings=(--timings)
cargo build --release --locked --bins "${features[@]}" "${timings[@]}"
echo "aula setup: done ($(./target/release/aula --version))"
