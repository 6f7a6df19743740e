#!/usr/bin/env bash
# A class at once through the gateway, against the same class sent straight
# to the engine in the same run (the anchor): STUDENTS students with their
# own keys, HEAVY of them asking for HEAVY_TOKENS-token answers back to back,
# the rest thinking THINK on average between questions of ANSWER tokens; all
# streamed. The engine is openai-mock with SLOTS slots at TOKEN_MS per token
# (first come, first served, like an engine's slots); the gateway has the
# same number of slots (`parallel`), a fair queue, limits and the ledger.
# Prints time to first token (p50/p95/p99) for the thinking students and
# the heavy ones, and the gateway's CPU per request and per streamed token.
# Usage: bash scripts/bench-class-gateway.sh   (after scripts/setup.sh)
# With BASE=path/to/another/aula, that build's gateway (same users, keys and
# engine) is measured in the same rounds, for before/after comparisons.
# With nginx installed (Debian's nginx-light), the same class also goes
# through nginx as a plain streaming proxy (one worker, keep-alive to the
# engine, `proxy_buffering off` so that each token is relayed as it comes):
# the floor for a proxy's CPU per streamed token on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/aula
STUDENTS=${STUDENTS:-200}
HEAVY=${HEAVY:-5}
HEAVY_TOKENS=${HEAVY_TOKENS:-800}
ANSWER=${ANSWER:-128}
THINK=${THINK:-10s}
SLOTS=${SLOTS:-64}
TOKEN_MS=${TOKEN_MS:-25}
SECONDS_EACH=${SECONDS_EACH:-60s}
ROUNDS=${ROUNDS:-2}
MOCK_PORT=${MOCK_PORT:-19500}
GW_PORT=${GW_PORT:-19501}
home=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$home/nginx.pid" ] && kill "$(cat "$home/nginx.pid")" 2>/dev/null; rm -rf "$home"' EXIT
printf '[[models]]\nname = "mock"\nurl = "http://127.0.0.1:%s/v1"\nparallel = %s\n\n[[limits]]\nrole = "student"\ntokens_per_day = 1000000000\nrequests_per_minute = 1000000\n' \
  "$MOCK_PORT" "$SLOTS" > "$home/aula.toml"
: > "$home/keys"
for u in $(seq 1 "$STUDENTS"); do
  AULA_HOME="$home" $B users add "student$u" > /dev/null 2>&1
  AULA_HOME="$home" $B keys create "student$u" 2> /dev/null >> "$home/keys"
done
./target/release/openai-mock "$MOCK_PORT" --token-ms "$TOKEN_MS" --follow-max-tokens --slots "$SLOTS" > /dev/null &
if [ -n "${BASE:-}" ]; then
  BASE_PORT=${BASE_PORT:-19502}
  mkdir -p "$home/base"
  cp "$home/aula.toml" "$home/aula.db"* "$home/base/"
  AULA_HOME="$home/base" "$BASE" serve --port "$BASE_PORT" > "$home/base.log" 2>&1 &
  BASE_PID=$!
fi
AULA_HOME="$home" $B serve --port "$GW_PORT" > "$home/serve.log" 2>&1 &
GW_PID=$!
NGINX_PORT=${NGINX_PORT:-19503}
. scripts/nginx-proxy.sh
nginx_proxy "$home" "$NGINX_PORT" "$MOCK_PORT" 256 "proxy_buffering off;"
for p in "$GW_PORT" ${BASE_PORT:-}; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/healthz" > /dev/null && break; sleep 0.2; done
done
class() { # URL [KEYS]
  $B bench --url "$1" --model mock --users "$STUDENTS" --think "$THINK" --heavy-users "$HEAVY" \
    --heavy-max-tokens "$HEAVY_TOKENS" --max-tokens "$ANSWER" --stream --duration "$SECONDS_EACH" \
    ${2:+--keys "$2"} --json
}
cat > "$home/summary.py" <<'EOF'
import json, sys
r = json.load(sys.stdin)
o, h = r["other_users_ttft"], r["heavy_user_ttft"]
errors = sum(r["errors"].values())
print(f"{sys.argv[1]:<14} students' ttft p50 {o['p50_ms']:>6.0f}  p95 {o['p95_ms']:>6.0f}  p99 {o['p99_ms']:>6.0f} ms   "
      f"heavy ttft p50 {h['p50_ms']:>6.0f}  p99 {h['p99_ms']:>6.0f} ms   {r['requests_ok']} answers, "
      f"{r['completion_tokens']} tokens, errors {errors}")
with open(sys.argv[2], "w") as f:
    print(r["requests_ok"], r["completion_tokens"], file=f)
EOF
summary() { python3 "$home/summary.py" "$1" "$home/last"; }
through() { # LABEL PORT PID [KEYS]
  local t0 t1 answers tokens
  t0=$(awk '{print $14 + $15}' "/proc/$3/stat")
  class "http://127.0.0.1:$2" ${4:-} | summary "$1"
  t1=$(awk '{print $14 + $15}' "/proc/$3/stat")
  read -r answers tokens < "$home/last"
  python3 -c "import sys; t, a, k = (int(x) for x in sys.argv[1:]); print(f'  proxy CPU: {t * 10 / max(a, 1):.2f} ms per request, {t * 10000 / max(k, 1):.1f} us per streamed token')" \
    "$((t1 - t0))" "$answers" "$tokens"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  class "http://127.0.0.1:$MOCK_PORT" | summary "direct"
  [ -n "$NGINX_PID" ] && through "through nginx" "$NGINX_PORT" "$NGINX_PID"
  through "through aula" "$GW_PORT" "$GW_PID" "$home/keys"
  [ -n "${BASE:-}" ] && through "through BASE" "$BASE_PORT" "$BASE_PID" "$home/keys"
done
