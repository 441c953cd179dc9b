#!/usr/bin/env bash
# User and system CPU µs per request of one or more gateway builds, alternated round by round so
# that a noisy machine moves them alike, and optionally where the CPU goes, sampled by perf.
#
#   bash tests/bench/cpu_split.sh OLD NEW                       (3 rounds, 5 s each, posts page)
#   ROUNDS=5 DURATION=4 REQUEST_PATH=/api/v1/channels bash tests/bench/cpu_split.sh BIN
#   PERF=1 bash tests/bench/cpu_split.sh BIN   also samples each run with `perf record` (the CPU
#                                              clock) and prints the samples by where they fell:
#                                              the kernel, glibc's allocator, glibc's memcpy, the
#                                              page reader, the rest of the binary
#   PERF=1 PERF_TOP=25 ...                     and the 25 functions that took the most samples
#   PERF=1 PERF_CALLGRAPH=dwarf PERF_KEEP=dir  with whole call stacks, kept as dir/<build>.data
#                                              (perf report -i dir/<build>.data --no-children)
#   bash tests/bench/cpu_split.sh BIN target/release/examples/bench_forward
#       next to the bare actix-web + awc forwarder asked for the same DSM call (FORWARD_PATH)
#   REQUEST_PATH=/api/v1/channels bash tests/bench/cpu_split.sh BIN target/release/examples/bench_static
#       next to the static actix-web answer of a channel list's bytes, asked for `/`
#
# Each build serves with one worker, pinned to core SERVER_CPU (0), with an API key and the
# per-key rate limit on, in front of the bench's fake NAS (tests/bench/fake_nas.sh, so the posts
# page is the 16 KB, 50-post page of make bench); wrk (64 connections) and the fake NAS run on
# core LOAD_CPU (1). CPU time is read from /proc/<pid>/stat around a run that follows a 2 s
# warm-up. It asserts nothing; make bench's ratios against nginx stay the judge of speed.
# The gateway logs as make bench's does (GATEWAY_LOG_LEVEL, default info; GATEWAY_LOG_FORMAT,
# default pretty), to a file.
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in wrk nginx curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool"; exit 2; }
done
[ $# -gt 0 ] || set -- target/release/syno-chat-gateway
[ -x "$1" ] || cargo build --release --bin syno-chat-gateway
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
REQUEST_PATH="${REQUEST_PATH:-/api/v1/channels/1/posts?limit=50}"
# What target/release/examples/bench_forward (the bare forwarder) is asked for: the posts page.
FORWARD_PATH="${FORWARD_PATH:-/webapi/entry.cgi?api=SYNO.Chat.Post&version=8&method=list&channel_id=1&limit=50&offset=0}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
if [ -n "${PERF:-}" ]; then
  command -v perf >/dev/null || { echo "PERF=1 needs perf (Debian: linux-perf)"; exit 2; }
fi

. tests/bench/fake_nas.sh
. tests/bench/common.sh
NAS_PORT=$(free_port)
start_fake_nas "$TMP/nas" "$NAS_PORT" "$(free_port)" "$LOAD_CPU"; PIDS+=("$FAKE_NAS_PID")
TICKS=$(getconf CLK_TCK)
KEY="cpu-split-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"

# Where perf's samples fell, by kind of code.
split() {
  perf report -i "$1" --no-children --sort dso,sym -g none 2>/dev/null | python3 -c '
import re, sys
kinds = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    share, dso, mode, sym = float(m[1]), m[2], m[3], m[4]
    if mode == "k":
        kind = "kernel"
    elif dso.startswith("libc"):
        if re.search(r"malloc|free|consolidate|unlink_chunk|realloc|tcache", sym):
            kind = "glibc malloc and free"
        elif re.search(r"mem(cpy|move)", sym):
            kind = "glibc memcpy/memmove"
        else:
            kind = "glibc, other"
    elif dso == "[vdso]":
        kind = "vdso (clock reads)"
    elif "wire::page::" in sym or "from_utf8" in sym:
        kind = "the page (wire/page.rs, the UTF-8 check)"
    else:
        kind = "rest of the binary (actix-web, awc, tokio, the gateway)"
    kinds[kind] = kinds.get(kind, 0) + share
for kind, share in sorted(kinds.items(), key=lambda k: -k[1]):
    print(f"    {share:5.1f} %  {kind}")
'
}

for _ in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    port=$(free_port)
    # The bare forwarder and the static answer (as in tests/bench/instructions.sh), or a gateway.
    case "$(basename "$bin")" in
      bench_forward)
        taskset -c "$SERVER_CPU" "$bin" "127.0.0.1:$port" "http://127.0.0.1:$NAS_PORT" >"$TMP/gateway.log" 2>&1 & pid=$!
        path="$FORWARD_PATH"; auth=(-H "Cookie: id=S1" -H "X-SYNO-TOKEN: T1") ;;
      bench_static)
        taskset -c "$SERVER_CPU" "$bin" "127.0.0.1:$port" tests/bench/data/channel_list.json >"$TMP/gateway.log" 2>&1 & pid=$!
        path=/; auth=() ;;
      *)
        env SYNOCHAT__AUTH__KEYS__BENCH__HASH="$(printf '%s' "$KEY" | "$bin" hash-key --stdin)" \
          SYNOCHAT__AUTH__KEYS__BENCH__SCOPES=write \
          SYNOCHAT__RATE_LIMIT__KEY_PER_MINUTE=1000000000 SYNOCHAT__RATE_LIMIT__KEY_BURST=1000000 \
          SYNOCHAT__STORE__URL="sqlite://$TMP/gateway-$port.db" SYNOCHAT__SERVER__BIND="127.0.0.1:$port" \
          SYNOCHAT__SERVER__WORKERS=1 SYNOCHAT__UPSTREAM__URL="http://127.0.0.1:$NAS_PORT" \
          SYNOCHAT__UPSTREAM__USERNAME=admin SYNOCHAT__UPSTREAM__PASSWORD=bench \
          SYNOCHAT__CACHE__TTL_SECS=3600 SYNOCHAT__LOG__LEVEL="${GATEWAY_LOG_LEVEL:-info}" \
          SYNOCHAT__LOG__FORMAT="${GATEWAY_LOG_FORMAT:-pretty}" \
          taskset -c "$SERVER_CPU" "$bin" serve >"$TMP/gateway.log" 2>&1 & pid=$!
        path="$REQUEST_PATH"; auth=(-H "Authorization: Bearer $KEY") ;;
    esac
    PIDS+=("$pid")
    url="http://127.0.0.1:$port$path"
    for _ in $(seq 100); do curl -fs -o /dev/null "${auth[@]}" "$url" && break; sleep 0.1; done
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s "${auth[@]}" "$url" >/dev/null
    read -r user0 sys0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    if [ -n "${PERF:-}" ]; then
      perf record -q -F 4000 ${PERF_CALLGRAPH:+--call-graph "$PERF_CALLGRAPH"} -p "$pid" \
        -o "$TMP/perf.data" -- sleep "$DURATION" 2>/dev/null & perf=$!
    fi
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${DURATION}s" "${auth[@]}" "$url" >"$TMP/wrk.out"
    read -r user1 sys1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    [ -z "${PERF:-}" ] || wait "$perf"
    requests=$(grep -Eo '[0-9]+ requests in' "$TMP/wrk.out" | cut -d' ' -f1)
    python3 -c 'import sys
user, system, n, seconds, name = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
tick = 1e6 / int(sys.argv[6])  # µs per clock tick
print(f"{name:40s} req/s {n / seconds:8.0f}  user {user * tick / n:5.1f} µs  system {system * tick / n:5.1f} µs")' \
      $((user1 - user0)) $((sys1 - sys0)) "$requests" "$DURATION" "$bin" "$TICKS"
    [ -z "${PERF:-}" ] || split "$TMP/perf.data"
    if [ -n "${PERF:-}" ] && [ -n "${PERF_KEEP:-}" ]; then
      mkdir -p "$PERF_KEEP" && cp "$TMP/perf.data" "$PERF_KEEP/$(basename "$bin").data"
    fi
    if [ -n "${PERF:-}" ] && [ -n "${PERF_TOP:-}" ]; then
      perf report -i "$TMP/perf.data" --no-children --sort dso,sym -g none 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -n "$PERF_TOP" | cut -c1-150
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
