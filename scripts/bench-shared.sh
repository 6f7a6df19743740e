#!/usr/bin/env bash
# What shared budgets cost: the access path (keys, a day budget and a
# requests-per-minute limit, the fair queue, the ledger) in front of
# openai-mock, with the counters in memory (one gateway on SQLite) and in
# PostgreSQL (one gateway, then two gateways on the same database sharing
# the load), PostgreSQL with no limits (the ledger's own cost), and the
# mock alone as the anchor, in the same rounds. Also the
# database's transactions and row updates per request (pg_stat_database).
# Closed loop: each connection sends its next request when the last one is
# answered. PostgreSQL is Debian's (scripts/test-installs.sh installs it),
# started here on loopback with fsync on.
# Usage: bash scripts/bench-shared.sh   (after scripts/setup.sh)
#        PG_DELAY_MS=0.5 bash scripts/bench-shared.sh   (PostgreSQL 1 ms away)
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
MOCK_PORT=${MOCK_PORT:-19300}
N=${N:-20000}
ROUNDS=${ROUNDS:-2}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
chmod 755 "$work"
PGPORT=${PGPORT:-19310}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$work/pg" -m immediate stop > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$PGBIN/initdb" -A trust -U aula -D "$work/pg" > /dev/null
as_pg "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $PGPORT -k $work/pg -c listen_addresses=127.0.0.1" start > /dev/null
DB="postgres://aula@127.0.0.1:$PGPORT/postgres"
# PG_DELAY_MS=D: the gateways reach PostgreSQL through a proxy that delays
# each direction by D ms (a network with a 2D ms round trip; psql and the
# CLI go straight).
if [ -n "${PG_DELAY_MS:-}" ]; then
  python3 scripts/delay_proxy.py $((PGPORT + 1)) 127.0.0.1 "$PGPORT" "$PG_DELAY_MS" > "$work/proxy.log" 2>&1 &
  for _ in $(seq 50); do grep -q listening "$work/proxy.log" 2>/dev/null || grep -q "delay proxy" "$work/proxy.log" && break; sleep 0.1; done
  DB="postgres://aula@127.0.0.1:$((PGPORT + 1))/postgres"
  echo "PostgreSQL behind a delay of $PG_DELAY_MS ms each way"
fi
psql_q() { "$PGBIN/psql" -qtA -h 127.0.0.1 -p "$PGPORT" -U aula postgres -c "$1"; }

limits='[[limits]]\nrole = "student"\ntokens_per_day = 1000000000\nrequests_per_minute = 1000000\n'
model=$(printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:%s/v1"\nparallel = 64\n' "$MOCK_PORT")
# home NAME [DATABASE [LIMITS]]: a data directory and its aula.toml.
home() {
  local lim=${3-$limits}
  mkdir -p "$work/$1"
  # one_scheduler = false: both gateways serve (users hashed to gateways),
  # so the load can be split between them.
  { [ -n "${2:-}" ] && printf '[server]\ndatabase = "%s"\none_scheduler = false\n\n' "$2"; printf '%s\n\n' "$model"; printf "$lim"; } > "$work/$1/aula.toml"
}
home lite
home pg1 "$DB"
home pg2 "$DB"
# The same database with no limits: no counters, only the ledger (what
# PostgreSQL costs before the shared counters).
home pg0 "$DB" ""
for h in lite pg1; do
  : > "$work/$h.keys"
  for u in $(seq 1 16); do
    AULA_HOME="$work/$h" $B users add "student$u" > /dev/null 2>&1
    AULA_HOME="$work/$h" $B keys create "student$u" 2> /dev/null >> "$work/$h.keys"
  done
done
./target/release/openai-mock "$MOCK_PORT" > /dev/null &
AULA_HOME="$work/lite" $B serve --port 19301 > "$work/lite.log" 2>&1 &
AULA_HOME="$work/pg1" $B serve --port 19302 > "$work/pg1.log" 2>&1 &
AULA_HOME="$work/pg2" $B serve --port 19303 > "$work/pg2.log" 2>&1 &
AULA_HOME="$work/pg0" $B serve --port 19304 > "$work/pg0.log" 2>&1 &
for p in 19301 19302 19303 19304; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" > /dev/null && break; sleep 0.2; done
done
bench() { # URL CONN KEYS LABEL
  $B bench --url "$1" --model mock --users "$2" --concurrency "$2" --requests "$N" ${3:+--keys "$3"} --json \
    | python3 scripts/bench_summary.py "$4" gateway
}
stat() { psql_q "SELECT xact_commit, tup_updated + tup_inserted + tup_deleted FROM pg_stat_database WHERE datname = 'postgres'"; }
for round in $(seq "$ROUNDS"); do
  for c in 1 16; do
    bench "http://127.0.0.1:$MOCK_PORT" "$c" "" "mock direct, $c conn"
    bench "http://127.0.0.1:19301" "$c" "$work/lite.keys" "one gateway, SQLite (counters in memory), $c conn"
    bench "http://127.0.0.1:19304" "$c" "$work/pg1.keys" "one gateway, PostgreSQL, no limits (ledger only), $c conn"
    before=$(stat)
    bench "http://127.0.0.1:19302" "$c" "$work/pg1.keys" "one gateway, PostgreSQL (shared counters), $c conn"
    after=$(stat)
    python3 - "$before" "$after" "$N" <<'EOF'
import sys
b = [int(x) for x in sys.argv[1].split("|")]
a = [int(x) for x in sys.argv[2].split("|")]
n = int(sys.argv[3])
print(f"  database per request: {(a[0]-b[0])/n:.1f} transactions, {(a[1]-b[1])/n:.1f} rows written")
EOF
    if [ "$c" = 16 ]; then
      # Two gateways on one database, 8 connections each, at once.
      half=$((N / 2))
      t0=$(date +%s.%N)
      N=$half bench "http://127.0.0.1:19302" 8 "$work/pg1.keys" "two gateways, PostgreSQL: gateway 1, 8 conn" &
      one=$!
      N=$half bench "http://127.0.0.1:19303" 8 "$work/pg1.keys" "two gateways, PostgreSQL: gateway 2, 8 conn" &
      two=$!
      wait "$one" "$two"
      python3 -c "import sys; print(f'  two gateways together: {int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.0f} requests/s (wall clock)')" "$N" "$t0" "$(date +%s.%N)"
    fi
  done
done
echo "ledger rows (PostgreSQL): $(AULA_HOME="$work/pg1" $B usage --json | python3 -c 'import json,sys; print(sum(r["requests"] for r in json.load(sys.stdin)))')"
echo "reservations left held: $(psql_q 'SELECT count(*) FROM budget_reservations')"
