#!/usr/bin/env python3
"""A flat perf profile grouped by what the time is spent on.

Usage: perf report -i FILE --stdio --no-children --sort dso,sym -g none | python3 scripts/perf_groups.py LABEL
Prints one line per group (share of the process's samples), biggest first,
then the 15 biggest symbols.
Groups: the kernel's scheduling (context switches, wakes) apart from the
rest of the kernel (TCP on loopback, epoll, system calls); libc (malloc,
free, memcpy); and, inside Aula's binary, hyper/http, tokio, JSON, the
ledger (SQLite and the journal), the gateway's own stages, the rest.
"""
import re
import sys
from collections import defaultdict

SCHED = re.compile(r"finish_task_switch|_raw_spin_unlock_irq|__schedule|schedule|try_to_wake_up|"
                   r"futex|ttwu|enqueue_|dequeue_|select_task_rq|pick_next|update_curr|switch_|__switch_to|"
                   r"psi_|native_sched_clock|idle")
RULES = [
    ("hyper, http (server and client)", re.compile(r"^<?(hyper|http|httparse|http_body|hyper_util|h2|axum|tower)")),
    ("tokio (tasks, I/O driver, timers)", re.compile(r"^<?(tokio|mio)")),
    ("JSON: parsing and checking the body", re.compile(r"^<?(serde_json|serde|aula_protocol)")),
    ("ledger: journal and SQLite", re.compile(r"^<?(aula_store|rusqlite|sqlx|sqlite3|libsqlite)|^sqlite3|^pager|^btree|^vdbe", re.I)),
    ("gateway stages (auth, limits, queue, metrics)", re.compile(r"^<?(aula_gateway|aula_fleet|metrics|subtle|sha2)")),
]

groups = defaultdict(float)
top = []
total = 0.0
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
    if not m:
        continue
    pct, dso, kind, sym = float(m[1]), m[2], m[3], m[4].strip()
    total += pct
    if kind == "k" or dso.startswith("[kernel"):
        g = "kernel: scheduling and wakes" if SCHED.search(sym) else "kernel: TCP, epoll, system calls"
    elif dso.startswith("libc") or dso.startswith("ld-linux"):
        g = "libc (malloc, free, memcpy)"
    elif dso == "nginx":
        g = "nginx itself"
    else:
        g = next((name for name, rx in RULES if rx.search(sym)), f"other ({dso})")
    groups[g] += pct
    top.append((pct, sym[:70], g))
label = sys.argv[1] if len(sys.argv) > 1 else ""
print(f"{label}: {total:.0f}% of samples grouped")
for g, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
    print(f"  {pct:5.1f}%  {g}")
print("  the 15 biggest symbols:")
for pct, sym, g in sorted(top, reverse=True)[:15]:
    print(f"    {pct:5.1f}%  {sym}  [{g}]")
