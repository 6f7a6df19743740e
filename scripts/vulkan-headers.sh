#!/usr/bin/env bash
# Vulkan headers new enough for llama.cpp's Vulkan backend, on a machine
# whose own are too old (Debian 12's libvulkan-dev is 1.3.239 and lacks
# VK_EXT_layer_settings). Fetches Debian 13's libvulkan-dev through apt —
# its own index, signed with Debian's archive key, kept under .cache/ — and
# unpacks only its headers into .cache/vulkan-headers/. Nothing is
# installed on the system: the loader library stays the machine's own (the
# headers are newer than the loader, which Vulkan allows). Prints the
# include directory; the build picks it up through CPATH
# (`AULA_VULKAN_INCLUDE` for scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${AULA_VULKAN_HEADERS_DIR:-$PWD/.cache/vulkan-headers}
inc=$dest/usr/include
if grep -q VK_EXT_layer_settings "$inc/vulkan/vulkan_core.h" 2>/dev/null; then
  echo "$inc"
  exit 0
fi
suite=${AULA_VULKAN_HEADERS_SUITE:-trixie}
work=$PWD/.cache/apt-$suite
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
  > "$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
      -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -q)
apt-get "${opts[@]}" update >&2
(cd "$work" && rm -f libvulkan-dev_*.deb && apt-get "${opts[@]}" download libvulkan-dev >&2)
rm -rf "$dest"
mkdir -p "$dest"
dpkg-deb -x "$work"/libvulkan-dev_*.deb "$dest"
if ! grep -q VK_EXT_layer_settings "$inc/vulkan/vulkan_core.h"; then
  echo "vulkan-headers: $suite's libvulkan-dev lacks VK_EXT_layer_settings too" >&2
  exit 1
fi
echo "vulkan-headers: $(grep -m1 '^#define VK_HEADER_VERSION ' "$inc/vulkan/vulkan_core.h") from Debian $suite, in $inc" >&2
echo "$inc"
