#!/usr/bin/env bash
# User-space instructions per request of one or more gateway builds, counted by valgrind's
# callgrind: a count that moves far less than time does, so two builds can be compared on a
# shared, noisy machine where CPU time per request moves by 20-50 % between runs (make bench's
# ratios stay the judge of speed). It still moves by about 1,000 instructions (2.5 %) on the
# cached list between runs of the same build (timers and housekeeping fall differently into
# the two windows): compare several runs for a change smaller than that.
#
#   bash tests/bench/instructions.sh [BIN ...]              (default: target/release/syno-chat-gateway)
#   REQUEST_PATH=/api/v1/channels/1/posts?limit=50 bash tests/bench/instructions.sh old new
#   REQUEST_PATH=... bash tests/bench/instructions.sh target/release/examples/bench_forward BIN
#   REQUEST_BODY='{"message":"…"}' REQUEST_PATH=/api/v1/channels/1/posts bash tests/bench/instructions.sh old new
#       (a POST of that JSON body: make bench's create)
#       (the bare actix-web + awc forwarder on the same DSM call as the posts page: FORWARD_PATH)
#   KEEP_DIR=/tmp/cg bash tests/bench/instructions.sh ...  (keeps the callgrind files:
#                                                           callgrind_annotate KEEP_DIR/<bin>-3000.out)
#   bash tests/bench/instructions.sh BIN target/release/examples/bench_static
#       (the static actix-web answer of the cached channel list's bytes, asked for `/`)
#   ICACHE=1 bash tests/bench/instructions.sh ...  (also simulates a 32 KB, 8-way L1 instruction
#       cache and prints its misses per request: how many 64-byte lines of code a request runs
#       that were not in the cache, which an instruction count does not show)
#
# Each build runs with an API key and the per-key rate limit on, as users run it, and logs at
# `info` as users do (one access line a request; GATEWAY_LOG_LEVEL=warn leaves it out, as the
# counts before 2026-12-05 evening did; GATEWAY_LOG_FORMAT=json for the container's lines), on one worker,
# in front of the bench's fake NAS (tests/bench/fake_nas.sh: nginx serving tests/bench/data/, so
# the posts page is make bench's 50-post, 16 KB page), or with UPSTREAM=simulator in front of
# the built-in simulator (a page of a few posts; no nginx needed). Each build is run twice,
# answering FEW and MANY requests (keep-alive, one connection); (instructions of the second - of
# the first) / (MANY - FEW) leaves out start-up and shutdown. Counts of `memset`/`memcpy` are
# inflated: callgrind counts each byte a `rep stosb`/`rep movsb` moves as an instruction (so the
# 3 KB header table actix-http's decoder zeroes on every read counts about 3,000). Under valgrind, SHA-256 runs without the CPU's SHA extensions, so the
# API key check counts a few thousand instructions more than it costs on such a CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 2; }
REQUEST_PATH="${REQUEST_PATH:-/api/v1/channels}"
# With a body, each request is a POST of it as JSON.
REQUEST_BODY="${REQUEST_BODY:-}"
# What target/release/examples/bench_forward (the bare forwarder) is asked for: the posts page.
FORWARD_PATH="${FORWARD_PATH:-/webapi/entry.cgi?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0}"
FEW="${FEW:-1000}"
MANY="${MANY:-3000}"
[ $# -gt 0 ] || set -- target/release/syno-chat-gateway
[ -x "$1" ] || cargo build --release --bin syno-chat-gateway

UPSTREAM="${UPSTREAM:-fake}"
CACHE_SIM=()
[ -n "${ICACHE:-}" ] && CACHE_SIM=(--cache-sim=yes "--I1=32768,8,64" "--D1=32768,8,64" "--LL=8388608,16,64")
if [ "$UPSTREAM" != simulator ]; then
  command -v nginx >/dev/null || { echo "needs nginx for the fake NAS (or UPSTREAM=simulator)"; exit 2; }
  . tests/bench/fake_nas.sh
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bin requests -> total instructions of the gateway process
count() {
  local bin=$1 requests=$2 tmp nas_port gw_port key nas gw password path headers
  tmp="$(mktemp -d)"; nas_port=$(free_port); gw_port=$(free_port)
  key="instructions-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  if [ "$UPSTREAM" = simulator ]; then
    "$bin" simulate --bind "127.0.0.1:$nas_port" >"$tmp/sim.log" 2>&1 & nas=$!
    password=synology-demo
  else
    start_fake_nas "$tmp/nas" "$nas_port" "$(free_port)"; nas=$FAKE_NAS_PID
    password=bench
  fi
  if [ "$(basename "$bin")" = bench_forward ]; then
    # The bare forwarder (examples/bench_forward.rs), asked for the DSM call itself.
    valgrind --tool=callgrind "${CACHE_SIM[@]}" --callgrind-out-file="$tmp/cg.out" "$bin" "127.0.0.1:$gw_port" \
      "http://127.0.0.1:$nas_port" >"$tmp/gw.log" 2>&1 & gw=$!
    path="$FORWARD_PATH"; headers='{"Cookie": "id=S1", "X-SYNO-TOKEN": "T1"}'
  elif [ "$(basename "$bin")" = bench_static ]; then
    # The static answer (examples/bench_static.rs) of the cached channel list's bytes.
    valgrind --tool=callgrind "${CACHE_SIM[@]}" --callgrind-out-file="$tmp/cg.out" "$bin" "127.0.0.1:$gw_port" \
      tests/bench/data/channel_list.json >"$tmp/gw.log" 2>&1 & gw=$!
    path=/; headers='{}'
  else
  path="$REQUEST_PATH"; headers="{\"Authorization\": \"Bearer $key\"}"
  env SYNOCHAT__AUTH__KEYS__BENCH__HASH="$(printf '%s' "$key" | "$bin" hash-key --stdin)" \
    SYNOCHAT__AUTH__KEYS__BENCH__SCOPES=write \
    SYNOCHAT__RATE_LIMIT__KEY_PER_MINUTE=1000000000 SYNOCHAT__RATE_LIMIT__KEY_BURST=1000000 \
    SYNOCHAT__STORE__URL="sqlite://$tmp/gateway.db" SYNOCHAT__SERVER__BIND="127.0.0.1:$gw_port" \
    SYNOCHAT__SERVER__WORKERS=1 SYNOCHAT__UPSTREAM__URL="http://127.0.0.1:$nas_port" \
    SYNOCHAT__UPSTREAM__USERNAME=admin SYNOCHAT__UPSTREAM__PASSWORD="$password" \
    SYNOCHAT__CACHE__TTL_SECS=3600 SYNOCHAT__LOG__LEVEL="${GATEWAY_LOG_LEVEL:-info}" \
    SYNOCHAT__LOG__FORMAT="${GATEWAY_LOG_FORMAT:-pretty}" \
    valgrind --tool=callgrind "${CACHE_SIM[@]}" --callgrind-out-file="$tmp/cg.out" "$bin" serve >"$tmp/gw.log" 2>&1 & gw=$!
  fi
  python3 - "$gw_port" "$requests" "$path" "$headers" "$REQUEST_BODY" <<'PY'
import http.client, json, sys, time
port, n, path, headers = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
body = sys.argv[5].encode() or None
method = "POST" if body else "GET"
if body:
    headers["Content-Type"] = "application/json"
for _ in range(300):  # start-up under valgrind takes a while
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/readyz"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.2)
for _ in range(n):
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse(); r.read()
    if r.status not in (200, 201):
        sys.exit(f"{method} {path} answered {r.status}")
PY
  kill -INT "$gw"; wait "$gw" || true
  kill "$nas"; wait "$nas" 2>/dev/null || true
  [ -n "${KEEP_DIR:-}" ] && mkdir -p "$KEEP_DIR" && cp "$tmp/cg.out" "$KEEP_DIR/$(basename "$bin")-$requests.out"
  # Instructions, then (with ICACHE=1) L1 instruction-cache misses.
  awk '/^events:/ { for (i = 2; i <= NF; i++) at[$i] = i }
       /^totals:/ { printf "%s %s\n", $(at["Ir"]), (at["I1mr"] ? $(at["I1mr"]) : 0) }' "$tmp/cg.out"
  rm -rf "$tmp"
}

echo "$([ -n "$REQUEST_BODY" ] && echo POST || echo GET) $REQUEST_PATH from the $([ "$UPSTREAM" = simulator ] && echo simulator || echo "fake NAS"): user-space instructions per request (callgrind, $FEW and $MANY requests)${ICACHE:+, and L1 instruction-cache misses (32 KB, 8-way, 64-byte lines)}"
for bin in "$@"; do
  read -r few_ir few_i1 < <(count "$bin" "$FEW"); read -r many_ir many_i1 < <(count "$bin" "$MANY")
  if [ -n "${ICACHE:-}" ]; then
    printf '%-50s %8d  L1i misses %6d\n' "$bin" $(( (many_ir - few_ir) / (MANY - FEW) )) $(( (many_i1 - few_i1) / (MANY - FEW) ))
  else
    printf '%-50s %8d\n' "$bin" $(( (many_ir - few_ir) / (MANY - FEW) ))
  fi
done
