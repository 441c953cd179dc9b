# shellcheck shell=bash
# What the bench scripts share, sourced after `cd` to the repository's root:
#   a work directory $TMP and a list PIDS of processes, both cleaned up on exit;
#   free_port: a free TCP port on 127.0.0.1;
#   wait_for URL [curl args...]: waits up to 10 s for a 2xx answer, else exits.
TMP="$(mktemp -d)"; chmod 0755 "$TMP"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do curl -fs -o /dev/null "$@" && return 0; sleep 0.1; done; echo "no answer from $*"; exit 1; }
