#!/usr/bin/env bash
# A profile-guided release build of the gateway (`make release-pgo`): an instrumented build is
# trained on the requests users send most, and the release build is then optimised with the
# profile it wrote (rustc's -Cprofile-generate / -Cprofile-use). README "Performance" has what it
# gains.
#
#   bash tests/bench/pgo.sh        -> target/release-pgo/syno-chat-gateway
#
# Needs llvm-profdata of rustc's own LLVM version: `rustup component add llvm-tools` (or
# LLVM_PROFDATA=/path/to/llvm-profdata). No NAS and no other tool: the training runs
# against the built-in DSM simulator, from a second process whose own profile is thrown away,
# and the load is examples/pgo_train.rs (std only, compiled with rustc alone: the API's reads and
# writes and a hook's Slack and Alertmanager posts, which the outbox then sends), which fails the
# build on any unexpected answer. The gateway logs at `info`, as users run it: the access line is
# on every request's path. Takes two release builds (about 12 minutes on two cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
HOST="$(rustc -vV | sed -n 's/^host: //p')"
PROFDATA="${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata}"
[ -x "$PROFDATA" ] || { echo "pgo: needs llvm-profdata: rustup component add llvm-tools (or set LLVM_PROFDATA)"; exit 2; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # An instrumented process writes its profile as it exits: the directory is removed after.
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || shuf -i 20000-60000 -n 1; }
# RUSTFLAGS reach only the gateway and its dependencies with --target, not build scripts.
build() { # target-dir rustflags
  RUSTFLAGS="$2" cargo build --release --locked --bin syno-chat-gateway --target "$HOST" --target-dir "$1"
}

echo "pgo: 1/3 instrumented build"
build target/pgo/instrumented "-Cprofile-generate=$WORK/profiles"
BIN="target/pgo/instrumented/$HOST/release/syno-chat-gateway"
rustc --edition 2024 -O examples/pgo_train.rs -o "$WORK/pgo_train"

echo "pgo: 2/3 training"
NAS_PORT=$(free_port); GW_PORT=$(free_port)
KEY="pgo-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
HOOK_SECRET="pgo-hook-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
hash() { printf '%s' "$1" | LLVM_PROFILE_FILE="$WORK/discarded/%p.profraw" "$BIN" hash-key --stdin; }
LLVM_PROFILE_FILE="$WORK/discarded/%p.profraw" "$BIN" simulate --bind "127.0.0.1:$NAS_PORT" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
env LLVM_PROFILE_FILE="$WORK/profiles/gateway-%p.profraw" \
  SYNOCHAT__AUTH__KEYS__TRAIN__HASH="$(hash "$KEY")" SYNOCHAT__AUTH__KEYS__TRAIN__SCOPES=write \
  SYNOCHAT__HOOKS__ALERTS__CHANNEL=1 SYNOCHAT__HOOKS__ALERTS__SECRET_HASH="$(hash "$HOOK_SECRET")" \
  SYNOCHAT__RATE_LIMIT__KEY_PER_MINUTE=1000000000 SYNOCHAT__RATE_LIMIT__KEY_BURST=1000000 \
  SYNOCHAT__STORE__URL="sqlite://$WORK/gateway.db" SYNOCHAT__SERVER__BIND="127.0.0.1:$GW_PORT" \
  SYNOCHAT__SERVER__WORKERS=1 SYNOCHAT__UPSTREAM__URL="http://127.0.0.1:$NAS_PORT" \
  SYNOCHAT__UPSTREAM__USERNAME=admin SYNOCHAT__UPSTREAM__PASSWORD=synology-demo \
  SYNOCHAT__LOG__LEVEL=info "$BIN" serve >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
# The trainer waits for /readyz first.
"$WORK/pgo_train" "http://127.0.0.1:$GW_PORT" "$KEY" "$HOOK_SECRET" || { cat "$WORK/gateway.log"; exit 1; }
# The profile is written when the process exits normally.
kill -INT "$GW_PID"
wait "$GW_PID" || true
ls "$WORK"/profiles/gateway-*.profraw >/dev/null 2>&1 || { echo "pgo: the gateway wrote no profile"; exit 1; }
"$PROFDATA" merge -o "$WORK/gateway.profdata" "$WORK"/profiles/gateway-*.profraw

echo "pgo: 3/3 optimised build"
build target/pgo/optimized "-Cprofile-use=$WORK/gateway.profdata"
install -D -m 0755 "target/pgo/optimized/$HOST/release/syno-chat-gateway" target/release-pgo/syno-chat-gateway
echo "pgo: built target/release-pgo/syno-chat-gateway"
