#!/usr/bin/env python3
"""One line from an `aula bench --json` report on stdin: bench_summary.py LABEL [engine|gateway]."""
import json
import sys

r = json.load(sys.stdin)
label = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "engine"
errors = sum(r["errors"].values())
if kind == "gateway":
    e = r["e2e"]
    print(f"{label:<30} {r['requests_per_s']:>9.0f} req/s  p50 {e['p50_ms'] * 1000:>6.0f} us  "
          f"p99 {e['p99_ms'] * 1000:>6.0f} us  errors {errors}")
else:
    itl, ttft = r["itl"], r["ttft"]
    print(f"{label:<44} {r['output_tokens_per_s']:>7.1f} out tok/s  itl p50 {itl['p50_ms']:>6.2f} ms  "
          f"ttft p50 {ttft['p50_ms']:>7.1f} ms  tokens {r['completion_tokens']}  errors {errors}")
