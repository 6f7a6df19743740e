#!/usr/bin/env python3
"""How long one crate's build took, from cargo's newest --timings report.

  python3 scripts/cargo_timings.py CRATE [TARGET_DIR]

Prints e.g. "1432 s (build script run 1398 s)" for llama-cpp-sys-2, whose
build script is llama.cpp's CMake build, or nothing (exit 1) when the newest
report did not build CRATE (it was already built).
"""
import glob
import json
import os
import re
import sys

crate = sys.argv[1]
target = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("CARGO_TARGET_DIR", "target")
reports = sorted(glob.glob(os.path.join(target, "cargo-timings", "cargo-timing-*.html")), key=os.path.getmtime)
if not reports:
    sys.exit(1)
html = open(reports[-1], encoding="utf-8").read()
m = re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S)
if not m:
    sys.exit(1)
units = [u for u in json.loads(m.group(1)) if u.get("name") == crate]
if not units:
    sys.exit(1)
total = sum(u.get("duration", 0) for u in units)
run = sum(u.get("duration", 0) for u in units if u.get("mode") == "run-custom-build")
if total < 1:
    sys.exit(1)  # listed, but fresh: not built by this run
print(f"{total:.0f} s (build script run {run:.0f} s)")
