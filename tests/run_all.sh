#!/usr/bin/env bash
# `make test`: runs every suite even when an earlier one fails or cannot run, then prints one
# line per suite (ok / FAIL / with skips) and every skip it reported, and fails at the end.
#   bash tests/run_all.sh                       (the suites below, through make)
#   bash tests/run_all.sh NAME=COMMAND ...      (other suites; the tests of this script use it)
# A suite fails when its command exits non-zero. Its skips are the lines it prints as
# "skip: ...", "!!!! ... SKIPPING/SKIPPED ..."; its count comes from its last
# "N passed, N failed, N skipped" line when it prints one. Exit status: 1 when a suite failed,
# or (CI=true) when a suite reported a skip; else 0.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
CI="${CI:-false}"
MAKE="${MAKE:-make}"

if [ "$#" -eq 0 ]; then
  # The Rust suite runs last so its summary closes the output.
  set -- "deploy=$MAKE --no-print-directory test-deploy" \
         "e2e=$MAKE --no-print-directory test-e2e" \
         "rust=$MAKE --no-print-directory test-rust"
fi

LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
NAMES=() LINES=() FAILED=0 SKIPPED=0 SKIP_REPORT=()
for spec in "$@"; do
  name="${spec%%=*}" command="${spec#*=}"
  log="$LOGS/$name.log"
  printf '\n==== make test: suite %s: %s\n' "$name" "$command"
  # The suite's own output, live; kept for the summary.
  bash -c "$command" 2>&1 | tee "$log"
  rc="${PIPESTATUS[0]}"
  mapfile -t skips < <(grep -E '^skip: |^!!!!.*SKIPP(ING|ED)' "$log" | sort -u)
  count="$(grep -Eo '[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log" | tail -n 1 | awk '{print $5}')"
  [ -n "$count" ] || count="${#skips[@]}"
  [ "$count" -ge "${#skips[@]}" ] || count="${#skips[@]}"
  status="ok"
  if [ "$rc" -ne 0 ]; then status="FAIL (exit $rc)"; FAILED=$((FAILED + 1)); fi
  if [ "$count" -gt 0 ]; then
    status+=", $count skipped"
    SKIPPED=$((SKIPPED + count))
    for s in "${skips[@]}"; do SKIP_REPORT+=("$name: $s"); done
  fi
  NAMES+=("$name") LINES+=("$status")
done

# A failed suite's last lines again, just above the summary: the end of the output is often all
# a reader (a CI page) shows, and the Rust suite's output would otherwise bury them.
for i in "${!NAMES[@]}"; do
  if [[ "${LINES[$i]}" == FAIL* ]]; then
    printf '\n==== make test: suite %s failed; its last 60 lines\n' "${NAMES[$i]}"
    tail -n 60 "$LOGS/${NAMES[$i]}.log" | cut -c1-300
  fi
done

printf '\n==== make test: summary\n'
for i in "${!NAMES[@]}"; do printf '  %-8s %s\n' "${NAMES[$i]}" "${LINES[$i]}"; done
for s in "${SKIP_REPORT[@]}"; do printf '  !!!! SKIPPED %s\n' "$s"; done
verdict="$FAILED suite(s) failed, $SKIPPED skip(s)"
if [ "$FAILED" -gt 0 ]; then
  echo "make test: FAILED: $verdict"
  exit 1
fi
if [ "$SKIPPED" -gt 0 ] && [ "$CI" = "true" ]; then
  echo "make test: FAILED: $verdict; under CI=true every skip is a failure"
  exit 1
fi
echo "make test: ok: $verdict"
