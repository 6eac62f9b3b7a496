#!/usr/bin/env python3
"""Checks deploy/kubernetes without a cluster; run by scripts/test-kubernetes.

Every kustomization (the base, each overlay) is built with the Go
kustomize (pykustomize) and, where kubectl is installed, with kubectl's;
the objects are validated against the Kubernetes API's strict schemas and
the custom resources' CRD schemas; their wiring is checked against the
turnpike.toml of their ConfigMaps, and `turnpike check-config` runs on each
with the pod's environment. A relay is shown to reload a certificate
swapped the way the kubelet updates a mounted Secret. Then each kind of
check is run on a deliberately broken copy and must fail.

Each failure is one line: `FAILED [where] what`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import kubernetes_validate
import yaml
from pykustomize import build as pykustomize_build

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes these manifests are for, and the newest schemas
# kubernetes-validate carries.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
NODE_PORTS = range(30000, 32768)
# The image's user (Dockerfile: useradd --uid 3478).
IMAGE_UID = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))

# Test values for the Secrets the pods read into their environment, by key.
SECRET_TEST_VALUES = {
    "secrets": "k8s-ci-shared-secret-0123456789abcdef",
    "url": "postgres://turnpike:ci-password@postgres.turnpike.svc:5432/turnpike",
    "uri": "postgres://turnpike:ci-password@turnpike-db-rw.turnpike.svc:5432/turnpike",
}

# The TURNPIKE_* variables of the settings checked here (turnpike.example.toml).
ENV_KEYS = {
    "TURNPIKE_LISTEN": ("stun", "listen", "list"),
    "TURNPIKE_UDP": ("stun", "udp", "bool"),
    "TURNPIKE_TCP": ("stun", "tcp", "bool"),
    "TURNPIKE_TURN": ("turn", "enabled", "bool"),
    "TURNPIKE_REALM": ("turn", "realm", "str"),
    "TURNPIKE_MIN_PORT": ("turn", "min_port", "int"),
    "TURNPIKE_MAX_PORT": ("turn", "max_port", "int"),
    "TURNPIKE_DATABASE": ("database", "url", "str"),
    "TURNPIKE_TLS_CERTIFICATE": ("tls", "certificate", "str"),
    "TURNPIKE_TLS_PRIVATE_KEY": ("tls", "private_key", "str"),
    "TURNPIKE_TLS_LISTEN": ("tls", "listen", "list"),
    "TURNPIKE_DTLS_LISTEN": ("tls", "dtls_listen", "list"),
    "TURNPIKE_ADMIN_LISTEN": ("admin", "listen", "list"),
    "TURNPIKE_ADMIN_TOKEN_FILE": ("admin", "token_file", "str"),
    "TURNPIKE_ADMIN_PROBES_WITHOUT_TOKEN": ("admin", "probes_without_token", "bool"),
    "TURNPIKE_SHUTDOWN_GRACE_PERIOD": ("shutdown", "grace_period", "int"),
    "TURNPIKE_ICE": ("ice", "enabled", "bool"),
    "TURNPIKE_ICE_AUTH": ("ice", "auth", "str"),
    "TURNPIKE_ICE_TOKEN_FILE": ("ice", "token_file", "str"),
    "TURNPIKE_DISCOVERY_RELAYS": ("discovery", "relays", "list"),
    "TURNPIKE_DISCOVERY_SRV_DOMAIN": ("discovery", "srv_domain", "str"),
    "TURNPIKE_DISCOVERY_ADMIN_PORT": ("discovery", "admin_port", "int"),
}
# Settings that name files the server reads.
FILE_KEYS = [("tls", "certificate"), ("tls", "private_key"), ("admin", "token_file"), ("ice", "token_file")]


def say(text: str) -> None:
    print(f"    {text}", flush=True)


# ---------------------------------------------------------------------------
# Building


def kustomization_dirs(kdir: Path = KDIR) -> list[Path]:
    """The kustomizations to build: the base and every overlay."""
    dirs = [kdir / "base"]
    dirs += sorted(p.parent for p in (kdir / "overlays").glob("*/kustomization.yaml"))
    return dirs


def build(path: Path) -> list[dict]:
    result = asyncio.run(pykustomize_build(str(path)))
    return [d for d in yaml.safe_load_all(result.yaml) if d]


def build_kubectl(path: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {rel(path)}: {out.stderr.strip().splitlines()[-1]}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def referenced_files(kdir: Path, seen: set[Path]) -> set[Path]:
    """Files a kustomization (and what it includes) uses."""
    kdir = kdir.resolve()
    if kdir in seen:
        return set()
    seen.add(kdir)
    kfile = kdir / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    files = {kfile}
    for entry in k.get("resources", []) + k.get("components", []):
        p = (kdir / entry).resolve()
        if p.is_dir():
            files |= referenced_files(p, seen)
        else:
            files.add(p)
    for patch in k.get("patches", []):
        if "path" in patch:
            files.add((kdir / patch["path"]).resolve())
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for f in gen.get("files", []):
            files.add((kdir / f.split("=", 1)[-1]).resolve())
    return files


def orphan_errors(dirs: list[Path], kdir: Path = KDIR) -> list[str]:
    used: set[Path] = set()
    seen: set[Path] = set()
    for d in dirs:
        used |= referenced_files(d, seen)
    errors = []
    for f in sorted(kdir.rglob("*")):
        if f.is_file() and f.suffix in (".yaml", ".yml", ".toml", ".json") and f.resolve() not in used:
            errors.append(f"{rel(f)} is in no kustomization: nothing builds or checks it")
    return errors


# ---------------------------------------------------------------------------
# Schemas


def obj_name(o: dict) -> str:
    return f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"


def schema_errors(objs: list[dict], tools: Path) -> tuple[list[str], list[str]]:
    """Errors, and one line per object saying what validated it."""
    errors, lines = [], []
    custom = []
    for o in objs:
        done = []
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
                done.append(version)
            except kubernetes_validate.SchemaNotFoundError:
                break
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path)
                message = e.message.splitlines()[0]
                message = message if len(message) < 200 else message[:200] + "..."
                errors.append(f"{obj_name(o)}: Kubernetes {e.version} schema (strict): {path}: {message}")
                done.append(version)
        if done:
            lines.append(f"{obj_name(o)}: Kubernetes {' and '.join(v[:-2] for v in done)} (strict) and kubernetes-models")
        custom.append(o)
    # Every object through the npm models too: the custom resources' CRD
    # schemas, and a second opinion on the rest.
    out = subprocess.run(
        ["node", str(Path(__file__).with_name("validate-models.mjs")), str(tools / "node_modules")],
        input=json.dumps(custom), capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"validate-models.mjs: {out.stderr.strip()}")
    for o, r in zip(custom, json.loads(out.stdout)):
        if r.get("unknown"):
            if not any(line.startswith(obj_name(o) + ":") for line in lines):
                errors.append(f"{obj_name(o)}: no schema for {o.get('apiVersion')} {o.get('kind')} in any package")
        elif r.get("error"):
            errors.append(f"{obj_name(o)}: {r['model']} schema: {r['error']}")
        elif not any(line.startswith(obj_name(o) + ":") for line in lines):
            lines.append(f"{obj_name(o)}: {r['model']} (CRD schema)")
    return errors, lines


# ---------------------------------------------------------------------------
# Wiring


def parse_duration(text: str) -> int:
    """turnpike drain --timeout: 90, 90s, 15m, 2h (admin_client::parse_duration)."""
    m = re.fullmatch(r"(\d+)([smh]?)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration turnpike takes (90, 90s, 15m, 2h)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def host_of(addr: str) -> str:
    return addr.rsplit(":", 1)[0].strip("[]")


class Pod:
    """A workload's pod template, with the turnpike container's settings."""

    def __init__(self, workload: dict, objs: list[dict]):
        self.workload = workload
        self.name = obj_name(workload)
        self.spec = workload["spec"]["template"]["spec"]
        self.labels = workload["spec"]["template"]["metadata"].get("labels", {})
        self.annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        self.container = next(c for c in self.spec["containers"] if c["name"] == "turnpike")
        self.argv = self.container.get("command", []) + self.container.get("args", [])
        self.subcommand = self.argv[1] if len(self.argv) > 1 else None
        self.objs = objs
        self.volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        self.env = self.resolve_env()

    def config_path(self) -> str:
        argv = self.argv
        if argv[2:] != ["--config", argv[-1]] or len(argv) != 4:
            raise ValueError(
                f"{self.name}: the turnpike container runs {argv}: expected [BINARY, SUBCOMMAND, --config, FILE] "
                "(flags there would override the ConfigMap unchecked)"
            )
        return argv[3]

    def mount_for(self, path: str) -> tuple[dict, dict] | None:
        best = None
        for m in self.container.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[0]["mountPath"]):
                    best = (m, self.volumes[m["name"]])
        return best

    def find(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.objs if o["kind"] == kind and o["metadata"]["name"] == name), None)

    def toml_text(self) -> str:
        path = self.config_path()
        found = self.mount_for(path)
        if not found or "configMap" not in found[1]:
            raise ValueError(f"{self.name}: --config {path} is on no ConfigMap volume")
        mount, volume = found
        key = path[len(mount["mountPath"].rstrip("/")) + 1:]
        cm = self.find("ConfigMap", volume["configMap"]["name"])
        if cm is None or key not in cm.get("data", {}):
            raise ValueError(f"{self.name}: ConfigMap {volume['configMap']['name']} has no key {key}")
        return cm["data"][key]

    def resolve_env(self) -> dict[str, str]:
        env = {}
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                key = e["valueFrom"]["secretKeyRef"]["key"]
                if key not in SECRET_TEST_VALUES:
                    raise ValueError(f"{self.name}: env {e['name']}: no test value for Secret key {key!r} (check.py SECRET_TEST_VALUES)")
                env[e["name"]] = SECRET_TEST_VALUES[key]
            else:
                raise ValueError(f"{self.name}: env {e['name']}: only value and secretKeyRef are checked")
        return env

    def settings(self, defaults: dict) -> dict:
        """The example file's defaults < the ConfigMap's file < the environment."""
        s = copy.deepcopy(defaults)
        for section, table in tomllib.loads(self.toml_text()).items():
            s.setdefault(section, {}).update(table)
        for name, value in self.env.items():
            if name not in ENV_KEYS:
                continue
            section, key, kind = ENV_KEYS[name]
            if kind == "list":
                v = [] if value.strip() == "none" else [x.strip() for x in value.split(",") if x.strip()]
            elif kind == "bool":
                v = value.strip() == "true"
            elif kind == "int":
                v = int(value)
            else:
                v = value
            s.setdefault(section, {})[key] = v
        return s

    def named_port(self, port) -> int | None:
        if isinstance(port, int):
            return port
        return next((p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port), None)


def example_defaults() -> tuple[dict, set[str]]:
    text = (ROOT / "turnpike.example.toml").read_text()
    envs = set(re.findall(r"\bTURNPIKE_[A-Z0-9_]+", text))
    return tomllib.loads(text), envs


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def wiring_errors(objs: list[dict]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    oks: list[str] = []
    defaults, known_env = example_defaults()
    workloads = [o for o in objs if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")]
    pods = [Pod(w, objs) for w in workloads]
    relays = [p for p in pods if p.subcommand == "serve"]
    ices = [p for p in pods if p.subcommand == "ice-config"]
    if not relays:
        errors.append("no workload runs `turnpike serve`")
    if not ices:
        errors.append("no workload runs `turnpike ice-config`")
    images = {p.container["image"] for p in pods}
    if len(images) != 1:
        errors.append(f"the workloads run different images: {sorted(images)}")

    for p in pods:
        n = p.name
        c = p.container
        s = p.settings(defaults)
        for name in p.env:
            if name.startswith("TURNPIKE_") and name not in known_env:
                errors.append(f"{n}: env {name} is no setting of turnpike.example.toml (misspelt?)")
        # Mounts: whole directories, and every file the settings name on a Secret.
        for m in c.get("volumeMounts", []):
            if "subPath" in m or "subPathExpr" in m:
                errors.append(f"{n}: volumeMount {m['name']} at {m['mountPath']} uses subPath: updates of its ConfigMap or Secret never reach the pod")
        for section, key in FILE_KEYS:
            path = s.get(section, {}).get(key)
            if not path:
                continue
            found = p.mount_for(path)
            if not found:
                errors.append(f"{n}: {section}.{key} = {path}: no volume of the pod is mounted there")
            elif "secret" not in found[1]:
                errors.append(f"{n}: {section}.{key} = {path}: mounted from volume {found[0]['name']}, not from a Secret")
        # Security.
        psc = p.spec.get("securityContext", {})
        csc = c.get("securityContext", {})
        if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
            errors.append(f"{n}: runAsNonRoot is not set")
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        if uid != IMAGE_UID:
            errors.append(f"{n}: runAsUser {uid}, the image's turnpike user is {IMAGE_UID}")
        if csc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{n}: readOnlyRootFilesystem is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{n}: allowPrivilegeEscalation is not false")
        caps = csc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            errors.append(f"{n}: capabilities do not drop ALL")
        low = [pp["containerPort"] for pp in c.get("ports", []) if pp["containerPort"] < 1024]
        for cap in caps.get("add", []):
            if cap != "NET_BIND_SERVICE" or not low:
                errors.append(f"{n}: adds capability {cap}, which no port below 1024 needs")
        req = c.get("resources", {}).get("requests", {})
        if "cpu" not in req or "memory" not in req:
            errors.append(f"{n}: no cpu and memory requests")
        # Probes: the admin endpoint's paths, on an admin.listen port, without a token.
        admin_ports = {port_of(a) for a in s["admin"]["listen"]}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
            pr = c.get(probe)
            if pr is None:
                if probe != "startupProbe":
                    errors.append(f"{n}: no {probe}")
                continue
            http = pr.get("httpGet")
            if not http:
                errors.append(f"{n}: {probe} is not an httpGet probe")
                continue
            if http.get("path") != path:
                errors.append(f"{n}: {probe} asks {http.get('path')}, the admin endpoint answers it on {path}")
            port = p.named_port(http.get("port"))
            if port not in admin_ports:
                errors.append(f"{n}: {probe} goes to port {http.get('port')} ({port}), admin.listen is on {sorted(admin_ports)}")
        if not s["admin"]["probes_without_token"]:
            errors.append(f"{n}: admin.probes_without_token is false: the kubelet's probes get 401")
        for a in s["admin"]["listen"]:
            if host_of(a).startswith("127.") or host_of(a) == "::1":
                errors.append(f"{n}: admin.listen {a} is loopback: the kubelet's probes and Prometheus cannot reach it")
        # Prometheus annotations.
        ann = p.annotations
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
            errors.append(f"{n}: prometheus.io/scrape and prometheus.io/path: /metrics annotations missing")
        if ann.get("prometheus.io/port", "").isdigit() and int(ann["prometheus.io/port"]) not in admin_ports:
            errors.append(f"{n}: prometheus.io/port {ann['prometheus.io/port']} is not an admin.listen port {sorted(admin_ports)}")
        # Container ports = the ports the settings listen on.
        want = {(port_of(a), "TCP") for a in s["admin"]["listen"]}
        if p.subcommand == "serve":
            for a in s["stun"]["listen"]:
                if s["stun"]["udp"]:
                    want.add((port_of(a), "UDP"))
                if s["stun"]["tcp"]:
                    want.add((port_of(a), "TCP"))
            if s["tls"].get("certificate"):
                want |= {(port_of(a), "TCP") for a in s["tls"]["listen"]}
                want |= {(port_of(a), "UDP") for a in s["tls"]["dtls_listen"]}
        have = {(pp["containerPort"], pp.get("protocol", "TCP")) for pp in c.get("ports", [])}
        for port, proto in sorted(want - have):
            errors.append(f"{n}: the settings listen on {port}/{proto}, which no container port declares")
        for port, proto in sorted(have - want):
            errors.append(f"{n}: container port {port}/{proto} is not one the settings listen on")
        oks.append(f"{n}: ports {' '.join(f'{a}/{b}' for a, b in sorted(have))} = the settings' listeners; probes /readyz and /healthz on admin {sorted(admin_ports)}")

    for p in relays:
        n = p.name
        s = p.settings(defaults)
        spec = p.spec
        if spec.get("hostNetwork") is not True:
            errors.append(f"{n}: hostNetwork is not true: relays need the node's addresses and relay ports")
        if spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
            errors.append(f"{n}: dnsPolicy {spec.get('dnsPolicy')}: with hostNetwork it must be ClusterFirstWithHostNet")
        # Relay range.
        lo, hi = s["turn"]["min_port"], s["turn"]["max_port"]
        listeners = {port_of(a) for key in ("listen",) for a in s["stun"][key]}
        listeners |= {port_of(a) for a in s["tls"]["listen"] + s["tls"]["dtls_listen"] + s["admin"]["listen"]}
        listeners |= {pp["containerPort"] for pp in p.container.get("ports", [])}
        for port in sorted(listeners):
            if lo <= port <= hi:
                errors.append(f"{n}: port {port} is inside the relay range {lo}-{hi}")
        if lo <= NODE_PORTS[-1] and hi >= NODE_PORTS[0]:
            errors.append(f"{n}: the relay range {lo}-{hi} overlaps the NodePort range 30000-32767")
        # The preStop drain, and a grace period that covers it.
        hook = p.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        shutdown = s["shutdown"]["grace_period"]
        if not hook:
            errors.append(f"{n}: no preStop exec hook: a rollout cuts the relay's calls after {shutdown} s")
        else:
            if hook[0] != p.argv[0] or "drain" not in hook or "--wait" not in hook:
                errors.append(f"{n}: preStop runs {hook}: expected {p.argv[0]} drain --wait --timeout D")
            cfg = hook[hook.index("--config") + 1] if "--config" in hook[:-1] else None
            if cfg != p.config_path():
                errors.append(f"{n}: preStop's --config {cfg} is not the server's {p.config_path()}: it would ask another admin endpoint")
            if "--timeout" not in hook[:-1]:
                errors.append(f"{n}: preStop drain has no --timeout: it could outlast terminationGracePeriodSeconds")
            else:
                try:
                    timeout = parse_duration(hook[hook.index("--timeout") + 1])
                except ValueError as e:
                    errors.append(f"{n}: preStop: {e}")
                    timeout = None
                if timeout is not None:
                    if grace <= timeout + shutdown:
                        errors.append(
                            f"{n}: terminationGracePeriodSeconds {grace} <= drain timeout {timeout} + "
                            f"shutdown.grace_period {shutdown}: the kubelet kills the relay before it ends its calls"
                        )
                    else:
                        oks.append(f"{n}: terminationGracePeriodSeconds {grace} > drain --timeout {timeout} + shutdown.grace_period {shutdown}")
        # One relay at a time.
        w = p.workload
        if w["kind"] == "DaemonSet":
            us = w["spec"].get("updateStrategy", {})
            ru = us.get("rollingUpdate", {})
            if us.get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 1 or ru.get("maxSurge", 0) not in (0, "0", "0%"):
                errors.append(f"{n}: updateStrategy must be RollingUpdate with maxUnavailable 1, maxSurge 0 (got {us})")
        pdbs = [o for o in p.objs if o["kind"] == "PodDisruptionBudget" and selects(o["spec"]["selector"].get("matchLabels", {}), p.labels)]
        if not pdbs or any(o["spec"].get("maxUnavailable") != 1 for o in pdbs):
            errors.append(f"{n}: no PodDisruptionBudget with maxUnavailable 1 selects the relay pods")
        # TLS from a Secret that a Certificate (if any) writes.
        if s["tls"].get("certificate"):
            found = p.mount_for(s["tls"]["certificate"])
            if found and "secret" in found[1]:
                secret = found[1]["secret"]["secretName"]
                certs = [o for o in p.objs if o["kind"] == "Certificate"]
                for cert in certs:
                    if cert["spec"]["secretName"] != secret:
                        errors.append(f"Certificate/{cert['metadata']['name']}: writes Secret {cert['spec']['secretName']}, the relays mount {secret}")
                    for key in ("certificate", "private_key"):
                        base = Path(s["tls"][key]).name
                        if base not in ("tls.crt", "tls.key"):
                            errors.append(f"{n}: tls.{key} is {base}: cert-manager writes tls.crt and tls.key")
        oks.append(f"{n}: hostNetwork, ClusterFirstWithHostNet, relay range {lo}-{hi} clear of listeners and NodePorts, one at a time (PDB, updateStrategy)")

    relay_admin = {port_of(a) for p in relays for a in p.settings(defaults)["admin"]["listen"]}
    for p in ices:
        n = p.name
        s = p.settings(defaults)
        d = s["discovery"]
        if not s["ice"]["enabled"]:
            errors.append(f"{n}: ice.enabled is false")
        if not d.get("srv_domain") and not d.get("relays"):
            errors.append(f"{n}: [discovery] has neither srv_domain nor relays: it knows no relay")
        if d.get("admin_port") not in relay_admin:
            errors.append(f"{n}: discovery.admin_port {d.get('admin_port')} is not the relays' admin port {sorted(relay_admin)}: draining relays stay in the answers")
        if s["ice"]["auth"] == "token" and not s["ice"].get("token_file"):
            errors.append(f"{n}: ice.auth = token without ice.token_file")
        replicas = p.workload["spec"].get("replicas", 1)
        if replicas < 2:
            errors.append(f"{n}: {replicas} replica: one rollout or node away from no ICE servers")
        oks.append(f"{n}: discovery {d.get('srv_domain')!r} probing the relays' /readyz on {d.get('admin_port')}, {replicas} replicas")

    # Services and ServiceMonitors reach the admin endpoints.
    services = [o for o in objs if o["kind"] == "Service"]
    for svc in services:
        sel = svc["spec"].get("selector", {})
        targets = [p for p in pods if selects(sel, p.labels)]
        if not targets:
            errors.append(f"{obj_name(svc)}: its selector {sel} matches no pod")
            continue
        for port in svc["spec"]["ports"]:
            for p in targets:
                tp = p.named_port(port.get("targetPort", port["port"]))
                admin = {port_of(a) for a in p.settings(defaults)["admin"]["listen"]}
                if tp not in admin:
                    errors.append(f"{obj_name(svc)}: port {port.get('name')} goes to {port.get('targetPort')} ({tp}) of {p.name}, not its admin.listen {sorted(admin)}")
    admin_secrets = set()
    for p in pods:
        tf = p.settings(defaults)["admin"].get("token_file")
        found = tf and p.mount_for(tf)
        if found and "secret" in found[1]:
            admin_secrets.add(found[1]["secret"]["secretName"])
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        svcs = [svc for svc in services if selects(sel, svc["metadata"].get("labels", {}))]
        if not svcs:
            errors.append(f"{obj_name(sm)}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            for svc in svcs:
                if ep.get("port") not in {pp.get("name") for pp in svc["spec"]["ports"]}:
                    errors.append(f"{obj_name(sm)}: endpoint port {ep.get('port')!r} is no port of {obj_name(svc)}")
            if ep.get("path", "/metrics") != "/metrics":
                errors.append(f"{obj_name(sm)}: scrapes {ep.get('path')}, not /metrics")
            cred = ep.get("authorization", {}).get("credentials", {}).get("name")
            if cred not in admin_secrets:
                errors.append(f"{obj_name(sm)}: sends the token of Secret {cred}, the admin endpoints read {sorted(admin_secrets)}")
    return errors, oks


# ---------------------------------------------------------------------------
# turnpike check-config with the pod's environment


class Files:
    """Test files the pods' Secrets would hold: a certificate, tokens."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.cert, self.key = make_certificate(tmp / "cert", "relay.turnpike.test")


def make_certificate(dirpath: Path, cn: str) -> tuple[Path, Path]:
    dirpath.mkdir(parents=True, exist_ok=True)
    cert, key = dirpath / "tls.crt", dirpath / "tls.key"
    out = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
         "-addext", f"subjectAltName=DNS:{cn}"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"openssl req: {out.stderr.strip()}")
    return cert, key


def check_config_errors(objs: list[dict], binary: Path, files: Files, where: str) -> tuple[list[str], list[str]]:
    errors, oks = [], []
    defaults, _ = example_defaults()
    for w in (o for o in objs if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")):
        p = Pod(w, objs)
        root = Path(tempfile.mkdtemp(dir=files.tmp, prefix="pod-"))
        s = p.settings(defaults)
        text = p.toml_text()
        # The pod's mounts under ROOT; the files the settings name, made.
        mounts = sorted((m["mountPath"].rstrip("/") for m in p.container.get("volumeMounts", [])), key=len, reverse=True)

        def moved(value: str) -> str:
            for mp in mounts:
                if value == mp or value.startswith(mp + "/"):
                    return str(root) + value
            return value

        for mp in mounts:
            text = text.replace(f'"{mp}/', f'"{root}{mp}/')
        for section, key in FILE_KEYS:
            path = s.get(section, {}).get(key)
            if not path:
                continue
            target = Path(moved(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            if key == "certificate":
                shutil.copy(files.cert, target)
            elif key == "private_key":
                shutil.copy(files.key, target)
            else:
                target.write_text(secrets.token_hex(32) + "\n")
        config = Path(moved(p.config_path()))
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
        env = {"PATH": os.environ["PATH"], **{k: moved(v) for k, v in p.env.items()}}
        out = subprocess.run([str(binary), "check-config", "--config", str(config)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            msg = (out.stderr.strip() or out.stdout.strip()).splitlines()
            errors.append(f"{where} {p.name}: turnpike check-config: {msg[-1] if msg else f'exit {out.returncode}'}")
            continue
        summary = out.stdout.strip().splitlines()[0]
        # What check.py computed for the wiring is what the binary sees.
        expect = []
        if p.subcommand == "serve":
            expect.append(f"listen {' '.join(s['stun']['listen'])}")
            expect.append(f"realm {json.dumps(s['turn']['realm'])}")
            expect.append(f"ports {s['turn']['min_port']}-{s['turn']['max_port']}")
            if s["database"]["url"].startswith("postgres"):
                expect.append("database postgres://")
        expect += [f"http://{a}" for a in s["admin"]["listen"]]
        for e in expect:
            if e not in summary:
                errors.append(f"{where} {p.name}: check-config's summary lacks {e!r}: {summary}")
        oks.append(f"{where} {p.name}: turnpike check-config OK" + (" (and its TLS certificate)" if "TLS certificate OK" in out.stdout else ""))
    return errors, oks


# ---------------------------------------------------------------------------
# A relay reloads a certificate the kubelet swaps in (AtomicWriter layout).


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def atomic_write(volume: Path, cert: Path, key: Path, stamp: str) -> None:
    """What the kubelet does to a Secret volume: files in a new timestamped
    directory, ..data switched to it by rename, the old one removed; the
    keys are symlinks to ..data/KEY."""
    new = volume / f"..{stamp}"
    new.mkdir()
    shutil.copy(cert, new / "tls.crt")
    shutil.copy(key, new / "tls.key")
    old = (volume / "..data").resolve() if (volume / "..data").exists() else None
    tmp_link = volume / "..data_tmp"
    tmp_link.symlink_to(new.name)
    os.rename(tmp_link, volume / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    if old is not None:
        shutil.rmtree(old)


def certificate_reload_errors(binary: Path, tmp: Path) -> tuple[list[str], list[str]]:
    volume = tmp / "secret-volume"
    volume.mkdir()
    c1, k1 = make_certificate(tmp / "c1", "old.turnpike.test")
    c2, k2 = make_certificate(tmp / "c2", "new.turnpike.test")
    atomic_write(volume, c1, k1, "2026_01_01_00_00_00.1")
    admin = free_port()
    config = tmp / "reload.toml"
    config.write_text(
        f'[stun]\nlisten = ["127.0.0.1:{free_port()}"]\n'
        f'[turn]\nenabled = false\n'
        f'[tls]\ncertificate = "{volume}/tls.crt"\nprivate_key = "{volume}/tls.key"\n'
        f'listen = ["127.0.0.1:{free_port()}"]\ndtls_listen = []\nreload_interval = 1\n'
        f'[admin]\nlisten = ["127.0.0.1:{admin}"]\n[shutdown]\ngrace_period = 0\n'
        f'[database]\ndata_dir = "{tmp}/data"\n'
    )
    log = open(tmp / "reload.log", "w")
    proc = subprocess.Popen([str(binary), "serve", "--config", str(config)], stdout=log, stderr=log)

    def certificate() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as r:
                return json.dumps(json.load(r).get("tls"))
        except OSError:
            return None

    def wait_for(pred, seconds: float) -> str | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None
            got = certificate()
            if got is not None and pred(got):
                return got
            time.sleep(0.2)  # polling with a deadline, not a guess at timing
        return None

    try:
        first = wait_for(lambda c: "old.turnpike.test" in c, 20)
        if first is None:
            return [f"certificate reload: the relay never served old.turnpike.test ({tail(tmp / 'reload.log')})"], []
        atomic_write(volume, c2, k2, "2026_01_02_00_00_00.2")
        second = wait_for(lambda c: "new.turnpike.test" in c, 20)
        if second is None:
            return [f"certificate reload: a kubelet-style Secret update was not picked up within 20 s ({tail(tmp / 'reload.log')})"], []
        if proc.poll() is not None:
            return ["certificate reload: the relay exited"], []
        return [], [f"a relay served the certificate swapped in like a kubelet Secret update (..data renamed), without a restart: /status tls {second}"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def tail(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, type=Path)
    ap.add_argument("--tools", required=True, type=Path)
    ap.add_argument("--no-self-test", action="store_true", help="skip the broken copies")
    args = ap.parse_args()
    binary = args.binary.resolve()
    passed, failed = 0, 0

    def report(title: str, errors: list[str], oks: list[str]) -> None:
        nonlocal passed, failed
        for line in oks:
            say(f"ok: {line}")
        for e in errors:
            print(f"    FAILED [{title}] {e}", flush=True)
        if errors:
            failed += 1
        else:
            passed += 1

    tmp = Path(tempfile.mkdtemp(prefix="turnpike-k8s-"))
    try:
        files = Files(tmp)
        dirs = kustomization_dirs()
        report("files", orphan_errors(dirs), [f"every file under deploy/kubernetes is built by {', '.join(rel(d) for d in dirs)}"])
        builds = {}
        for d in dirs:
            name = rel(d)
            try:
                objs = build(d)
            except Exception as e:  # the Go library's error
                report(f"kustomize {name}", [f"{e}".strip().splitlines()[-1]], [])
                continue
            builds[name] = objs
            errs, oks = [], [f"{name}: kustomize (pykustomize) builds {len(objs)} objects: {', '.join(obj_name(o) for o in objs)}"]
            try:
                other = build_kubectl(d)
                if other is None:
                    oks.append(f"{name}: no kubectl on this machine: kubectl's kustomize not compared")
                elif other != objs:
                    errs.append(f"{name}: kubectl kustomize builds other objects than pykustomize (a kustomize feature kubectl's lacks?)")
                else:
                    oks.append(f"{name}: kubectl kustomize ({kubectl_kustomize_version()}) builds the same objects")
            except RuntimeError as e:
                errs.append(str(e))
            report(f"kustomize {name}", errs, oks)
        for name, objs in builds.items():
            errs, lines = schema_errors(objs, args.tools)
            report(f"schema {name}", errs, [f"{name}: schemas: {'; '.join(lines)}"])
            try:
                errs, oks = wiring_errors(objs)
            except (ValueError, KeyError) as e:
                errs, oks = [f"{e}"], []
            report(f"wiring {name}", errs, [f"{name}: {line}" for line in oks])
            try:
                errs, oks = check_config_errors(objs, binary, files, name)
            except (ValueError, KeyError) as e:
                errs, oks = [f"{e}"], []
            report(f"check-config {name}", errs, oks)
        report("certificate reload", *certificate_reload_errors(binary, tmp))
        if not args.no_self_test:
            errs, oks = self_test(builds, binary, files, args.tools, tmp)
            report("self-test", errs, oks)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test-kubernetes: {passed} passed, {failed} failed")
    return 1 if failed else 0


def kubectl_kustomize_version() -> str:
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True).stdout
    m = re.search(r"Kustomize Version: (\S+)", out)
    return f"kustomize {m.group(1)}" if m else "version unknown"


if __name__ == "__main__":
    from selftest import self_test  # noqa: E402  (beside this file)

    sys.exit(main())
