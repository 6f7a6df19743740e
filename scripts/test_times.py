#!/usr/bin/env python3
"""One line per test binary from a `cargo test` log: tests passed, failed,
ignored and the binary's wall time (libtest's "finished in").

  python3 scripts/test_times.py LOG
"""
import re
import sys

rows, current = [], None
passed = failed = 0
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"\s+Running (unittests )?(\S+)(?: \(.*/deps/([A-Za-z0-9_]+)-[0-9a-f]+\))?", line)
    if m:
        # Unit tests are named by their crate (every one is src/lib.rs).
        current = f"{m.group(3)} ({m.group(2)})" if m.group(1) and m.group(3) else m.group(2)
        continue
    m = re.match(r"\s+Doc-tests (\S+)", line)
    if m:
        current = "doc-tests " + m.group(1)
        continue
    m = re.match(r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored;.*finished in ([\d.]+)s", line)
    if m and current:
        rows.append((current, int(m.group(2)), int(m.group(3)), int(m.group(4)), float(m.group(5))))
        passed += int(m.group(2))
        failed += int(m.group(3))
        current = None
for name, p, f, i, secs in sorted(rows, key=lambda r: -r[4]):
    if p or f:
        print(f"    {secs:7.1f} s  {p:4d} passed {f:3d} failed  {name}")
print(f"  test binaries: {len(rows)}")
print(f"tests: {passed} passed, {failed} failed")
