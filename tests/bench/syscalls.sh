#!/usr/bin/env bash
# System calls per request of the gateway's cached channel list and of the static actix-web
# answer of the same bytes (examples/bench_static.rs), counted by `strace -c` under wrk's load
# (64 connections). It shows whether the kernel's share of a request is the same work for both:
# `perf` puts most of the cached list's CPU in the kernel, so a gap in CPU per request could be
# more or dearer system calls, or user space alone.
#
#   bash tests/bench/syscalls.sh            (needs strace, wrk, nginx, curl, taskset)
#   REQUEST_PATH=/readyz bash tests/bench/syscalls.sh   (another gateway route)
#
# The gateway logs at `info` as make bench's does (GATEWAY_LOG_LEVEL=warn: without the access line);
# strace -f counts every thread's calls, the log writer's too.
# strace slows both servers down; only the counts per request mean anything, not the rates.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN="${GATEWAY_BIN:-target/release/syno-chat-gateway}"
STATIC_BIN="${STATIC_BIN:-target/release/examples/bench_static}"
REQUEST_PATH="${REQUEST_PATH:-/api/v1/channels}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
for tool in strace wrk nginx curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool"; exit 2; }
done
[ -x "$BIN" ] || cargo build --release --bin syno-chat-gateway
[ -x "$STATIC_BIN" ] || cargo build --release --example bench_static

. tests/bench/common.sh

NAS_PORT=$(free_port); GW_PORT=$(free_port); STATIC_PORT=$(free_port)
. tests/bench/fake_nas.sh
start_fake_nas "$TMP/nas" "$NAS_PORT" "$(free_port)" "$LOAD_CPU"; PIDS+=("$FAKE_NAS_PID")
wait_for "http://127.0.0.1:$NAS_PORT/webapi/query.cgi?api=SYNO.API.Info&version=1&method=query"

# As make bench runs it: an API key checked on every request, the per-key rate limit on.
KEY="syscalls-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
env SYNOCHAT__AUTH__KEYS__BENCH__HASH="$(printf '%s' "$KEY" | "$BIN" hash-key --stdin)" \
  SYNOCHAT__AUTH__KEYS__BENCH__SCOPES=write \
  SYNOCHAT__RATE_LIMIT__KEY_PER_MINUTE=1000000000 SYNOCHAT__RATE_LIMIT__KEY_BURST=1000000 \
  SYNOCHAT__STORE__URL="sqlite://$TMP/gateway.db" SYNOCHAT__SERVER__BIND="127.0.0.1:$GW_PORT" \
  SYNOCHAT__SERVER__WORKERS=1 SYNOCHAT__UPSTREAM__URL="http://127.0.0.1:$NAS_PORT" \
  SYNOCHAT__UPSTREAM__USERNAME=admin SYNOCHAT__UPSTREAM__PASSWORD=bench SYNOCHAT__LOG__LEVEL="${GATEWAY_LOG_LEVEL:-info}" \
  taskset -c "$SERVER_CPU" "$BIN" serve >"$TMP/gateway.log" 2>&1 & GW_PID=$!; PIDS+=("$GW_PID")
wait_for "http://127.0.0.1:$GW_PORT/readyz"
AUTH=(-H "Authorization: Bearer $KEY")
curl -fs "${AUTH[@]}" "http://127.0.0.1:$GW_PORT/api/v1/channels" -o "$TMP/channels.json"
taskset -c "$SERVER_CPU" "$STATIC_BIN" "127.0.0.1:$STATIC_PORT" "$TMP/channels.json" >"$TMP/static.log" 2>&1 & STATIC_PID=$!; PIDS+=("$STATIC_PID")
wait_for "http://127.0.0.1:$STATIC_PORT/"

# name pid url [wrk args...]: a warm-up, then 4 s of load under strace -c; prints calls per request.
count() {
  local name=$1 pid=$2 url=$3 tracer requests; shift 3
  taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "$@" "$url" >/dev/null
  strace -c -f -p "$pid" -o "$TMP/$name.strace" 2>/dev/null & tracer=$!
  sleep 1
  taskset -c "$LOAD_CPU" wrk -t1 -c64 -d4s "$@" "$url" >"$TMP/$name.wrk"
  kill -INT "$tracer"; wait "$tracer" || true
  requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$TMP/$name.wrk")
  echo "== $name: $url, $requests requests under strace; system calls per request:"
  awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { printf "   %-14s %7.3f\n", $NF, $4 / n }
                        $NF == "total" { printf "   %-14s %7.3f\n", "all", $4 / n }' "$TMP/$name.strace" |
    sort -k2 -nr | head -8
}
count gateway "$GW_PID" "http://127.0.0.1:$GW_PORT$REQUEST_PATH" "${AUTH[@]}"
count static "$STATIC_PID" "http://127.0.0.1:$STATIC_PORT/"
