#!/usr/bin/env bash
# Aula on Arm, proven under emulation (issue 34): cross-compile `aula` and
# llama.cpp's Arm CPU variants for aarch64-unknown-linux-gnu on this x86-64
# machine, then run them under qemu-user with Neoverse-class CPUs and check
#   * `aula doctor` names the CPU variant ggml would pick for the emulated
#     feature set (and says why), for each CPU in $AULA_QEMU_CPUS;
#   * `aula plan --detect` reads memory and cores;
#   * `aula engine` with SmolLM2 answers a chat completion, and its greedy
#     token ids match the x86-64 build's for the first 32 tokens (or the
#     first difference is printed, with both texts).
# Not part of CI (it builds llama.cpp a third time, for Arm): run it by hand,
# as root or with sudo for the Debian packages. Times are printed per step.
#
#   bash scripts/aarch64-check.sh              # build (if needed) and check
#   AULA_AARCH64_SKIP_BUILD=1 bash scripts/...  # check an existing build
#
# What it needs, installed if missing: Rust's aarch64-unknown-linux-gnu
# target (rustup), Debian's cross toolchain (gcc-aarch64-linux-gnu for the
# C library, crt files and the linker; llama.cpp itself is compiled by
# clang-16, the compiler every x86 build uses, since GCC 12 does not know
# armv9.2-a or SME), qemu-user-static, and clang's OpenMP runtime for arm64
# (the Debian package, unpacked into a private sysroot: installing it as a
# second architecture would replace the amd64 one, same path).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/toolchain.sh
HOST_TARGET_DIR="$CARGO_TARGET_DIR"

TRIPLE=aarch64-unknown-linux-gnu
GNU=aarch64-linux-gnu
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/aula"
XTARGET="${AULA_AARCH64_TARGET_DIR:-$CACHE/target-aarch64}"
EXTRA="$CACHE/aarch64-extra"
OUT="${AULA_AARCH64_OUT:-$CACHE/aarch64-check}"
CPUS="${AULA_QEMU_CPUS:-cortex-a53 neoverse-n1 a64fx max}"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
mkdir -p "$OUT" "$EXTRA"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }

# --- what the build needs -------------------------------------------------
step "tools"
need=()
command -v $GNU-gcc >/dev/null 2>&1 || need+=(gcc-$GNU)
command -v $GNU-g++ >/dev/null 2>&1 || need+=(g++-$GNU)
[ -e /usr/$GNU/include/stdio.h ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v clang-16 >/dev/null 2>&1 || need+=(clang-16)
# The arm64 OpenMP runtime fetched below is the version of the host's.
dpkg-query -W -f='${Status}' libomp5-16 2>/dev/null | grep -q "ok installed" || need+=(libomp-16-dev)
if [ "${#need[@]}" -gt 0 ]; then
  echo "aarch64-check: installing Debian packages: ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
rustup target list --installed | grep -qx $TRIPLE || rustup target add $TRIPLE

# clang's OpenMP runtime for arm64, the same version as the host's.
if [ ! -e "$EXTRA/usr/lib/llvm-16/lib/libomp.so.5" ]; then
  v=$(dpkg-query -W -f='${Version}' libomp5-16 | sed 's/^[0-9]*://')
  deb="$EXTRA/libomp5-16_${v}_arm64.deb"
  curl -sSfL -o "$deb" "http://deb.debian.org/debian/pool/main/l/llvm-toolchain-16/libomp5-16_${v}_arm64.deb"
  dpkg-deb -x "$deb" "$EXTRA"
fi
ln -sfn libomp.so.5 "$EXTRA/usr/lib/llvm-16/lib/libomp.so"

# One CMake toolchain file: llama.cpp is compiled by clang-16 for aarch64
# against Debian's cross C library; OpenMP is clang's (libomp), as on x86.
cat > "$EXTRA/toolchain.cmake" <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER clang-16)
set(CMAKE_CXX_COMPILER clang++-16)
set(CMAKE_C_COMPILER_TARGET $GNU)
set(CMAKE_CXX_COMPILER_TARGET $GNU)
set(CMAKE_FIND_ROOT_PATH /usr/$GNU $EXTRA)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(OpenMP_C_FLAGS "-fopenmp=libomp")
set(OpenMP_CXX_FLAGS "-fopenmp=libomp")
set(OpenMP_C_LIB_NAMES "omp")
set(OpenMP_CXX_LIB_NAMES "omp")
set(OpenMP_omp_LIBRARY $EXTRA/usr/lib/llvm-16/lib/libomp.so)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-fuse-ld=bfd -L$EXTRA/usr/lib/llvm-16/lib")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-fuse-ld=bfd -L$EXTRA/usr/lib/llvm-16/lib")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-fuse-ld=bfd -L$EXTRA/usr/lib/llvm-16/lib")
EOF

# --- the build ------------------------------------------------------------
XBIN="$XTARGET/$TRIPLE/release"
if [ -z "${AULA_AARCH64_SKIP_BUILD:-}" ]; then
  step "cargo build --target $TRIPLE (llama.cpp's Arm variants included; the first build takes long)"
  export CARGO_TARGET_DIR="$XTARGET"
  export CMAKE_TOOLCHAIN_FILE_aarch64_unknown_linux_gnu="$EXTRA/toolchain.cmake"
  export CC_aarch64_unknown_linux_gnu=clang-16 CXX_aarch64_unknown_linux_gnu=clang++-16
  export CFLAGS_aarch64_unknown_linux_gnu="--target=$GNU" CXXFLAGS_aarch64_unknown_linux_gnu="--target=$GNU"
  export AR_aarch64_unknown_linux_gnu=$GNU-ar
  # The linker: Debian's cross GCC, told where libomp is (llama.cpp's
  # libraries need it at link time). A wrapper, not RUSTFLAGS, which would
  # rebuild every crate when changed. Its name ends in -gcc: rustc passes
  # linker options in the form GCC takes them.
  printf '#!/bin/sh\nexec %s -Wl,-rpath-link,%s "$@"\n' "$GNU-gcc" "$EXTRA/usr/lib/llvm-16/lib" > "$EXTRA/aarch64-link-gcc"
  chmod +x "$EXTRA/aarch64-link-gcc"
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$EXTRA/aarch64-link-gcc"
  export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=$GNU"
  cargo build --release --locked --target $TRIPLE -p aula --bin aula
  export CARGO_TARGET_DIR="$HOST_TARGET_DIR"
fi
[ -x "$XBIN/aula" ] || { echo "aarch64-check: no $XBIN/aula (build first)"; exit 2; }
file "$XBIN/aula" | grep -q 'ARM aarch64' || { echo "aarch64-check: $XBIN/aula is not an aarch64 binary"; exit 1; }
ls "$XBIN"/libggml-cpu-*.so | sed 's|.*/||' | tr '\n' ' '; echo
step "built"

# --- under emulation --------------------------------------------------------
# qemu-user runs the aarch64 binaries with Debian's arm64 C library as their
# root (QEMU_LD_PREFIX), llama.cpp's libraries from beside `aula` ($ORIGIN)
# and libomp from the private sysroot. QEMU_CPU picks the core emulated; its
# features reach the program through the auxiliary vector, as on a real one.
export QEMU_LD_PREFIX=/usr/$GNU
ARM_LD="$EXTRA/usr/lib/llvm-16/lib"
arm() { local cpu=$1; shift; env QEMU_CPU="$cpu" LD_LIBRARY_PATH="$ARM_LD" qemu-aarch64-static "$@"; }
fail=0
: > "$OUT/variants.md"
echo "| qemu -cpu | features (HWCAP) | in use | ggml's rule | doctor |" >> "$OUT/variants.md"
echo "|---|---|---|---|---|" >> "$OUT/variants.md"
for cpu in $CPUS; do
  step "aula doctor, -cpu $cpu"
  s0=$(date +%s.%N)
  if ! arm "$cpu" "$XBIN/aula" doctor > "$OUT/doctor-$cpu.txt" 2>&1; then
    echo "aarch64-check: aula doctor failed under -cpu $cpu:"; tail -20 "$OUT/doctor-$cpu.txt"; fail=1; continue
  fi
  secs=$(echo "$(date +%s.%N) - $s0" | bc)
  grep -E '^(cpu variant|features|arm|             )' "$OUT/doctor-$cpu.txt" | sed 's/^/  /'
  used=$(sed -n 's/^cpu variant: \([^ ]*\) .*/\1/p' "$OUT/doctor-$cpu.txt")
  feats=$(sed -n 's/^arm: *this CPU has \(.*\) (the kernel.*/\1/p' "$OUT/doctor-$cpu.txt")
  rule=$(grep -oE "picks [^ ]+ \(score [0-9]+\)|would pick [^ ]+ \(score [0-9]+\)" "$OUT/doctor-$cpu.txt" | head -1)
  if grep -q "picks $used (score [0-9]*): in use" "$OUT/doctor-$cpu.txt"; then verdict=ok; else verdict=MISMATCH; fail=1; fi
  printf '| %s | %s | %s | %s | %s (%.1f s) |\n' "$cpu" "$feats" "$used" "$rule" "$verdict" "$secs" >> "$OUT/variants.md"
done
cat "$OUT/variants.md"

step "aula plan llama-3.1-8b --detect, -cpu max"
if arm max "$XBIN/aula" plan llama-3.1-8b --detect > "$OUT/plan-detect.txt" 2>&1; then
  grep -iE "machine|hardware|memory|cores" "$OUT/plan-detect.txt" | head -4 | sed 's/^/  /'
else
  echo "aarch64-check: aula plan --detect failed:"; cat "$OUT/plan-detect.txt"; fail=1
fi

# --- a chat completion on both builds: the first 32 greedy tokens ------------
MODELS="${AULA_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/aula}/models"
SMOL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$SMOL" ] || { echo "aarch64-check: $SMOL is missing (bash scripts/setup.sh fetches it)"; exit 2; }
ENGINE_CPU="${AULA_QEMU_ENGINE_CPU:-neoverse-n1}"
X86_PORT=$((20000 + RANDOM % 20000)); ARM_PORT=$((X86_PORT + 1))
HOST_AULA="$HOST_TARGET_DIR/release/aula"
[ -x "$HOST_AULA" ] || { echo "aarch64-check: no $HOST_AULA: build the x86-64 binary first (scripts/setup.sh)"; exit 2; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
env -u AULA_CPU_VARIANT "$HOST_AULA" engine --model "$SMOL" --name smol --port $X86_PORT --parallel 1 --threads 1 --context 512 > "$OUT/engine-x86.log" 2>&1 &
pids+=($!)
step "aula engine under -cpu $ENGINE_CPU (loading SmolLM2 emulated takes a while)"
s0=$(date +%s)
arm "$ENGINE_CPU" "$XBIN/aula" engine --model "$SMOL" --name smol --port $ARM_PORT --parallel 1 --threads 1 --context 512 > "$OUT/engine-arm.log" 2>&1 &
pids+=($!)
ready() { curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1; }
# Wait for each engine's health to answer (or its process to end).
for port_pid in "$X86_PORT:${pids[0]}" "$ARM_PORT:${pids[1]}"; do
  port=${port_pid%%:*}; pid=${port_pid##*:}
  until ready "$port"; do
    kill -0 "$pid" 2>/dev/null || { echo "aarch64-check: the engine on port $port ended:"; tail -20 "$OUT"/engine-*.log; exit 1; }
    sleep 1
  done
done
step "both engines ready (the emulated one after $(( $(date +%s) - s0 )) s)"
grep -m1 "CPU backend" "$OUT/engine-arm.log" | sed 's/^.*llama.cpp/  llama.cpp/'
ask() {
  curl -sf "http://127.0.0.1:$1/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model": "smol", "messages": [{"role": "user", "content": "Name three colours of the rainbow."}], "max_tokens": 32, "temperature": 0}'
}
s0=$(date +%s.%N)
ask $X86_PORT > "$OUT/answer-x86.json"
ask $ARM_PORT > "$OUT/answer-arm.json"
emu_s=$(echo "$(date +%s.%N) - $s0" | bc)
python3 - "$OUT" "$X86_PORT" <<'PY'
import json, sys, urllib.request
out, port = sys.argv[1], sys.argv[2]
def text(name):
    return json.load(open(f"{out}/answer-{name}.json"))["choices"][0]["message"]["content"]
def tokens(t):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/tokenize", data=json.dumps({"content": t}).encode(),
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["tokens"]
x, a = text("x86"), text("arm")
tx, ta = tokens(x), tokens(a)
n = min(32, len(tx), len(ta))
same = next((i for i in range(n) if tx[i] != ta[i]), None)
print(f"  x86-64:  {x!r}")
print(f"  aarch64: {a!r}")
if same is None and len(tx) == len(ta):
    print(f"  the first {len(tx)} greedy tokens are the same on both builds")
    open(f"{out}/tokens.txt", "w").write(f"same {len(tx)}\n")
else:
    i = same if same is not None else n
    print(f"  the greedy tokens part at token {i} of {len(tx)}/{len(ta)}: "
          f"x86 {tx[i:i+3]} vs aarch64 {ta[i:i+3]} (float sums in another order on other kernels)")
    open(f"{out}/tokens.txt", "w").write(f"differ {i}\n")
PY
step "chat completion on both: $emu_s s"
step "done ($( [ $fail -eq 0 ] && echo passed || echo FAILED ))"
exit $fail
