#!/usr/bin/env python3
"""One line from an `aula bench --json` report on stdin: bench_summary.py LABEL [engine|gateway|fairness]."""
import json
import sys

r = json.load(sys.stdin)
label = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "engine"
errors = sum(r["errors"].values())
if kind == "fleet":
    t, i = r["ttft"], r["itl"]
    print(f"{label:<52} ttft p50 {t['p50_ms']:>7.1f}  p95 {t['p95_ms']:>7.1f}  max {t['max_ms']:>7.1f} ms  "
          f"itl p50 {i['p50_ms']:>6.2f}  p99 {i['p99_ms']:>6.2f}  max {i['max_ms']:>7.2f} ms  out tok/s {r['output_tokens_per_s']:>5.1f}  errors {errors}")
elif kind == "fairness":
    heavy = r.get("heavy_user_ttft")
    # Without a heavy user to split off, every user is of one kind: a run of
    # the light users alone, or of the heavy user alone.
    light = r.get("other_users_ttft") or r["ttft"]
    who = "light" if heavy or r["users"] > 1 else "heavy"
    per = r["per_user"]
    heavy_tokens = per[0]["completion_tokens"] if heavy else 0
    print(f"{label:<42} {who} ttft p50 {light['p50_ms']:>8.0f} ms  p95 {light['p95_ms']:>8.0f} ms  "
          f"heavy ttft p95 {(heavy or {}).get('p95_ms', 0):>8.0f} ms  out tok/s {r['output_tokens_per_s']:>6.1f}  "
          f"heavy share {heavy_tokens / max(1, r['completion_tokens']):>4.0%}  e2e p50 {r['e2e']['p50_ms']:>6.0f} ms  "
          f"prompt tok/s {r['prompt_tokens'] / max(1e-9, r['duration_s']):>6.1f}  "
          f"cut at the end {r.get('requests_cut', 0)}  errors {errors}")
elif kind == "prefill":
    # Prompt tokens per second of time to first token (requests sent one at a time).
    t = r["ttft"]
    per_req = r["prompt_tokens"] / max(1, r["requests_ok"])
    print(f"{label:<44} prefill {per_req / (t['p50_ms'] / 1000):>8.1f} tok/s  "
          f"({per_req:.0f}-token prompt, ttft p50 {t['p50_ms']:.1f} ms)  errors {errors}")
elif kind == "gateway":
    e = r["e2e"]
    print(f"{label:<30} {r['requests_per_s']:>9.0f} req/s  p50 {e['p50_ms'] * 1000:>6.0f} us  "
          f"p99 {e['p99_ms'] * 1000:>6.0f} us  errors {errors}" + (f" {r['errors']}" if errors else ""))
else:
    itl, ttft = r["itl"], r["ttft"]
    print(f"{label:<44} {r['output_tokens_per_s']:>7.1f} out tok/s  itl p50 {itl['p50_ms']:>6.2f} ms  "
          f"ttft p50 {ttft['p50_ms']:>7.1f} ms  tokens {r['completion_tokens']}  errors {errors}")
