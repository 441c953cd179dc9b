#!/usr/bin/env python3
"""Static and functional checks for deploy/** used by tests/deploy/check_deploy.sh.

Each sub-command prints its findings (one per line, indented) and exits 1 if
there is any, 0 otherwise. Run with the venv's python (PyYAML, promql-parser).
"""
from __future__ import annotations

import argparse
import http.client
import http.server
import json
import re
import socket
import sys
from pathlib import Path

problems: list[str] = []


def bad(msg: str) -> None:
    problems.append(msg)


def finish(summary: str) -> int:
    for p in problems:
        print(f"    - {p}")
    if not problems:
        print(f"    {summary}")
    return 1 if problems else 0


def load_yaml_all(path: Path) -> list:
    import yaml

    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


# --------------------------------------------------------------------------
# Grafana: every PromQL expression may use only the gateway's series.
# --------------------------------------------------------------------------
COMMON_LABELS = {"job", "instance"}
COUNTERS = {
    "synochat_http_requests_total": {"route", "method", "status"},
    "synochat_upstream_calls_total": {"api", "method", "outcome"},
    "synochat_upstream_logins_total": {"outcome"},
    "synochat_upstream_relogins_total": set(),
    "synochat_cache_requests_total": {"cache", "result"},
    "synochat_delivery_attempts_total": {"outcome"},
    "synochat_hook_requests_total": {"hook", "answer"},
    "synochat_log_lines_dropped_total": set(),
}
GAUGES = {
    "synochat_http_requests_in_flight": set(),
    "synochat_delivery_queue_depth": {"state"},
    "synochat_delivery_oldest_age_seconds": {"state"},
    "synochat_subscriptions_disabled": set(),
}
HISTOGRAMS = {
    "synochat_http_request_duration_seconds": {"route", "method"},
    "synochat_upstream_call_duration_seconds": {"api", "method"},
    "synochat_delivery_latency_seconds": set(),
}
LABEL_VALUES = {
    "outcome": {"ok", "dsm_error", "transport_error", "timeout", "busy", "not_sendable", "failed",
                "delivered", "retry", "expired", "handed_back"},
    "state": {"queued", "sending", "delivered", "failed", "cancelled"},
    "cache": {"users", "channels"},
    "result": {"hit", "miss"},
    "answer": {"accepted", "duplicate", "not_posted", "bad_request", "unauthorized",
               "refused", "unavailable"},
}


def allowed_series() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, labels in {**COUNTERS, **GAUGES}.items():
        out[name] = labels | COMMON_LABELS
    for name, labels in HISTOGRAMS.items():
        out[name + "_bucket"] = labels | COMMON_LABELS | {"le"}
        out[name + "_sum"] = labels | COMMON_LABELS
        out[name + "_count"] = labels | COMMON_LABELS
    return out


def grafana_vars_to_literals(expr: str) -> str:
    expr = re.sub(r"\$(__rate_interval|__interval|__range)\b", "5m", expr)
    expr = re.sub(r"\$\{__(rate_interval|interval|range)\}", "5m", expr)
    expr = re.sub(r"\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*", "x", expr)
    return expr


def promql_selectors(node, where: str, ctx_labels: list[set[str]]):
    """Yield (name, matchers) for every vector selector and check grouping labels."""
    import promql_parser as pp

    if isinstance(node, pp.VectorSelector):
        yield node
        return
    if isinstance(node, pp.MatrixSelector):
        yield node.vector_selector
        return
    if isinstance(node, pp.AggregateExpr):
        sels = list(promql_selectors(node.expr, where, ctx_labels))
        if node.modifier is not None:
            known = set()
            series = allowed_series()
            for s in sels:
                known |= series.get(s.name or "", set())
            for lab in node.modifier.labels:
                if lab not in known:
                    bad(f"{where}: grouping label '{lab}' is not a label of "
                        f"{sorted({s.name for s in sels})}")
        yield from sels
        if node.param is not None:
            yield from promql_selectors(node.param, where, ctx_labels)
        return
    for attr in ("lhs", "rhs", "expr"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from promql_selectors(child, where, ctx_labels)
    for child in getattr(node, "args", None) or []:
        yield from promql_selectors(child, where, ctx_labels)


def check_promql(expr: str, where: str, used: set[str]) -> None:
    import promql_parser as pp

    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", expr, re.S)
    if m:
        expr = m.group(1)
    elif expr.strip().startswith(("label_values(", "query_result(", "metrics(", "label_names(")):
        bad(f"{where}: unsupported variable query {expr!r}")
        return
    lit = grafana_vars_to_literals(expr)
    try:
        ast = pp.parse(lit)
    except Exception as exc:  # noqa: BLE001 - parser raises ValueError & co
        bad(f"{where}: PromQL does not parse: {exc}: {lit}")
        return
    series = allowed_series()
    n = 0
    for sel in promql_selectors(ast, where, []):
        n += 1
        name = sel.name
        if not name:
            bad(f"{where}: selector without a metric name: {sel}")
            continue
        if name not in series:
            bad(f"{where}: unknown series '{name}'")
            continue
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
                base = name[: -len(suffix)]
        used.add(base)
        for mt in sel.matchers.matchers:
            if mt.name == "__name__":
                bad(f"{where}: __name__ matcher not allowed")
            elif mt.name not in series[name]:
                bad(f"{where}: label '{mt.name}' is not a label of {name}")
            elif mt.name in LABEL_VALUES and "Re" not in str(mt.op):
                if mt.value not in LABEL_VALUES[mt.name]:
                    bad(f"{where}: {mt.name}=\"{mt.value}\" is not a documented value")
    if n == 0:
        bad(f"{where}: expression has no series: {expr}")


def cmd_grafana(args) -> int:
    path = Path(args.file)
    try:
        dash = json.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001
        bad(f"not valid JSON: {exc}")
        return finish("")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        bad(f"schemaVersion {dash.get('schemaVersion')!r} < 36")
    for key in ("title", "uid", "panels", "templating"):
        if key not in dash:
            bad(f"missing top-level '{key}'")
    tvars = dash.get("templating", {}).get("list", [])
    ds_vars = [v for v in tvars if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds_vars:
        bad("no datasource template variable of type prometheus")
    ds_names = {f"${{{v['name']}}}" for v in ds_vars} | {f"${v['name']}" for v in ds_vars}
    used: set[str] = set()
    exprs = 0
    for v in tvars:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            check_promql(q or "", f"variable {v.get('name')}", used)
            if (v.get("datasource") or {}).get("uid") not in ds_names:
                bad(f"variable {v.get('name')}: datasource is not the datasource variable")

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    ids = set()
    for p in panels(dash.get("panels", [])):
        title = p.get("title", "?")
        if p.get("id") in ids:
            bad(f"duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            bad(f"panel '{title}': no gridPos")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") not in ds_names:
            bad(f"panel '{title}': datasource is not the datasource variable")
        if not p.get("targets"):
            bad(f"panel '{title}': no targets")
        for t in p.get("targets", []):
            exprs += 1
            check_promql(t.get("expr", ""), f"panel '{title}' {t.get('refId')}", used)
    expected = set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS)
    for missing in sorted(expected - used):
        bad(f"series {missing} is not shown on any panel")
    return finish(f"{exprs} panel expressions + variable queries use only the "
                  f"{len(expected)} gateway series (all {len(used)} shown)")


# --------------------------------------------------------------------------
# Compose structure (in addition to the compose-spec JSON schema).
# --------------------------------------------------------------------------
def cmd_rules(args) -> int:
    """Prometheus alerting rules: each has a name, an expression over the gateway's series
    (labels and documented label values checked as on the dashboard) and a summary."""
    import yaml
    try:
        doc = yaml.safe_load(Path(args.file).read_text())
    except Exception as exc:  # noqa: BLE001
        bad(f"not valid YAML: {exc}")
        return finish("")
    used: set[str] = set()
    rules = 0
    for group in (doc or {}).get("groups", []):
        for rule in group.get("rules", []):
            rules += 1
            name = rule.get("alert") or "?"
            if not rule.get("alert"):
                bad(f"rule {rules}: no alert name")
            if not (rule.get("annotations") or {}).get("summary"):
                bad(f"rule {name}: no summary annotation")
            check_promql(str(rule.get("expr", "")), f"rule {name}", used)
    if rules == 0:
        bad("no rules")
    return finish(f"{rules} alerting rules use only gateway series ({', '.join(sorted(used))})")


def cmd_compose(args) -> int:
    path = Path(args.file)
    docs = load_yaml_all(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        bad("expected one YAML mapping")
        return finish("")
    c = docs[0]
    services = c.get("services") or {}
    for name in ("gateway", "nginx"):
        if name not in services:
            bad(f"service '{name}' missing")
    for name, s in services.items():
        if "image" not in s and "build" not in s:
            bad(f"service {name}: neither image nor build")
        if "healthcheck" not in s:
            bad(f"service {name}: no healthcheck")
    gw = services.get("gateway", {})
    b = gw.get("build", {})
    if (path.parent / b.get("context", ".") / b.get("dockerfile", "Dockerfile")).resolve() != \
            (path.parent / "docker" / "Dockerfile").resolve():
        bad("gateway build does not point at deploy/docker/Dockerfile with the repo root as context")
    env = gw.get("environment", {})
    if any(k.startswith("SYNOCHAT__UPSTREAM__URL") for k in env):
        bad("gateway is not in demo mode (SYNOCHAT__UPSTREAM__URL set)")
    if str(env.get("SYNOCHAT__UPSTREAM__DEMO", "")).lower() != "true":
        bad("gateway binds 0.0.0.0 without upstream.url but lacks SYNOCHAT__UPSTREAM__DEMO=true")
    h = env.get("SYNOCHAT__AUTH__KEYS__DEMO__HASH", "")
    if not re.fullmatch(r"[0-9a-f]{64}", str(h)):
        bad("demo key hash missing or not 64 hex chars")
    else:
        import hashlib

        text = path.read_text()
        keys = re.findall(r"sck_demo_[A-Za-z0-9_]+", text)
        if not keys or any(hashlib.sha256(k.encode()).hexdigest() != h for k in set(keys)):
            bad("the demo key in the comments does not hash to SYNOCHAT__AUTH__KEYS__DEMO__HASH")
    if "_FILE" not in path.read_text():
        bad("no commented *_FILE secret example for a real NAS")
    grace = re.fullmatch(r"(\d+)s", str(gw.get("stop_grace_period", "10s")))
    if not grace or int(grace.group(1)) <= DRAIN_SECS:
        bad(f"gateway stop_grace_period is not longer than the drain ({DRAIN_SECS} s)")
    if gw.get("healthcheck", {}).get("test") != ["CMD", "/usr/local/bin/syno-chat-gateway", "healthcheck"]:
        bad("gateway healthcheck is not the binary's healthcheck subcommand")
    ng = services.get("nginx", {})
    if not any(str(p).endswith(":8080") or str(p) == "8080" for p in ng.get("ports", [])):
        bad("nginx does not publish port 8080")
    mounts = " ".join(map(str, ng.get("volumes", [])))
    if "nginx/syno-chat-gateway.conf" not in mounts:
        bad("nginx does not mount deploy/nginx/syno-chat-gateway.conf")
    for vol in gw.get("volumes", []) + ng.get("volumes", []):
        src = str(vol).split(":")[0]
        if src.startswith(".") and not (path.parent / src).exists():
            bad(f"bind-mount source {src} does not exist")
    return finish(f"services {sorted(services)}: image/build, healthcheck, ports, demo key, mounts")


# --------------------------------------------------------------------------
# Kubernetes semantics on the rendered manifests.
# --------------------------------------------------------------------------
# server.shutdown_timeout_secs (30) + the DSM logout, bounded by upstream.timeout_ms (10 s): every
# stop timeout (Kubernetes, compose, systemd) must be longer, or the drain is cut short.
DRAIN_SECS = 40


def cmd_k8s(args) -> int:
    base = {(d["kind"], d["metadata"]["name"]): d for d in load_yaml_all(Path(args.base))}
    demo = {(d["kind"], d["metadata"]["name"]): d for d in load_yaml_all(Path(args.demo))}
    for kind in ("Deployment", "Service", "ConfigMap",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        if not any(k == kind for k, _ in base):
            bad(f"base: no {kind}")
    # The operator makes the real Secret: a Secret in the base would overwrite it with placeholders.
    if any(k == "Secret" for k, _ in base):
        bad("base: ships a Secret (it would overwrite the operator's); leave it out")
    if not any(k == "Secret" for k, _ in demo):
        bad("demo: no Secret for the demo key")
    for label, res in (("base", base), ("demo", demo)):
        dep = res.get(("Deployment", "syno-chat-gateway"))
        if not dep:
            bad(f"{label}: Deployment syno-chat-gateway missing")
            continue
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            bad(f"{label}: readiness probe is not /readyz")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            bad(f"{label}: liveness probe is not /healthz")
        sc = c.get("securityContext", {})
        if not (pod.get("securityContext", {}).get("runAsNonRoot") or sc.get("runAsNonRoot")):
            bad(f"{label}: not runAsNonRoot")
        if not sc.get("readOnlyRootFilesystem"):
            bad(f"{label}: root filesystem not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{label}: allowPrivilegeEscalation not false")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            bad(f"{label}: resources requests/limits missing")
        # Endpoints are removed while the pod stops, not before: without a wait before
        # SIGTERM, connections still routed to it are refused.
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if pre_stop < 3:
            bad(f"{label}: no preStop sleep of at least 3 s before SIGTERM")
        if pod.get("terminationGracePeriodSeconds", 30) <= DRAIN_SECS + pre_stop:
            bad(f"{label}: terminationGracePeriodSeconds <= {DRAIN_SECS + pre_stop} s "
                "(the preStop wait, the drain and the DSM logout)")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        secret_dirs = [mounts[n] for n, v in vols.items() if "secret" in v and n in mounts]
        file_env = {k: v for k, v in env.items() if k.endswith("_FILE")}
        if not file_env:
            bad(f"{label}: no *_FILE env vars")
        secret_names = [v["secret"]["secretName"] for v in vols.values() if "secret" in v]
        for k, v in file_env.items():
            if not any(v.startswith(d.rstrip("/") + "/") for d in secret_dirs):
                bad(f"{label}: {k}={v} is not under a mounted Secret")
            elif label == "demo":
                key = v.rsplit("/", 1)[1]
                sec = next((res[("Secret", n)] for n in secret_names if ("Secret", n) in res), None)
                if sec is None:
                    bad(f"demo: the mounted Secret {secret_names} is not in the manifests")
                elif key not in {**sec.get("data", {}), **sec.get("stringData", {})}:
                    bad(f"{label}: {k} points at '{key}', which the Secret does not have")
        # configMapGenerator names carry a content hash: a config edit rolls the pods.
        cm_refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
        cm_refs += [v["configMap"]["name"] for v in vols.values() if "configMap" in v]
        for name in cm_refs:
            if not re.fullmatch(r"syno-chat-gateway-(env|config)-[a-z0-9]{10}", name):
                bad(f"{label}: ConfigMap {name} is not from a configMapGenerator (no content hash)")
        cm_names = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
        if not cm_names:
            bad(f"{label}: no envFrom ConfigMap")
        cm = res.get(("ConfigMap", cm_names[0])) if cm_names else None
        if cm_names and not cm:
            bad(f"{label}: ConfigMap {cm_names[0]} not in the manifests")
        for k in (cm or {}).get("data", {}):
            if re.search(r"PASSWORD|TOKEN|HASH", k) and not k.endswith("_FILE"):
                bad(f"{label}: secret-looking key {k} in a ConfigMap")
        svc = res.get(("Service", "syno-chat-gateway"))
        if svc:
            sel = svc["spec"]["selector"]
            tl = dep["spec"]["template"]["metadata"]["labels"]
            if any(tl.get(k) != v for k, v in sel.items()):
                bad(f"{label}: Service selector does not match the pod labels")
            ports = {p["name"] for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                    bad(f"{label}: Service targetPort {p['targetPort']} is not a container port")
        if label == "demo":
            data = (cm or {}).get("data", {})
            if "SYNOCHAT__UPSTREAM__URL" in data or "SYNOCHAT__UPSTREAM__PASSWORD_FILE" in env:
                bad("demo: upstream URL / password still configured")
            if dep["spec"].get("replicas") != 1:
                bad("demo: replicas != 1")
            if str(data.get("SYNOCHAT__UPSTREAM__DEMO", "")).lower() != "true":
                bad("demo: SYNOCHAT__UPSTREAM__DEMO=true missing (required on a public bind)")
        else:
            if "SYNOCHAT__UPSTREAM__URL" not in ((cm or {}).get("data", {})):
                bad("base: SYNOCHAT__UPSTREAM__URL missing (base is for a real NAS)")
            if "SYNOCHAT__UPSTREAM__PASSWORD_FILE" not in env:
                bad("base: SYNOCHAT__UPSTREAM__PASSWORD_FILE missing")
            if "SYNOCHAT__UPSTREAM__DEMO" in ((cm or {}).get("data", {})):
                bad("base: SYNOCHAT__UPSTREAM__DEMO set (refused together with upstream.url)")
    hpa = base.get(("HorizontalPodAutoscaler", "syno-chat-gateway"))
    if hpa and hpa["apiVersion"] != "autoscaling/v2":
        bad("HPA is not autoscaling/v2")
    pdb = base.get(("PodDisruptionBudget", "syno-chat-gateway"))
    if pdb and pdb["apiVersion"] != "policy/v1":
        bad("PDB is not policy/v1")
    return finish(f"base ({len(base)} objects) and demo ({len(demo)} objects): probes, "
                  "securityContext, _FILE secrets, selectors, demo mode")


# --------------------------------------------------------------------------
# Dockerfile: required instructions (also run when hadolint is there).
# --------------------------------------------------------------------------
def cmd_dockerfile(args) -> int:
    text = Path(args.file).read_text()
    logical = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    if len(froms) < 2:
        bad("not multi-stage (fewer than 2 FROM)")
    if not any("rust:${RUST_VERSION}-slim-bookworm" in f or "rust:1.95-slim-bookworm" in f for f in froms):
        bad("builder is not rust:1.95-slim-bookworm")
    if "ARG RUST_VERSION=1.95" not in lines and not any("rust:1.95" in f for f in froms):
        bad("Rust version is not 1.95")
    if froms and not re.search(r"(debian:bookworm-slim|distroless/cc)", froms[-1]):
        bad("runtime stage is not debian:bookworm-slim or distroless/cc")
    if "--locked" not in text or "--bin syno-chat-gateway" not in text:
        bad("cargo build lacks --locked --bin syno-chat-gateway")
    final = lines[lines.index(froms[-1]):] if froms else lines
    users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        bad("final stage does not switch to a non-root USER")
    need = {
        "EXPOSE 8080": r"EXPOSE\s+8080\b",
        "ENV SYNOCHAT__SERVER__BIND=0.0.0.0:8080": r"ENV\s.*SYNOCHAT__SERVER__BIND=0\.0\.0\.0:8080",
        "HEALTHCHECK healthcheck": r'HEALTHCHECK\s.*CMD\s+\["/usr/local/bin/syno-chat-gateway",\s*"healthcheck"\]',
        "STOPSIGNAL SIGTERM": r"STOPSIGNAL\s+SIGTERM\b",
        "ENTRYPOINT binary": r'ENTRYPOINT\s+\["/usr/local/bin/syno-chat-gateway"',
        "dependency layer (COPY Cargo.toml Cargo.lock)": r"COPY\s+Cargo\.toml\s+Cargo\.lock",
    }
    for label in ("source", "version", "revision"):
        if not re.search(rf"org\.opencontainers\.image\.{label}=\"\$\{{[A-Z]+\}}\"", logical):
            bad(f"OCI label org.opencontainers.image.{label} missing or not from a build argument")
    cargo = (Path(args.file).parents[2] / "Cargo.toml").read_text()
    crate_version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    if f"ARG VERSION={crate_version}" not in lines:
        bad(f"ARG VERSION default is not Cargo.toml's version {crate_version}")
    for what, rx in need.items():
        if not any(re.match(rx, ln) for ln in final if not what.startswith("dependency")) and \
                not (what.startswith("dependency") and any(re.match(rx, ln) for ln in lines)):
            bad(f"missing {what}")
    return finish("multi-stage, rust 1.95 builder, dependency layer, non-root USER, EXPOSE, ENV bind, "
                  "HEALTHCHECK, STOPSIGNAL")


# --------------------------------------------------------------------------
# nginx files: body limit and retries (nginx -t cannot judge either).
# --------------------------------------------------------------------------
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def cmd_nginx(args) -> int:
    cargo_default = 32 * 1024 * 1024  # server.max_upload_bytes
    for f in args.files:
        text = re.sub(r"#.*", "", Path(f).read_text())
        sizes = re.findall(r"client_max_body_size\s+(\d+)([kKmMgG]?)\s*;", text)
        if not sizes:
            bad(f"{f}: no client_max_body_size (nginx's 1m default is below the upload limit)")
        for number, unit in sizes:
            if int(number) * SIZE_UNITS[unit.lower()] < cargo_default:
                bad(f"{f}: client_max_body_size {number}{unit} is below server.max_upload_bytes")
        for retry in re.findall(r"proxy_next_upstream\s+([^;]*);", text):
            conditions = retry.split()
            # The gateway's own 5xx answers are about DSM, which may have done the write.
            if any(c.startswith("http_5") or c == "non_idempotent" for c in conditions):
                bad(f"{f}: proxy_next_upstream {retry} retries writes the NAS may have done")
    return finish(f"{len(args.files)} files: client_max_body_size >= 32 MiB, "
                  "no retry of the gateway's 5xx answers")


# --------------------------------------------------------------------------
# Traefik dynamic config structure.
# --------------------------------------------------------------------------
def cmd_traefik(args) -> int:
    path = Path(args.file)
    d = load_yaml_all(path)[0]
    http = d.get("http", {})
    routers, mws, svcs = http.get("routers", {}), http.get("middlewares", {}), http.get("services", {})
    transports = http.get("serversTransports", {})
    strip = [n for n, m in mws.items() if "stripPrefix" in m]
    heads = [n for n, m in mws.items() if "headers" in m]
    if not strip or "/chat" not in mws[strip[0]]["stripPrefix"].get("prefixes", []):
        bad("no stripPrefix middleware for /chat")
    if not heads:
        bad("no headers middleware")
    for rn, r in routers.items():
        for m in r.get("middlewares", []):
            if m not in mws:
                bad(f"router {rn}: unknown middleware {m}")
        s = r.get("service", "")
        if s not in svcs and not s.endswith("@internal"):
            bad(f"router {rn}: unknown service {s}")
        if "/chat" not in r.get("rule", ""):
            bad(f"router {rn}: rule does not match /chat")
    main = [r for r in routers.values() if strip and strip[0] in r.get("middlewares", [])]
    if not main:
        bad("no router uses the stripPrefix middleware")
    for sn, s in svcs.items():
        lb = s.get("loadBalancer", {})
        if not lb.get("servers"):
            bad(f"service {sn}: no servers")
        t = lb.get("serversTransport")
        if t and t not in transports:
            bad(f"service {sn}: unknown serversTransport {t}")
    static = path.parent.parent / "traefik.yaml"
    if static.exists():
        st = load_yaml_all(static)[0]
        eps = set(st.get("entryPoints", {}))
        for rn, r in routers.items():
            for ep in r.get("entryPoints", []):
                if ep not in eps:
                    bad(f"router {rn}: entry point {ep} not in traefik.yaml")
    return finish(f"routers {sorted(routers)}, middlewares {sorted(mws)}: references resolve")


# --------------------------------------------------------------------------
# systemd unit: static check (always; also the fallback without systemd-analyze).
# --------------------------------------------------------------------------
def cmd_systemd(args) -> int:
    text = Path(args.file).read_text()
    section, keys = None, {}
    for raw in text.splitlines():
        ln = raw.strip()
        if not ln or ln.startswith(("#", ";")):
            continue
        if ln.startswith("[") and ln.endswith("]"):
            section = ln[1:-1]
            continue
        if "=" not in ln or section is None:
            bad(f"unparsable line: {raw!r}")
            continue
        k, v = ln.split("=", 1)
        keys.setdefault((section, k.strip()), []).append(v.strip())
    S = "Service"
    want = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes", "KillSignal": "SIGTERM",
    }
    for k, v in want.items():
        if keys.get((S, k), [None])[-1] != v:
            bad(f"{k}={v} missing")
    stop = keys.get((S, "TimeoutStopSec"), ["90"])[-1]
    if not stop.isdigit() or int(stop) <= DRAIN_SECS:
        bad(f"TimeoutStopSec={stop} is not longer than the drain ({DRAIN_SECS} s)")
    if keys.get((S, "RestrictAddressFamilies"), [None])[-1] != "AF_INET AF_INET6 AF_UNIX":
        bad("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX missing")
    if "@system-service" not in keys.get((S, "SystemCallFilter"), []):
        bad("SystemCallFilter=@system-service missing")
    if keys.get((S, "CapabilityBoundingSet"), [None])[0] != "":
        bad("CapabilityBoundingSet= (empty) missing")
    if keys.get((S, "DynamicUser"), ["no"])[-1] != "yes" and not keys.get((S, "User")):
        bad("neither DynamicUser=yes nor User=")
    creds = [c.split(":", 1)[0] for c in keys.get((S, "LoadCredential"), [])]
    envs = keys.get((S, "Environment"), [])
    if "dsm_password" not in creds:
        bad("LoadCredential=dsm_password:... missing")
    if "SYNOCHAT__UPSTREAM__PASSWORD_FILE=%d/dsm_password" not in envs:
        bad("Environment=SYNOCHAT__UPSTREAM__PASSWORD_FILE=%d/dsm_password missing")
    for e in envs:
        m = re.match(r"\S+_FILE=%d/(\S+)", e)
        if m and m.group(1) not in creds:
            bad(f"{e}: no LoadCredential for {m.group(1)}")
    if not any(v.startswith("/") for v in keys.get((S, "ExecStart"), [])):
        bad("ExecStart missing or not absolute")
    if ("Install", "WantedBy") not in keys:
        bad("[Install] WantedBy missing")
    return finish(f"hardening directives, LoadCredential + %d/_FILE, TimeoutStopSec > {DRAIN_SECS}")


# --------------------------------------------------------------------------
# Reverse proxy probe: echo backend + requests through the proxy.
# --------------------------------------------------------------------------
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                           "peer": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def cmd_echo(args) -> int:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Echo)
    srv.daemon_threads = True
    print(f"echo backend on {args.port}", flush=True)
    srv.serve_forever()
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_free_port(args) -> int:
    print(free_port())
    return 0


def cmd_probe(args) -> int:
    import time

    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                bad(f"proxy not listening on {args.port}")
                return finish("")
            time.sleep(0.1)
    pre = args.prefix
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
    peers = set()
    for i in range(3):
        conn.request("GET", f"{pre}/api/v1/channels?x=1", headers={
            "Host": "gw.example.test:8443", "X-Request-Id": f"req-{i}",
            "X-Forwarded-Prefix": "/evil", "Forwarded": "for=1.2.3.4"})
        r = conn.getresponse()
        raw = r.read()
        if r.status != 200:
            bad(f"GET {pre}/api/v1/channels -> {r.status}")
            return finish("")
        try:
            d = json.loads(raw)
        except ValueError:
            bad(f"GET {pre}/api/v1/channels did not reach the echo backend: {raw[:200]!r}")
            return finish("")
        h = d["headers"]
        peers.add(d["peer"])
        if d["path"] != "/api/v1/channels?x=1":
            bad(f"prefix not stripped: backend saw {d['path']}")
        if h.get("x-forwarded-prefix") != pre:
            bad(f"X-Forwarded-Prefix = {h.get('x-forwarded-prefix')!r}, want {pre!r}")
        if h.get("x-forwarded-proto") != "http":
            bad(f"X-Forwarded-Proto = {h.get('x-forwarded-proto')!r}")
        if h.get("x-forwarded-host") not in ("gw.example.test:8443",):
            bad(f"X-Forwarded-Host = {h.get('x-forwarded-host')!r}")
        if (h.get("x-forwarded-for") or "").split(",")[-1].strip() != "127.0.0.1":
            bad(f"X-Forwarded-For = {h.get('x-forwarded-for')!r}")
        if args.request_id and h.get("x-request-id") != f"req-{i}":
            bad(f"X-Request-Id not passed through: {h.get('x-request-id')!r}")
        if "forwarded" in h:
            bad("client Forwarded header reached the backend")
    if args.keepalive and len(peers) != 1:
        bad(f"upstream keep-alive not used: {len(peers)} backend connections for 3 requests")
    conn.request("GET", pre)
    r = conn.getresponse()
    r.read()
    if r.status not in (301, 308) or r.getheader("Location", "").split("://")[-1].split("/", 1)[-1] \
            != pre.lstrip("/") + "/":
        bad(f"GET {pre} -> {r.status} Location={r.getheader('Location')!r}, want redirect to {pre}/")
    conn.request("GET", "/other")
    r = conn.getresponse()
    body = r.read()
    if r.status == 200 and b'"path"' in body:
        bad("paths outside the prefix reach the gateway")
    return finish(f"prefix stripped, X-Forwarded-Prefix/Proto/Host/For set{', request id kept' if args.request_id else ''}"
                  f"{', keep-alive upstream' if args.keepalive else ''}, {pre} redirects")


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("grafana", "rules", "compose", "dockerfile", "traefik", "systemd"):
        sp = sub.add_parser(name)
        sp.add_argument("file")
    sp = sub.add_parser("nginx")
    sp.add_argument("files", nargs="+")
    sp = sub.add_parser("k8s")
    sp.add_argument("base")
    sp.add_argument("demo")
    sp = sub.add_parser("echo")
    sp.add_argument("port", type=int)
    sub.add_parser("free-port")
    sp = sub.add_parser("probe")
    sp.add_argument("port", type=int)
    sp.add_argument("prefix")
    sp.add_argument("--request-id", action="store_true")
    sp.add_argument("--keepalive", action="store_true")
    args = ap.parse_args()
    fn = {"grafana": cmd_grafana, "rules": cmd_rules, "compose": cmd_compose, "dockerfile": cmd_dockerfile,
          "traefik": cmd_traefik, "systemd": cmd_systemd, "k8s": cmd_k8s, "echo": cmd_echo,
          "free-port": cmd_free_port, "probe": cmd_probe, "nginx": cmd_nginx}[args.cmd]
    return fn(args)


if __name__ == "__main__":
    sys.exit(main())
