#!/usr/bin/env bash
# Soak test (not CI): SOAK_MINUTES (default 30) of mixed load against
# `aula serve` with the built-in SmolLM2 model as an embedded engine:
#   - `aula bench`, 8 users streaming and 4 users not, with API keys;
#   - a client that cancels streams half-way and sends bad requests;
#   - a key revoked a third of the way in (its user's bench client gets 401
#     and stops);
#   - the engine killed (SIGKILL) half-way (the fleet starts it again).
# At the end it reports the gateway's memory (RSS at start and end), checks
# that nothing leaked (the admin view: zero busy slots, zero queued, zero
# requests in flight, zero reserved tokens), and that the ledger has every
# answer the clients got (its `ok` rows are at least the successes the
# clients counted) and no request left `unfinished`.
#   bash scripts/soak.sh            (after scripts/setup.sh)
#   SOAK_MINUTES=5 bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
B="$PWD/target/release/aula"
MIN=${SOAK_MINUTES:-30}
PORT=${PORT:-19301}
URL="http://127.0.0.1:$PORT"
MODEL_FILE=$($B home | awk '/smollm2-135m-instruct.q4_1/ {print $NF}')
[ -f "$MODEL_FILE" ] || { echo "soak: run scripts/setup.sh first (no SmolLM2)"; exit 2; }
home=$(mktemp -d /tmp/aula-soak.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$home"' EXIT
export AULA_HOME="$home"
cat > "$home/aula.toml" <<EOF
[[models]]
name = "smol"
gguf = "$MODEL_FILE"
parallel = 4
context = 1024

[[limits]]
max_tokens = 64
EOF
$B users add admin --role admin > /dev/null 2>&1
ADMIN=$($B keys create admin 2> /dev/null)
: > "$home/keys"
for u in $(seq 1 12); do
  $B users add "s$u" > /dev/null 2>&1
  $B keys create "s$u" 2> /dev/null >> "$home/keys"
done
$B users add victim > /dev/null 2>&1
VICTIM=$($B keys create victim 2> /dev/null)
head -n 8 "$home/keys" > "$home/stream-keys"
{ tail -n 4 "$home/keys"; echo "$VICTIM"; } > "$home/plain-keys"

$B serve --port "$PORT" > "$home/serve.log" 2>&1 &
GW=$!
for _ in $(seq 1 240); do curl -sf "$URL/readyz" > /dev/null && break; sleep 0.5; done
curl -sf "$URL/readyz" > /dev/null || { echo "soak: the gateway did not become ready"; tail "$home/serve.log"; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$GW/status"; }
# One request first, so that start-up allocations are not counted as growth.
curl -sf "$URL/v1/chat/completions" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  -d '{"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}' > /dev/null
RSS0=$(rss)
echo "soak: $MIN min against $URL; gateway pid $GW, RSS ${RSS0} kB"

common=(--url "$URL" --model smol --prompt-tokens 48 --max-tokens 48 --duration "${MIN}m" --json)
$B bench "${common[@]}" --users 8 --stream --keys "$home/stream-keys" > "$home/stream.json" 2> "$home/stream.err" &
B1=$!
$B bench "${common[@]}" --users 5 --keys "$home/plain-keys" > "$home/plain.json" 2> "$home/plain.err" &
B2=$!

# Cancellations and bad requests, until the benches end.
KEY1=$(head -n 1 "$home/keys")
(
  while kill -0 $B1 2>/dev/null; do
    curl -s -m 0.7 -N "$URL/v1/chat/completions" -H "Authorization: Bearer $KEY1" -H 'Content-Type: application/json' \
      -d '{"model": "smol", "stream": true, "messages": [{"role": "user", "content": "Count to one hundred."}], "max_tokens": 64}' > /dev/null || true
    for bad in '{"model": "smol", "messages": [' '{"model": "smol", "messages": [], "n": 64}' \
               '{"model": "smol", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9223372036854775808}' \
               '{"model": "nope", "messages": [{"role": "user", "content": "x"}]}' '[]'; do
      curl -s -m 5 "$URL/v1/chat/completions" -H "Authorization: Bearer $KEY1" -H 'Content-Type: application/json' -d "$bad" > /dev/null || true
    done
    curl -s -m 5 "$URL/v1/chat/completions" -H 'Content-Type: application/json' -d '{}' > /dev/null || true
    sleep 1
  done
) &
T=$((MIN * 60))
sleep $((T / 3))
$B keys revoke victim > /dev/null 2>&1 && echo "soak: revoked the victim's key at $((T / 3))s"
sleep $((T / 2 - T / 3))
ENGINE=$(pgrep -P "$GW" | head -1 || true)
if [ -n "$ENGINE" ]; then kill -9 "$ENGINE" && echo "soak: killed the engine (pid $ENGINE) at $((T / 2))s"; fi
wait $B1 $B2 || true
sleep 5
RSS1=$(rss)
PS=$(curl -sf "$URL/admin/ps" -H "Authorization: Bearer $ADMIN")
METRICS=$(curl -sf "$URL/metrics" -H "Authorization: Bearer $ADMIN")
kill "$GW"; wait "$GW" 2>/dev/null || true
USAGE=$($B usage --by user --json)
python3 - "$RSS0" "$RSS1" "$PS" "$METRICS" "$USAGE" "$home/stream.json" "$home/plain.json" <<'EOF'
import json, sys
rss0, rss1, ps, metrics, usage = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
benches = [json.load(open(p)) for p in sys.argv[6:8]]
ok = True
print(f"soak: gateway RSS {rss0} kB at start, {rss1} kB at end ({(rss1 - rss0) / max(rss0, 1) * 100:+.1f}%)")
for m in ps["models"]:
    print(f"soak: {m['model']}: state {m['state']}, busy {m.get('busy')}, queued {m.get('queued')}")
    ok &= m.get("busy", 0) == 0 and m.get("queued", 0) == 0
print(f"soak: requests in flight {ps['requests_in_flight']}, reserved tokens {ps['reserved_tokens']}")
ok &= ps["requests_in_flight"] == 0 and ps["reserved_tokens"] == 0
by_status = {}
for l in metrics.splitlines():
    if l.startswith("aula_requests_total{"):
        status = l.split('status="', 1)[1].split('"', 1)[0]
        by_status[status] = by_status.get(status, 0) + round(float(l.rsplit(" ", 1)[1]))
print(f"soak: requests the gateway finished, by status: {dict(sorted(by_status.items()))}")
rows = sum(r.get("requests", 0) for r in usage)
ledger_ok = sum(r.get("ok", 0) for r in usage)
unfinished = sum(r.get("unfinished", 0) for r in usage)
clients_ok = sum(b["requests_ok"] for b in benches) + 1  # + the warm-up request
print(f"soak: ledger rows {rows}, of them ok {ledger_ok}, unfinished {unfinished}; successes the clients counted {clients_ok}")
ok &= ledger_ok >= clients_ok and unfinished == 0
for name, b in zip(("streaming", "whole"), benches):
    print(f"soak: bench {name}: {b['requests_ok']} ok, {b['requests_failed']} failed {dict(b['errors'])}, "
          f"{b['requests_per_s']:.1f} req/s over {b['duration_s']:.0f} s")
print("soak:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
EOF
