#!/usr/bin/env bash
# Compile-check the CUDA build on a machine without a GPU, with NVIDIA's CUDA
# 13 toolkit wheels from PyPI (one tree under site-packages/nvidia/cu13/),
# for the GB10 (121a-real) and the H100/H200 (90-real). Builds into
# target-cuda/ and runs nothing on a GPU. Not part of .ci/run: on a 2-core
# machine it takes long (BENCHMARKS.md). Usage: bash scripts/cuda-compile-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CUDA_VENV:-$HOME/.cache/aula/cuda-toolkit}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cublas nvidia-cuda-cccl nvidia-cuda-crt nvidia-nvvm
root=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -d "$root" ] || { echo "cuda-compile-check: no CUDA 13 tree at $root" >&2; exit 1; }
# CMake's FindCUDAToolkit wants unversioned library names.
for lib in cudart cublas cublasLt; do
  f=$(ls "$root"/lib/lib$lib.so.* 2>/dev/null | head -1)
  [ -n "$f" ] && ln -sf "$(basename "$f")" "$root/lib/lib$lib.so"
done
# The wheels have no driver library (libcuda comes with the GPU's driver):
# an empty stub with its soname lets the CUDA backend link, as the toolkit's
# own lib/stubs/libcuda.so does; the real one is loaded on a GPU machine.
if [ ! -e "$root/lib/stubs/libcuda.so" ]; then
  mkdir -p "$root/lib/stubs"
  echo 'void aula_cuda_stub(void) {}' | cc -x c -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" -
fi
# A CMake cache from a run before the stub existed keeps the driver
# NOTFOUND (llama-cpp-sys-2 does not configure an existing build again, and
# the link then fails on `-lCUDA::cuda_driver`): configure afresh (the CUDA
# objects were kept when this happened; the C++ ones were rebuilt).
for c in target-cuda/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
  if [ -f "$c" ] && grep -q 'CUDA_cuda_driver_LIBRARY-NOTFOUND' "$c"; then rm -f "$c"; fi
done
export CUDA_PATH="$root" CUDAToolkit_ROOT="$root" PATH="$root/bin:$PATH"
export LIBRARY_PATH="$root/lib:${LIBRARY_PATH:-}" LD_LIBRARY_PATH="$root/lib:${LD_LIBRARY_PATH:-}"
export CMAKE_CUDA_ARCHITECTURES="${ARCHS:-121a-real;90-real}" CMAKE_CUDA_COMPILER="$root/bin/nvcc"
. scripts/toolchain.sh
t0=$SECONDS
cargo build --release --locked --bins --features cuda --target-dir target-cuda
echo "cuda-compile-check: built for $CMAKE_CUDA_ARCHITECTURES in $((SECONDS - t0)) s"
ls target-cuda/release/libggml-cuda* 2>/dev/null || { echo "cuda-compile-check: no libggml-cuda module was built" >&2; exit 1; }
