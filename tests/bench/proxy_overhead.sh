#!/usr/bin/env bash
# Benchmark: CPU the gateway spends per request, against nginx proxying the same DSM answer.
#
# Both proxies sit in front of the same standalone DSM simulator and get one worker each. wrk
# drives each for the same time; the figure that matters is CPU microseconds per request of
# the proxy process alone (from /proc), which does not depend on how fast the simulator is.
#   bash tests/bench/proxy_overhead.sh            (needs: wrk, nginx, curl; release build)
# Prints a table and the ratios gateway/nginx. It asserts nothing: numbers vary by machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${DURATION:-8s}"
CONNECTIONS="${CONNECTIONS:-32}"
BIN="${GATEWAY_BIN:-target/release/syno-chat-gateway}"
for tool in wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool (apt-get install $tool)"; exit 2; }
done
[ -x "$BIN" ] || cargo build --release --bin syno-chat-gateway

TMP="$(mktemp -d)"; chmod 0755 "$TMP"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1"; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Sum over a process and its children (nginx master + worker).
tree_ticks() { local t=0 p; for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }

SIM_PORT=$(free_port); GW_PORT=$(free_port); NGINX_PORT=$(free_port)
"$BIN" simulate --bind "127.0.0.1:$SIM_PORT" >"$TMP/sim.log" 2>&1 & PIDS+=($!)
wait_for "http://127.0.0.1:$SIM_PORT/webapi/query.cgi?api=SYNO.API.Info&version=1&method=query&query=all"

SYNOCHAT__STORE__URL="sqlite://$TMP/gateway.db" SYNOCHAT__RATE_LIMIT__ENABLED=false \
SYNOCHAT__SERVER__BIND="127.0.0.1:$GW_PORT" SYNOCHAT__SERVER__WORKERS=1 \
SYNOCHAT__UPSTREAM__URL="http://127.0.0.1:$SIM_PORT" SYNOCHAT__UPSTREAM__USERNAME=admin \
SYNOCHAT__UPSTREAM__PASSWORD=synology-demo SYNOCHAT__AUTH__DISABLED=true SYNOCHAT__LOG__LEVEL=warn \
  "$BIN" serve >"$TMP/gateway.log" 2>&1 & GW_PID=$!; PIDS+=($GW_PID)
wait_for "http://127.0.0.1:$GW_PORT/readyz"

# nginx's baseline request needs a DSM session of its own: log in once like a client would.
LOGIN=$(curl -fs "http://127.0.0.1:$SIM_PORT/webapi/entry.cgi" --data-urlencode api=SYNO.API.Auth -d version=7 \
  -d method=login -d account=admin -d passwd=synology-demo -d session=Chat -d format=sid -d enable_syno_token=yes)
SID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["sid"])' "$LOGIN")
TOKEN=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["synotoken"])' "$LOGIN")
SID_Q=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$SID")

cat >"$TMP/nginx.conf" <<CONF
daemon off; worker_processes 1; pid nginx.pid; error_log error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path cb; proxy_temp_path pt; fastcgi_temp_path ft; uwsgi_temp_path ut; scgi_temp_path st;
  upstream dsm { server 127.0.0.1:$SIM_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://dsm; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
nginx -p "$TMP" -c "$TMP/nginx.conf" -e stderr 2>"$TMP/nginx.err" & NGINX_PID=$!; PIDS+=($NGINX_PID)
NGINX_URL="http://127.0.0.1:$NGINX_PORT/webapi/entry.cgi?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=5&offset=0&_sid=$SID_Q"
wait_for "$NGINX_URL"

printf '%-44s %10s %12s %14s %8s\n' "target" "req/s" "p99 latency" "CPU µs/req" "bytes"
declare -A CPU
run() { # name pid url [header]
  local name=$1 pid=$2 url=$3 header=${4:-X-Bench: 1}
  local bytes; bytes=$(curl -fs -H "$header" "$url" | wc -c)
  local before; before=$(tree_ticks "$pid")
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "$header" "$url" >"$TMP/wrk.out"
  local after; after=$(tree_ticks "$pid")
  local reqs rps p99
  reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$TMP/wrk.out")
  local hz; hz=$(getconf CLK_TCK)
  local us; us=$(python3 -c "print(round(($after-$before)/$hz*1e6/$reqs, 1))")
  CPU[$name]=$us
  printf '%-44s %10s %12s %14s %8s\n' "$name" "$rps" "$p99" "$us" "$bytes"
}
run "nginx -> DSM Post.list (baseline)" "$NGINX_PID" "$NGINX_URL" "X-SYNO-TOKEN: $TOKEN"
run "gateway GET /channels/1/posts?limit=5" "$GW_PID" "http://127.0.0.1:$GW_PORT/api/v1/channels/1/posts?limit=5&offset=0"
run "gateway GET /channels (cached list)" "$GW_PID" "http://127.0.0.1:$GW_PORT/api/v1/channels"
echo
python3 - "${CPU[nginx -> DSM Post.list (baseline)]}" "${CPU[gateway GET /channels/1/posts?limit=5]}" "${CPU[gateway GET /channels (cached list)]}" <<'PY'
import sys
nginx, posts, cached = map(float, sys.argv[1:])
print(f"CPU per request, gateway translating Post.list / nginx forwarding it: {posts / nginx:.2f}x")
print(f"CPU per request, gateway serving the cached channel list / nginx forwarding: {cached / nginx:.2f}x")
PY
