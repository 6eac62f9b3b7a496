"""Deliberately broken copies of the manifests, each of which a check of
check.py must refuse with the error named: proof that every kind of check
can fail. Run by check.py after the real checks."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import check


def find(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name))


def container(objs: list[dict], kind: str, name: str) -> dict:
    return find(objs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def relay(objs):
    return container(objs, "DaemonSet", "turnpike-relay")


def relay_toml(objs, old: str, new: str) -> None:
    cm = find(objs, "ConfigMap", "turnpike-relay-config")
    text = cm["data"]["turnpike.toml"]
    assert re.search(old, text, re.M), old
    cm["data"]["turnpike.toml"] = re.sub(old, new, text, count=1, flags=re.M)


def m_typo_field(objs):
    c = relay(objs)
    c["readinesProbe"] = c.pop("readinessProbe")


def m_port_type(objs):
    relay(objs)["ports"][0]["containerPort"] = "3478"


def m_cert_no_issuer(objs):
    del find(objs, "Certificate", "turnpike-tls")["spec"]["issuerRef"]


def m_monitor_endpoints(objs):
    find(objs, "ServiceMonitor", "turnpike-relay")["spec"]["endpoints"] = {"port": "admin"}


def m_drain_timeout(objs):
    hook = relay(objs)["lifecycle"]["preStop"]["exec"]["command"]
    hook[hook.index("--timeout") + 1] = "1h"


def m_drain_no_wait(objs):
    relay(objs)["lifecycle"]["preStop"]["exec"]["command"].remove("--wait")


def m_ready_path(objs):
    relay(objs)["readinessProbe"]["httpGet"]["path"] = "/ready"


def m_live_port(objs):
    relay(objs)["livenessProbe"]["httpGet"]["port"] = 3478


def m_subpath(objs):
    m = next(m for m in relay(objs)["volumeMounts"] if m["name"] == "tls")
    m["mountPath"] = "/etc/turnpike/tls/tls.crt"
    m["subPath"] = "tls.crt"


def m_admin_listen(objs):
    relay_toml(objs, r'^listen = \["0\.0\.0\.0:9641"\]', 'listen = ["0.0.0.0:9642"]')


def m_relay_range(objs):
    relay_toml(objs, r"^min_port = \d+", "min_port = 3000")


def m_env_typo(objs):
    env = relay(objs)["env"]
    next(e for e in env if e["name"] == "TURNPIKE_REALM")["name"] = "TURNPIKE_RELAM"


def m_probe_token(objs):
    relay_toml(objs, r"^probes_without_token = true", "probes_without_token = false")


def m_discovery_port(objs):
    cm = find(objs, "ConfigMap", "turnpike-ice-config")
    cm["data"]["turnpike.toml"] = cm["data"]["turnpike.toml"].replace("admin_port = 9641", "admin_port = 0")


def m_cert_secret(objs):
    find(objs, "Certificate", "turnpike-tls")["spec"]["secretName"] = "turnpike-certificate"


def m_host_network(objs):
    del find(objs, "DaemonSet", "turnpike-relay")["spec"]["template"]["spec"]["hostNetwork"]


def m_root(objs):
    relay(objs)["securityContext"]["readOnlyRootFilesystem"] = False


def m_config_key(objs):
    relay_toml(objs, r"^reload_interval = 5", "reload_intervall = 5")


def m_config_range(objs):
    relay_toml(objs, r"^max_port = \d+", "max_port = 70000")


def m_realm(objs):
    next(e for e in relay(objs)["env"] if e["name"] == "TURNPIKE_REALM")["value"] = ""


# (check, what is broken, mutation, a substring of the expected error)
MUTATIONS = [
    ("schema", "a misspelt field (readinesProbe)", m_typo_field, "readinesProbe"),
    ("schema", "a containerPort given as a string", m_port_type, "containerPort"),
    ("schema", "a Certificate without issuerRef (CRD schema)", m_cert_no_issuer, "issuerRef"),
    ("schema", "a ServiceMonitor whose endpoints is no list (CRD schema)", m_monitor_endpoints, "endpoints"),
    ("wiring", "the drain timeout raised past the grace period", m_drain_timeout, "terminationGracePeriodSeconds 640 <= drain timeout 3600"),
    ("wiring", "the preStop drain without --wait", m_drain_no_wait, "drain --wait"),
    ("wiring", "the readiness probe on /ready", m_ready_path, "asks /ready"),
    ("wiring", "the liveness probe on the STUN port", m_live_port, "livenessProbe goes to port 3478"),
    ("wiring", "the certificate mounted with subPath", m_subpath, "subPath"),
    ("wiring", "admin.listen moved to 9642 in the ConfigMap", m_admin_listen, "listen on 9642/TCP"),
    ("wiring", "the relay range over the listeners", m_relay_range, "inside the relay range"),
    ("wiring", "a misspelt TURNPIKE_ variable", m_env_typo, "TURNPIKE_RELAM is no setting"),
    ("wiring", "probes that need the token", m_probe_token, "probes get 401"),
    ("wiring", "the ICE endpoint not probing /readyz", m_discovery_port, "discovery.admin_port 0"),
    ("wiring", "the Certificate writing another Secret", m_cert_secret, "writes Secret turnpike-certificate"),
    ("wiring", "relays off the host network", m_host_network, "hostNetwork is not true"),
    ("wiring", "a writable root file system", m_root, "readOnlyRootFilesystem"),
    ("check-config", "a misspelt key in the ConfigMap's toml", m_config_key, "reload_intervall"),
    ("check-config", "turn.max_port 70000", m_config_range, "max_port"),
    ("check-config", "an empty TURNPIKE_REALM", m_realm, "realm"),
]


def self_test(builds: dict, binary: Path, files, tools: Path, tmp: Path) -> tuple[list[str], list[str]]:
    errors, oks = [], []
    overlay = next(name for name in builds if "/overlays/" in name)
    for kind, what, mutate, expect in MUTATIONS:
        objs = copy.deepcopy(builds[overlay])
        mutate(objs)
        try:
            if kind == "schema":
                got, _ = check.schema_errors(objs, tools)
            elif kind == "wiring":
                got, _ = check.wiring_errors(objs)
            else:
                got, _ = check.check_config_errors(objs, binary, files, overlay)
        except (ValueError, KeyError) as e:
            got = [str(e)]
        hit = [e for e in got if expect in e]
        if hit:
            oks.append(f"{kind} refuses {what}: {hit[0]}")
        else:
            errors.append(f"{kind} did not refuse {what} (expected an error with {expect!r}, got {got or 'none'})")

    # kustomize: a patch whose target is gone, a stray file.
    tree = tmp / "selftest-tree"
    shutil.copytree(check.KDIR, tree)
    patch = tree / "overlays" / "example" / "relay-patch.yaml"
    patch.write_text(patch.read_text().replace("name: turnpike-relay", "name: turnpike-relays"))
    try:
        check.build(tree / "overlays" / "example")
        errors.append("kustomize did not refuse a patch of a DaemonSet that does not exist")
    except Exception as e:  # the Go library's error
        oks.append(f"kustomize refuses a patch of a missing DaemonSet: {str(e).strip().splitlines()[-1][:160]}")
    (tree / "base" / "stray.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray\n")
    got = check.orphan_errors(check.kustomization_dirs(tree), tree)
    if any("stray.yaml" in e for e in got):
        oks.append(f"files refuses a manifest no kustomization uses: {next(e for e in got if 'stray.yaml' in e)}")
    else:
        errors.append("an unused stray.yaml was not reported")
    return errors, oks
