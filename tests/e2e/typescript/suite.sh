#!/usr/bin/env bash
# e2e suite `typescript-client`, run by tests/e2e/run.sh after `npm ci` in this directory:
#   1. openapi-typescript generates schema.d.ts from the live $GATEWAY_URL/openapi.json (not the
#      committed openapi/openapi.json); any warning or error it prints fails the suite
#   2. tsc type-checks client.mts against it (strict, tsconfig.json) and compiles it
#   3. node runs the compiled client against the gateway (GATEWAY_URL, GATEWAY_KEY)
# Everything generated goes to a scratch directory; the generated schema.d.ts is also kept as
# $ARTIFACTS/typescript-client/schema.d.ts when ARTIFACTS is set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${GATEWAY_URL:?GATEWAY_URL is not set: run this through bash tests/e2e/run.sh}"
: "${GATEWAY_KEY:?GATEWAY_KEY is not set: run this through bash tests/e2e/run.sh}"
BIN="$HERE/node_modules/.bin"
for tool in openapi-typescript tsc; do
  [ -x "$BIN/$tool" ] || { echo "FAIL: $BIN/$tool is missing: run npm ci in $HERE"; exit 1; }
done
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The compiled client imports openapi-fetch: node finds it through this link.
ln -s "$HERE/node_modules" "$WORK/node_modules"

step() { printf '\n---- %s\n' "$*"; }

step "node $(node --version), openapi-typescript $("$BIN/openapi-typescript" --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -1), tsc $("$BIN/tsc" --version | grep -Eo "[0-9]+\.[0-9]+\.[0-9]+")"

step "openapi-typescript $GATEWAY_URL/openapi.json"
# NO_COLOR: plain text, so that the warning check below sees words, not escape codes.
if ! NO_COLOR=1 FORCE_COLOR=0 "$BIN/openapi-typescript" "$GATEWAY_URL/openapi.json" -o "$WORK/schema.d.ts" \
    >"$WORK/generate.log" 2>&1; then
  cat "$WORK/generate.log"
  echo "FAIL: openapi-typescript could not generate types from the live document"
  exit 1
fi
cat "$WORK/generate.log"
# Users generate clients from the document: a warning means they get one that is less than it says.
if grep -Eiq 'warn|error' "$WORK/generate.log"; then
  echo "FAIL: openapi-typescript reported problems with the live document (above)"
  exit 1
fi
if [ -n "${ARTIFACTS:-}" ]; then
  mkdir -p "$ARTIFACTS/typescript-client"
  cp "$WORK/schema.d.ts" "$ARTIFACTS/typescript-client/schema.d.ts"
fi
echo "$(wc -l <"$WORK/schema.d.ts") lines of types"

step "tsc (strict) client.mts against the generated schema.d.ts"
# rootDirs merges this directory with the scratch one, so client.mts's `./schema.js` is the
# generated schema.d.ts.
cat >"$WORK/tsconfig.json" <<EOF
{
  "extends": "$HERE/tsconfig.json",
  "compilerOptions": {
    "rootDirs": ["$HERE", "$WORK"],
    "rootDir": "$HERE",
    "outDir": "$WORK/out"
  },
  "files": ["$HERE/client.mts"]
}
EOF
if ! "$BIN/tsc" -p "$WORK/tsconfig.json" >"$WORK/tsc.log" 2>&1; then
  # Paths relative to the repository root where they are inside it.
  sed "s#^$HERE/#tests/e2e/typescript/#" "$WORK/tsc.log"
  echo "FAIL: tsc: client.mts does not type-check against the types generated from the live document"
  [ -n "${ARTIFACTS:-}" ] && echo "      (the generated types: $ARTIFACTS/typescript-client/schema.d.ts)"
  exit 1
fi
echo "type-checks"

step "node client.mjs (against $GATEWAY_URL)"
node "$WORK/out/client.mjs"
