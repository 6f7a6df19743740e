# Sourced by setup.sh and test.sh: the C/C++ compiler llama.cpp is built with.
#
# llama.cpp's AMX kernels (Intel Xeon 4th gen and later: much faster prompt
# processing) need a compiler that both defines __AMX_INT8__ for -mamx-int8
# and keeps the tile set-up: GCC 12 (Debian 12's default) drops the stores of
# the tile shapes before _tile_loadconfig, so the kernel faults, and clang 14
# does not define __AMX_INT8__, so ggml leaves AMX out. clang 16 does both,
# and so do later ones. With one of them (and its OpenMP runtime) Aula is
# built with clang: clang 16 where it is installed (Debian 12's), else the
# newest from 17 to 22 (Debian 13 has 19, Ubuntu 24.04 18); without one,
# with the default compiler, and `aula engine` simply never uses AMX (its
# probe says so in `aula doctor`). Every build runs on any x86-64 CPU.
#
# The same choice must be made for every cargo command of one target
# directory: a changed CC/CXX makes cargo rebuild llama.cpp.
if [ -z "${CC:-}" ]; then
  for v in 16 22 21 20 19 18 17; do
    if command -v "clang-$v" >/dev/null 2>&1 && command -v "clang++-$v" >/dev/null 2>&1 \
       && ls /usr/lib/llvm-"$v"/lib/libomp.so* >/dev/null 2>&1; then
      export CC="clang-$v" CXX="clang++-$v"
      break
    fi
  done
fi

# One Cargo target directory per machine, shared by every clone of Aula on
# it (CI builds a fresh clone each time): llama.cpp and the crates are then
# compiled once per machine and compiler, and a later clone rebuilds only
# what changed. `target` in the checkout is a link to it, so
# `target/release/aula` is where the README says. Nothing depends on it
# being there: an empty directory only means a full build. A checkout that
# already has a real `target/` directory keeps using it; CARGO_TARGET_DIR
# or AULA_TARGET_DIR, when set, win.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if [ -d target ] && [ ! -L target ]; then
    export CARGO_TARGET_DIR="$PWD/target"
  else
    export CARGO_TARGET_DIR="${AULA_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aula/target}"
    mkdir -p "$CARGO_TARGET_DIR"
    ln -sfn "$CARGO_TARGET_DIR" target
  fi
elif [ ! -e target ] && [ "$(realpath -m "$CARGO_TARGET_DIR")" != "$(realpath -m target)" ]; then
  # Set from outside: `target` points there too, for the scripts.
  mkdir -p "$CARGO_TARGET_DIR"
  ln -s "$(realpath -m "$CARGO_TARGET_DIR")" target
fi

# Cargo decides that a workspace crate is up to date by comparing its
# sources' modification times with the last build's outputs. With one target
# directory for several checkouts, a file edited in this checkout before
# another checkout's build would look older than that build, and this
# checkout's change would not be compiled. So when the target directory was
# last used by another checkout, this checkout's sources are touched: its
# crates are rebuilt (as a fresh clone's are anyway), the dependencies and
# llama.cpp are not.
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -d crates ]; then
  mkdir -p "$CARGO_TARGET_DIR"
  marker="$CARGO_TARGET_DIR/.aula-last-checkout"
  if [ "$(cat "$marker" 2>/dev/null)" != "$PWD" ]; then
    find crates -type f -not -path '*/target/*' -exec touch {} + 2>/dev/null || true
    echo "$PWD" > "$marker"
  fi
fi
