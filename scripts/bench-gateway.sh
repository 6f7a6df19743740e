#!/usr/bin/env bash
# Gateway overhead: `aula serve` in front of openai-mock with the access path
# on (16 students with their own keys, a day budget and a requests-per-minute
# limit, the fair queue, the ledger on SQLite), against the mock directly and
# against nginx as a plain reverse proxy (keep-alive to the mock), in the
# same rounds. Prints requests/s and p50/p99 for 16 connections and for 1,
# and the CPU each proxy spent per request (from /proc, its own process).
# Usage: bash scripts/bench-gateway.sh   (after scripts/setup.sh; nginx from
#        Debian's nginx-light, skipped with a note when it is not installed)
# With BASE=path/to/another/aula, that build's gateway is measured in the
# same rounds (on BASE_PORT), for before/after comparisons; B (default
# target/release/aula) is the build measured as "aula serve". Both must sit
# beside the ggml libraries they were linked with (copy a saved build into
# target/release, e.g. target/release/aula-base): elsewhere they do not
# start.
# With TABS=N, each round also measures a gateway with no users (open on
# loopback, so that `curl` may hold the teachers' live view; no keys or
# limits) at 16 connections while N web pages hold their live view open (N
# `/events` streams, as N browser tabs), against the same gateway with none.
# ROUNDS (3), N (40,000 requests at 16 connections; a quarter at 1).
# With PROFILE=C (after the rounds): nginx and the gateway each profiled
# (`perf record -F 999`, flat, Debian's linux-perf) over one more line at C
# connections, with their context switches per request (all threads, from
# /proc), and the profile grouped by scripts/perf_groups.py.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-./target/release/aula}
MOCK_PORT=${MOCK_PORT:-19000}
GW_PORT=${GW_PORT:-19001}
NGINX_PORT=${NGINX_PORT:-19003}
ROUNDS=${ROUNDS:-3}
N=${N:-40000}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$home/nginx.pid" ] && kill "$(cat "$home/nginx.pid")" 2>/dev/null; rm -rf "$home"' EXIT
mkdir -p "$home/gw"
printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:%s/v1"\nparallel = 64\n\n[[limits]]\nrole = "student"\ntokens_per_day = 1000000000\nrequests_per_minute = 1000000\n' \
  "$MOCK_PORT" > "$home/gw/aula.toml"
: > "$home/keys"
for u in $(seq 1 16); do
  AULA_HOME="$home/gw" $B users add "student$u" > /dev/null 2>&1
  AULA_HOME="$home/gw" $B keys create "student$u" 2> /dev/null >> "$home/keys"
done
./target/release/openai-mock "$MOCK_PORT" > /dev/null &
BASE_PID=
if [ -n "${BASE:-}" ]; then
  BASE_PORT=${BASE_PORT:-19002}
  mkdir -p "$home/base"
  # The same users and keys.
  cp "$home/gw/aula.toml" "$home/gw/aula.db"* "$home/base/"
  AULA_HOME="$home/base" "$BASE" serve --port "$BASE_PORT" > "$home/base.log" 2>&1 &
  BASE_PID=$!
fi
AULA_HOME="$home/gw" $B serve --port "$GW_PORT" > "$home/gw.log" 2>&1 &
GW_PID=$!
if [ -n "${TABS:-}" ]; then
  OPEN_PORT=${OPEN_PORT:-19004}
  mkdir -p "$home/open"
  printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:%s/v1"\nparallel = 64\n' "$MOCK_PORT" > "$home/open/aula.toml"
  AULA_HOME="$home/open" $B serve --port "$OPEN_PORT" > "$home/open.log" 2>&1 &
  OPEN_PID=$!
fi
. scripts/nginx-proxy.sh
nginx_proxy "$home" "$NGINX_PORT" "$MOCK_PORT" 64
for p in "$GW_PORT" ${BASE_PORT:-} ${OPEN_PORT:-}; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" > /dev/null && break; sleep 0.2; done
done
ticks() { if [ -n "$1" ]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi; }
# measure LABEL PORT CONN REQUESTS PID [KEYS]
measure() {
  local t0 t1
  t0=$(ticks "$5")
  $B bench --url "http://127.0.0.1:$2" --model mock --users "$3" --concurrency "$3" --requests "$4" \
    ${6:+--keys "$6"} --json | python3 scripts/bench_summary.py "$1" gateway
  t1=$(ticks "$5")
  # Clock ticks are 10 ms.
  [ -n "$5" ] && echo "    CPU per request: $(( (t1 - t0) * 10000 / $4 )) us"
  return 0
}
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for c in 16 1; do
    n=$(( c == 16 ? N : N / 4 ))
    measure "mock direct, $c conn" "$MOCK_PORT" $c $n ""
    [ -n "$NGINX_PID" ] && measure "nginx, $c conn" "$NGINX_PORT" $c $n "$NGINX_PID"
    measure "aula serve, $c conn" "$GW_PORT" $c $n "$GW_PID" "$home/keys"
    if [ -n "${BASE:-}" ]; then
      measure "BASE aula serve, $c conn" "$BASE_PORT" $c $n "$BASE_PID" "$home/keys"
    fi
    if [ -n "${TABS:-}" ] && [ "$c" = 16 ]; then
      measure "aula serve, no users, $c conn" "$OPEN_PORT" $c $n "$OPEN_PID"
      tabs=()
      for _ in $(seq "$TABS"); do
        curl -sN "http://127.0.0.1:$OPEN_PORT/events" > /dev/null &
        tabs+=($!)
      done
      sleep 2
      measure "aula serve, no users, $c conn, $TABS live pages open" "$OPEN_PORT" $c $n "$OPEN_PID"
      kill "${tabs[@]}" 2>/dev/null || true
      wait "${tabs[@]}" 2>/dev/null || true
    fi
  done
done
if [ -n "${PROFILE:-}" ]; then
  c=$PROFILE
  n=$(( c == 16 ? N : N / 4 ))
  # Context switches of every thread of a process, voluntary or not.
  switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
  for who in nginx aula; do
    if [ $who = nginx ]; then pid=$NGINX_PID port=$NGINX_PORT keys=""; else pid=$GW_PID port=$GW_PORT keys="$home/keys"; fi
    [ -n "$pid" ] || continue
    s0=$(switches "$pid")
    perf record -F 999 -p "$pid" -o "$home/$who.perf" > /dev/null 2>&1 &
    perf_pid=$!
    sleep 1
    measure "$who profiled, $c conn" "$port" "$c" "$n" "$pid" $keys
    kill -INT $perf_pid; wait $perf_pid 2>/dev/null || true
    s1=$(switches "$pid")
    echo "    context switches per request: $(python3 -c "print(round(($s1 - $s0) / $n, 2))")"
    perf report -i "$home/$who.perf" --stdio --no-children --sort dso,sym -g none 2>/dev/null \
      | python3 scripts/perf_groups.py "$who, $c conn"
  done
fi
