#!/usr/bin/env bash
# Which llama.cpp build this machine should get: prints one line,
#   cpu | cuda <CMAKE_CUDA_ARCHITECTURES> | vulkan
# and explains on stderr. `AULA_BACKEND=cpu|cuda|vulkan` decides instead.
#
# What it looks at (each replaceable, so that the choice can be tested with
# the inputs faked): `nvidia-smi` and `nvcc` on PATH, the CUDA toolkit
# directory (AULA_CUDA_HOME, default /usr/local/cuda), `vulkaninfo` and `glslc`
# on PATH.
set -euo pipefail

say() { echo "aula backend: $*" >&2; }
cuda_home=${AULA_CUDA_HOME:-/usr/local/cuda}

# The compute capability of the first NVIDIA GPU as CMake wants it:
# 12.1 -> 121a-real (the GB10 needs the arch-specific target), 9.0 -> 90-real.
cuda_arch() {
  local cap
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .\r')
  [ -n "$cap" ] || return 1
  case "$cap" in
    12*|10*) echo "${cap}a-real" ;;  # Blackwell: arch-specific features
    *) echo "${cap}-real" ;;
  esac
}

have_nvcc() {
  command -v nvcc >/dev/null 2>&1 || [ -x "$cuda_home/bin/nvcc" ]
}

# llama.cpp's Vulkan backend needs Vulkan headers that have
# VK_EXT_layer_settings (Debian 12's libvulkan-dev, 1.3.239, does not).
vulkan_header() {
  local h="${AULA_VULKAN_INCLUDE:-${VULKAN_SDK:+$VULKAN_SDK/include}}"
  echo "${h:-/usr/include}/vulkan/vulkan_core.h"
}
vulkan_headers_ok() {
  grep -q 'VK_EXT_layer_settings' "$(vulkan_header)" 2>/dev/null
}
vulkan_headers_version() {
  grep -m1 '^#define VK_HEADER_VERSION ' "$(vulkan_header)" 2>/dev/null | tr -dc '0-9'
}

have_vulkan_gpu() {
  command -v glslc >/dev/null 2>&1 && command -v vulkaninfo >/dev/null 2>&1 \
    && vulkaninfo --summary 2>/dev/null | grep -qiE 'deviceType *= *PHYSICAL_DEVICE_TYPE_(DISCRETE|INTEGRATED)_GPU'
}

case "${AULA_BACKEND:-}" in
  cpu) say "AULA_BACKEND=cpu"; echo cpu; exit 0 ;;
  vulkan) say "AULA_BACKEND=vulkan"; echo vulkan; exit 0 ;;
  cuda)
    arch=$(cuda_arch || true)
    arch=${arch:-${CMAKE_CUDA_ARCHITECTURES:-native}}
    say "AULA_BACKEND=cuda (architectures: $arch)"
    echo "cuda $arch"; exit 0 ;;
  "") ;;
  *) say "AULA_BACKEND=${AULA_BACKEND}: use cpu, cuda or vulkan"; exit 2 ;;
esac

if command -v nvidia-smi >/dev/null 2>&1 && arch=$(cuda_arch); then
  if have_nvcc; then
    say "an NVIDIA GPU (compute capability ${arch%%-*}) and the CUDA toolkit: the CUDA build for $arch only"
    echo "cuda $arch"
    exit 0
  fi
  say "an NVIDIA GPU, but no CUDA toolkit (no nvcc on PATH or in $cuda_home/bin)."
  say "  Install it (Debian/Ubuntu: nvidia-cuda-toolkit, or NVIDIA's cuda-toolkit-13 package;"
  say "  or the PyPI wheels nvidia-cuda-nvcc, nvidia-cuda-runtime, nvidia-cublas), then run set-up again."
  say "  Building for the CPU meanwhile: it works, an order of magnitude slower than the GPU."
  echo cpu
  exit 0
fi
if have_nvcc; then
  say "a CUDA toolkit but no NVIDIA GPU (nvidia-smi finds none): the CPU build"
fi
if have_vulkan_gpu; then
  if vulkan_headers_ok; then
    say "a Vulkan GPU, glslc and Vulkan headers 1.3.$(vulkan_headers_version): the Vulkan build"
    echo vulkan
    exit 0
  fi
  say "a Vulkan GPU and glslc, but the Vulkan headers ($(vulkan_header), 1.3.$(vulkan_headers_version))"
  say "  lack VK_EXT_layer_settings, which llama.cpp's Vulkan backend uses (Debian 12 ships 1.3.239)."
  say "  Fetch newer headers (Debian 13's, unpacked under .cache/, nothing installed) and run set-up again:"
  say "    AULA_VULKAN_INCLUDE=\$(bash scripts/vulkan-headers.sh) bash scripts/setup.sh"
  say "  (or install LunarG's Vulkan SDK and set VULKAN_SDK)."
  say "  Building for the CPU meanwhile."
  echo cpu
  exit 0
fi
say "no GPU found: the CPU build"
echo cpu
