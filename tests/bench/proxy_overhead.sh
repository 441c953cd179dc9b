#!/usr/bin/env bash
# Benchmark: the gateway against nginx forwarding the same DSM call, in one run.
#
# An nginx "fake NAS" answers DSM calls with the bodies in tests/bench/data/ (a 50-post,
# 16 KB Post.list; a Post.create answer; a 20-channel list; login and API.Info), whether the
# parameters come in the query or in a POST form. Against it, side by side, in interleaved rounds:
#   posts:  GET  /api/v1/channels/1/posts?limit=50 (uncached)  vs nginx proxying Post.list
#   create: POST /api/v1/channels/1/posts (60-byte JSON)        vs nginx proxying the Post.create form
#   cached: GET  /api/v1/channels (cached list)                 vs nginx proxying Channel.list,
#           and vs a static actix-web answer of the same bytes (examples/bench_static.rs)
#   floor:  GET  /readyz (no DSM call, no handler work): the cost of routing and middleware alone
#   forward: the posts page through a bare actix-web + awc forwarder (examples/bench_forward.rs:
#           no JSON work, no middleware, no session), the stack's own cost, next to nginx's
#   page:   the posts page's translation alone, timed in-process (examples/bench_page.rs): how
#           much of what the gateway spends above the forwarder is the page
# Each server under test is pinned to core SERVER_CPU with one worker; wrk and the fake NAS run
# on core LOAD_CPU. Printed: requests/s ratios (median over rounds), CPU µs per request of the
# server process alone (/proc/<pid>/stat), p99 latency next to nginx's, and RSS idle and under
# 256 connections. It asserts nothing: absolute figures move with the machine, ratios less.
#   make bench        ROUNDS=5 DURATION=5s make bench        (needs wrk, nginx, curl, taskset)
#   PERF_DIR=/tmp/prof ROUNDS=1 bash tests/bench/proxy_overhead.sh: also perf-records each gateway run
#   (PERF_CALLGRAPH=dwarf for deep stacks: the release build has no frame pointers)
#   TARGETS="gw_cached static_cached" ...: only those runs (the summary then lacks the others)
#   GATEWAY_AUTH=open ...: the gateway without API keys or rate limits (runs before 2026-12-03
#   were made so); by default it runs as users run it: every request carries an API key, checked
#   against its hash, and the per-key rate limit is on (with a quota the load stays under)
#   GATEWAY_LOG_LEVEL=warn ...: the gateway without its access line (runs before 2026-12-05
#   evening were made so); by default it logs as users run it: at `info`, the default level,
#   one line a request, in the default text format (GATEWAY_LOG_FORMAT=json: the container's),
#   to a file
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-64}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
BIN="${GATEWAY_BIN:-target/release/syno-chat-gateway}"
GATEWAY_LOG_LEVEL="${GATEWAY_LOG_LEVEL:-info}"
GATEWAY_LOG_FORMAT="${GATEWAY_LOG_FORMAT:-pretty}"
STATIC_BIN="${STATIC_BIN:-target/release/examples/bench_static}"
FORWARD_BIN="${FORWARD_BIN:-target/release/examples/bench_forward}"
PAGE_BIN="${PAGE_BIN:-target/release/examples/bench_page}"
for tool in wrk nginx curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool"; exit 2; }
done
[ -x "$BIN" ] || cargo build --release --bin syno-chat-gateway
[ -x "$STATIC_BIN" ] || cargo build --release --example bench_static
[ -x "$FORWARD_BIN" ] || cargo build --release --example bench_forward
[ -x "$PAGE_BIN" ] || cargo build --release --example bench_page

. tests/bench/common.sh

# CPU ticks (user + system) of a process and its children (nginx master + worker).
tree_ticks() { local t=0 p; for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# Resident memory in KB of a process and its children.
tree_rss() { local t=0 p; for p in $1 $(pgrep -P "$1" || true); do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }

NAS_PORT=$(free_port); FORM_PORT=$(free_port); NGINX_PORT=$(free_port); GW_PORT=$(free_port); STATIC_PORT=$(free_port); FORWARD_PORT=$(free_port)

# The fake NAS (tests/bench/fake_nas.sh), on the load's core.
. tests/bench/fake_nas.sh
start_fake_nas "$TMP/nas" "$NAS_PORT" "$FORM_PORT" "$LOAD_CPU"; PIDS+=("$FAKE_NAS_PID")
wait_for "http://127.0.0.1:$NAS_PORT/webapi/query.cgi?api=SYNO.API.Info&version=1&method=query"

# (b): nginx as a plain reverse proxy to the fake NAS.
mkdir -p "$TMP/proxy"
cat >"$TMP/proxy/nginx.conf" <<CONF
daemon off; worker_processes 1; pid nginx.pid; error_log error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path cb; proxy_temp_path pt; fastcgi_temp_path ft; uwsgi_temp_path ut; scgi_temp_path st;
  upstream dsm { server 127.0.0.1:$NAS_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / { proxy_pass http://dsm; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
taskset -c "$SERVER_CPU" nginx -p "$TMP/proxy" -c "$TMP/proxy/nginx.conf" -e stderr 2>"$TMP/proxy.err" & NGINX_PID=$!; PIDS+=("$NGINX_PID")

GW_KEY="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
case "${GATEWAY_AUTH:-key}" in
  key) GW_ENV=(SYNOCHAT__AUTH__KEYS__BENCH__HASH="$(printf '%s' "$GW_KEY" | "$BIN" hash-key --stdin)"
         SYNOCHAT__AUTH__KEYS__BENCH__SCOPES=write
         SYNOCHAT__RATE_LIMIT__KEY_PER_MINUTE=1000000000 SYNOCHAT__RATE_LIMIT__KEY_BURST=1000000) ;;
  open) GW_ENV=(SYNOCHAT__AUTH__DISABLED=true SYNOCHAT__RATE_LIMIT__ENABLED=false) ;;
  *) echo "GATEWAY_AUTH is key or open"; exit 2 ;;
esac
GW_AUTH=(-H "Authorization: Bearer $GW_KEY")
env "${GW_ENV[@]}" SYNOCHAT__STORE__URL="sqlite://$TMP/gateway.db" \
SYNOCHAT__SERVER__BIND="127.0.0.1:$GW_PORT" SYNOCHAT__SERVER__WORKERS=1 \
SYNOCHAT__UPSTREAM__URL="http://127.0.0.1:$NAS_PORT" SYNOCHAT__UPSTREAM__USERNAME=admin \
SYNOCHAT__UPSTREAM__PASSWORD=bench SYNOCHAT__LOG__LEVEL="$GATEWAY_LOG_LEVEL" \
SYNOCHAT__LOG__FORMAT="$GATEWAY_LOG_FORMAT" \
  taskset -c "$SERVER_CPU" "$BIN" serve >"$TMP/gateway.log" 2>&1 & GW_PID=$!; PIDS+=("$GW_PID")
wait_for "http://127.0.0.1:$GW_PORT/readyz"

GW="http://127.0.0.1:$GW_PORT/api/v1"
NX="http://127.0.0.1:$NGINX_PORT/webapi/entry.cgi"
MESSAGE='Deploy finished on nas-01: all green, 100% ok!'
JSON_BODY="{\"message\":\"$MESSAGE\"}"
FORM_BODY="api=SYNO.Chat.Post&version=8&method=create&_sid=S1&channel_id=1&message=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote_plus(sys.argv[1]))' "$MESSAGE")&type=normal"
post_script() { # file content-type body
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "%s"\nwrk.body = [[%s]]\n' "$2" "$3" >"$1"
}
post_script "$TMP/create_json.lua" application/json "$JSON_BODY"
post_script "$TMP/create_form.lua" application/x-www-form-urlencoded "$FORM_BODY"
NAS_HEADERS=(-H "Cookie: id=S1" -H "X-SYNO-TOKEN: T1")

# The static answer serves exactly the bytes the gateway answers for the cached list.
curl -fs "${GW_AUTH[@]}" "$GW/channels" -o "$TMP/channels.json"
taskset -c "$SERVER_CPU" "$STATIC_BIN" "127.0.0.1:$STATIC_PORT" "$TMP/channels.json" >"$TMP/static.log" 2>&1 & STATIC_PID=$!; PIDS+=("$STATIC_PID")
wait_for "http://127.0.0.1:$STATIC_PORT/"
taskset -c "$SERVER_CPU" "$FORWARD_BIN" "127.0.0.1:$FORWARD_PORT" "http://127.0.0.1:$NAS_PORT" >"$TMP/forward.log" 2>&1 & FORWARD_PID=$!; PIDS+=("$FORWARD_PID")
FW="http://127.0.0.1:$FORWARD_PORT/webapi/entry.cgi"
wait_for "$FW?api=SYNO.API.Info&version=1&method=query"

# name pid url [wrk args...]: one wrk run; appends "round name rps p99_ms cpu_us" to results.
RESULTS="$TMP/results"; : >"$RESULTS"
ROUND=0
run() {
  local name=$1 pid=$2 url=$3; shift 3
  local before after
  if [ -n "${TARGETS:-}" ] && [[ " $TARGETS " != *" $name "* ]]; then return 0; fi
  before=$(tree_ticks "$pid")
  # PERF_DIR=dir: a call-graph profile of each gateway run (perf report -i dir/gw_posts.data).
  if [ -n "${PERF_DIR:-}" ] && [[ $name == gw_* || $name == forward_* || $name == static_* ]]; then
    perf record -q --call-graph "${PERF_CALLGRAPH:-fp}" -F 499 -p "$pid" -o "$PERF_DIR/$name.data" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
  fi
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$TMP/wrk.out"
  after=$(tree_ticks "$pid")
  if grep -q "Non-2xx" "$TMP/wrk.out"; then echo "!! $name: $(grep Non-2xx "$TMP/wrk.out")"; fi
  python3 - "$TMP/wrk.out" "$ROUND" "$name" "$before" "$after" "$(getconf CLK_TCK)" >>"$RESULTS" <<'PY'
import re, sys
out, rnd, name, before, after, hz = sys.argv[1:]
text = open(out).read()
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
cpu = (int(after) - int(before)) / int(hz) * 1e6 / max(reqs, 1)
print(rnd, name, rps, p99, cpu)
PY
}

# Check every target answers what it should before measuring.
[ "$(curl -fs "${GW_AUTH[@]}" "$GW/channels/1/posts?limit=50" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" = 50 ]
[ "$(curl -fs "${NAS_HEADERS[@]}" "$NX?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0" | wc -c)" -gt 16000 ]
curl -fs "${GW_AUTH[@]}" -X POST -H 'Content-Type: application/json' -d "$JSON_BODY" "$GW/channels/1/posts" | grep -q '"post_id":1000051'
curl -fs "${NAS_HEADERS[@]}" -d "$FORM_BODY" "$NX" | grep -q '"post_id":1000051'
curl -fs "${NAS_HEADERS[@]}" "$NX?api=SYNO.Chat.Channel&version=5&method=list" | grep -q channel-20
cmp -s "$TMP/channels.json" <(curl -fs "http://127.0.0.1:$STATIC_PORT/")
cmp -s <(curl -fs "${NAS_HEADERS[@]}" "$NX?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0") \
  <(curl -fs "${NAS_HEADERS[@]}" "$FW?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0")

sleep 3  # start-up settles (the gateway gives back its start-up heap a second after warming up)
IDLE_GW=$(tree_rss "$GW_PID"); IDLE_NGINX=$(tree_rss "$NGINX_PID"); IDLE_STATIC=$(tree_rss "$STATIC_PID")
echo "rounds: $ROUNDS × $DURATION per target, $CONNECTIONS connections, servers on CPU $SERVER_CPU, wrk + fake NAS on CPU $LOAD_CPU"
echo "gateway: log level $GATEWAY_LOG_LEVEL, $GATEWAY_LOG_FORMAT lines to a file; auth ${GATEWAY_AUTH:-key}"
for ROUND in $(seq "$ROUNDS"); do
  run nginx_posts "$NGINX_PID" "$NX?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0" "${NAS_HEADERS[@]}"
  run gw_posts "$GW_PID" "$GW/channels/1/posts?limit=50" "${GW_AUTH[@]}"
  run forward_posts "$FORWARD_PID" "$FW?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0" "${NAS_HEADERS[@]}"
  run nginx_create "$NGINX_PID" "$NX" "${NAS_HEADERS[@]}" -s "$TMP/create_form.lua"
  run gw_create "$GW_PID" "$GW/channels/1/posts" "${GW_AUTH[@]}" -s "$TMP/create_json.lua"
  run nginx_cached "$NGINX_PID" "$NX?api=SYNO.Chat.Channel&version=5&method=list" "${NAS_HEADERS[@]}"
  run static_cached "$STATIC_PID" "http://127.0.0.1:$STATIC_PORT/"
  run gw_cached "$GW_PID" "$GW/channels" "${GW_AUTH[@]}"
  run gw_floor "$GW_PID" "http://127.0.0.1:$GW_PORT/readyz"
  echo "round $ROUND done"
done

sleep 2; AFTER_GW=$(tree_rss "$GW_PID")
# Memory under 256 connections: the largest RSS seen while wrk reads the 50-post page.
PEAK_GW=0
taskset -c "$LOAD_CPU" wrk -t1 -c256 -d"$DURATION" "${GW_AUTH[@]}" "$GW/channels/1/posts?limit=50" >"$TMP/wrk256.out" & WRK=$!
while kill -0 "$WRK" 2>/dev/null; do
  rss=$(tree_rss "$GW_PID"); [ "$rss" -gt "$PEAK_GW" ] && PEAK_GW=$rss; sleep 0.2
done

# The page's translation alone, in-process on the servers' core (examples/bench_page.rs).
PAGE_US=$(taskset -c "$SERVER_CPU" "$PAGE_BIN" tests/bench/data/post_list.json | cut -d' ' -f1)

python3 - "$RESULTS" "$IDLE_GW" "$IDLE_NGINX" "$IDLE_STATIC" "$PEAK_GW" "$AFTER_GW" "$PAGE_US" <<'PY'
import statistics as st, sys
from collections import defaultdict
results, idle_gw, idle_nginx, idle_static, peak_gw, after_gw, page_us = sys.argv[1:]
runs = defaultdict(dict)  # round -> name -> (rps, p99, cpu)
for line in open(results):
    rnd, name, rps, p99, cpu = line.split()
    runs[rnd][name] = (float(rps), float(p99), float(cpu))
def med(name, i):
    return st.median(r[name][i] for r in runs.values())
def ratio(a, b):
    return st.median(r[a][0] / r[b][0] for r in runs.values())
print()
print(f"{'target':<16}{'req/s':>10}{'p99 ms':>9}{'CPU µs/req':>12}   (medians over {len(runs)} rounds)")
for name in ["nginx_posts", "gw_posts", "forward_posts", "nginx_create", "gw_create", "nginx_cached", "static_cached", "gw_cached", "gw_floor"]:
    if name in runs["1"]: print(f"{name:<16}{med(name, 0):>10.0f}{med(name, 1):>9.2f}{med(name, 2):>12.1f}")
def line(text):
    """Prints one summary line, or nothing when TARGETS left out a run it needs."""
    try:
        print(text())
    except KeyError:
        pass
print()
line(lambda: f"posts  (50 posts, 16 KB)  gateway/nginx req/s: {ratio('gw_posts', 'nginx_posts'):.2f}   (goal ≥ 0.70)")
line(lambda: f"  the bare actix-web + awc forwarder (no JSON, no middleware)/nginx req/s: {ratio('forward_posts', 'nginx_posts'):.2f}; "
     f"CPU {med('forward_posts', 2):.1f} µs; the gateway spends {med('gw_posts', 2) - med('forward_posts', 2):.1f} µs more, "
     f"of which the page's translation, timed in-process (examples/bench_page.rs): {float(page_us):.1f} µs")
line(lambda: f"create (60-byte JSON)     gateway/nginx req/s: {ratio('gw_create', 'nginx_create'):.2f}   (goal ≥ 0.75)")
line(lambda: f"cached channel list       gateway/static req/s: {ratio('gw_cached', 'static_cached'):.2f}  (goal ≥ 0.95)")
line(lambda: f"  vs nginx forwarding Channel.list: {ratio('gw_cached', 'nginx_cached'):.2f}")
line(lambda: f"floor: the gateway's no-op route (/readyz: routing, middleware, no handler work) against static: "
     f"req/s {ratio('gw_floor', 'static_cached'):.2f}, CPU {med('gw_floor', 2):.1f} µs against {med('static_cached', 2):.1f}; "
     f"the cached list adds {med('gw_cached', 2) - med('gw_floor', 2):.1f} µs (API key check, cache, its bytes)")
for s in ["posts", "create", "cached"]:
    line(lambda: f"p99 {s:<7} gateway {med('gw_' + s, 1):.2f} ms, nginx {med('nginx_' + s, 1):.2f} ms: {med('gw_' + s, 1) / med('nginx_' + s, 1):.2f}×" + ("   (goal ≤ 1.2×)" if s == "posts" else ""))
line(lambda: f"CPU per request, gateway/nginx: posts {med('gw_posts', 2) / med('nginx_posts', 2):.2f}×, create {med('gw_create', 2) / med('nginx_create', 2):.2f}×")
mb = lambda kb: int(kb) / 1024
print(f"RSS idle: gateway {mb(idle_gw):.1f} MB (goal ≤ 20), nginx {mb(idle_nginx):.1f} MB, static actix {mb(idle_static):.1f} MB; "
      f"gateway idle after the rounds {mb(after_gw):.1f} MB, under 256 connections {mb(peak_gw):.1f} MB (goal ≤ 60)")
PY
