#!/usr/bin/env python3
"""CI check of helm/tessera with Helm's own Go library (PyPI helm-python-sdk; no helm binary).

1. `helm lint --strict` (warnings are errors), with the default and with the full values.
2. Render with the default values, with http.enabled alone, and with ci/full-values.yaml (every
   option on).
3. `kubernetes-validate --strict` on every rendered manifest (unknown fields are errors).
4. What the chart promises, asserted on the rendered objects: non-root, read-only root
   filesystem, no privilege escalation, native gRPC probes, secret references, the generated
   operator admin key, the gRPC and metrics ports, the HTTP listener's port (container, Service,
   NetworkPolicy, TESSERA_HTTP_LISTEN) exactly when `http.enabled`, and each optional object
   appearing exactly when enabled.

Exits non-zero on the first failure; run by .ci/run.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import helm_python
import yaml

CHART = Path(__file__).resolve().parent / "tessera"
README = Path(__file__).resolve().parent.parent / "README.md"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE = "tessera"
NAMESPACE = "auth"
# The oldest Kubernetes the chart supports (native gRPC probes are GA in 1.27) and a current one.
KUBERNETES_VERSIONS = ["1.27.0", "1.33.0"]


def fail(message: str) -> None:
    print(f"helm check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def lint(values: dict, label: str) -> None:
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if report.get("errors") or problems:
        fail(f"helm lint --strict ({label}): {report}")
    print(f"helm lint --strict ({label}): ok")


def render(values: dict, label: str) -> list[dict]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append(document)
    if not objects:
        fail(f"render ({label}) produced nothing")
    print(f"helm render ({label}): {len(objects)} objects")
    return objects


def validate(objects: list[dict], label: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        files = []
        for index, manifest in enumerate(objects):
            if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
                # A CRD kubernetes-validate has no schema for: checked by `expect` instead.
                continue
            path = Path(directory) / f"{index:02d}-{manifest['kind'].lower()}.yaml"
            path.write_text(yaml.safe_dump(manifest))
            files.append(str(path))
        for version in KUBERNETES_VERSIONS:
            result = subprocess.run(
                ["kubernetes-validate", "--strict", "--quiet", "-k", version, *files],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                fail(f"kubernetes-validate --strict -k {version} ({label}):\n{result.stdout}{result.stderr}")
    print(f"kubernetes-validate --strict ({label}): {len(files)} manifests ok on {', '.join(KUBERNETES_VERSIONS)}")


def by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for manifest in objects:
        kinds.setdefault(manifest["kind"], []).append(manifest)
    return kinds


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def check_http_listener(kinds: dict[str, list[dict]], values: dict) -> None:
    """The HTTP listener (forward-auth) is served, exposed and allowed exactly when enabled."""
    http = values.get("http", {})
    enabled = http.get("enabled", False)
    port = http.get("port", 8080)
    container = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["name"]: p for p in kinds["Service"][0]["spec"]["ports"]}
    if not enabled:
        expect("TESSERA_HTTP_LISTEN" not in env, "no TESSERA_HTTP_LISTEN while http.enabled is off")
        expect("http" not in container_ports, "no container port http while http.enabled is off")
        expect("http" not in service_ports, "no Service port http while http.enabled is off")
        for policy in kinds.get("NetworkPolicy", []):
            allowed = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
            expect("http" not in allowed, "the NetworkPolicy allows no http while it is off")
        return
    expect(env.get("TESSERA_HTTP_LISTEN") == f"0.0.0.0:{port}", f"TESSERA_HTTP_LISTEN on port {port}")
    expect(container_ports.get("http") == port, f"container port http is {port}")
    expect(
        "http" in service_ports and service_ports["http"]["port"] == port and service_ports["http"]["targetPort"] == "http",
        f"Service port http is {port}, to the container's http",
    )
    tls = values.get("tls", {}).get("enabled", False)
    expect(service_ports["http"].get("appProtocol") == ("https" if tls else "http"), "the http port's appProtocol follows tls.enabled")
    for policy in kinds.get("NetworkPolicy", []):
        rules = [rule for rule in policy["spec"]["ingress"] if any(p["port"] == "http" for p in rule["ports"])]
        expect(len(rules) == 1, "the NetworkPolicy allows the http port")
        want = values.get("networkPolicy", {}).get("httpFrom") or [{"podSelector": {}}]
        expect(rules[0]["from"] == want, "the NetworkPolicy's http peers are networkPolicy.httpFrom")


def check_promises(objects: list[dict], full: bool, values: dict) -> None:
    kinds = by_kind(objects)
    for kind in ["Deployment", "Service", "ConfigMap", "ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget"]:
        expect(len(kinds.get(kind, [])) == 1, f"exactly one {kind}")
    for kind in ["ServiceMonitor", "NetworkPolicy"]:
        expect(len(kinds.get(kind, [])) == (1 if full else 0), f"{kind} only when enabled")

    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    expect(pod["securityContext"]["runAsNonRoot"] is True, "pod runs as non-root")
    expect(pod["automountServiceAccountToken"] is False, "no service account token mounted")
    container = pod["containers"][0]
    security = container["securityContext"]
    expect(security["readOnlyRootFilesystem"] is True, "read-only root filesystem")
    expect(security["allowPrivilegeEscalation"] is False, "no privilege escalation")
    expect(security["capabilities"]["drop"] == ["ALL"], "all capabilities dropped")
    expect("grpc" in container["readinessProbe"], "native gRPC readiness probe")
    expect(container["livenessProbe"]["grpc"].get("service") == "liveness", "liveness probe asks the liveness service")
    expect(len(pod.get("topologySpreadConstraints", [])) == 2, "spread over zones and nodes")

    env = {variable["name"]: variable for variable in container["env"]}
    expect("secretKeyRef" in env["TESSERA_DATABASE_URL"]["valueFrom"], "database URL from a Secret")
    # The operator admin key: the chart's generated Secret by default, the named one in full.
    expect("secretKeyRef" in env["TESSERA_ADMIN_KEYS"]["valueFrom"], "TESSERA_ADMIN_KEYS from a Secret")
    admin_secret = env["TESSERA_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"]["name"]
    generated = [secret for secret in kinds.get("Secret", []) if secret["metadata"]["name"] == admin_secret]
    expect(len(kinds.get("Secret", [])) == (0 if full else 1), "the chart creates a Secret only for a generated admin key")
    if not full:
        expect(len(generated) == 1, "TESSERA_ADMIN_KEYS names the generated Secret")
        secret = generated[0]
        expect(secret["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep", "the generated key survives uninstall")
        key = base64.b64decode(secret["data"]["admin-keys"]).decode()
        expect(len(key) >= 16 and "," not in key, "the generated key is one key of at least 16 characters")
    for name in ["TESSERA_MASTER_KEY", "TESSERA_REPORT_HANDLE_KEY", "TESSERA_REDIS_URL"]:
        expect((name in env) == full, f"{name} from a Secret only when configured")
        if full:
            expect("secretKeyRef" in env[name]["valueFrom"], f"{name} from a Secret")
    expect(("TESSERA_REDIS_CLUSTER" in env) == full, "Redis settings only with a Redis URL")
    if full:
        expect(env["TESSERA_REDIS_CLUSTER"]["value"] == "true", "the cluster setting reaches the pod")
    expect(("TESSERA_TLS_CERT_FILE" in env) == full, "TLS files only when TLS is on")
    expect(("TESSERA_OTLP_ENDPOINT" in env) == full, "OTLP endpoint only when set")
    for variable in env.values():
        expect("value" not in variable or "postgres://" not in str(variable["value"]), "no inline database URL")

    service_ports = {port["name"]: port for port in kinds["Service"][0]["spec"]["ports"]}
    expect({"grpc", "metrics"} <= set(service_ports), "Service exposes gRPC and metrics")
    check_http_listener(kinds, values)

    toml_text = kinds["ConfigMap"][0]["data"]["tessera.toml"]
    try:
        settings = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as error:
        fail(f"tessera.toml is not valid TOML: {error}\n{toml_text}")
    expect(settings.get("log_format") == "json", "config values reach tessera.toml")
    documented = set(re.findall(r"^\| `TESSERA_([A-Z0-9_]+)`", README.read_text(), re.MULTILINE))
    unknown = sorted(key for key in settings if key.upper() not in documented)
    expect(not unknown, f"config keys that are no setting of README's table: {unknown}")


def main() -> None:
    full_values = helm_python.values_from_yaml(FULL_VALUES.read_text())
    # The HTTP listener alone: its default port, plaintext, no NetworkPolicy.
    http_only = {"http": {"enabled": True}}
    for label, values, full in [
        ("default values", {}, False),
        ("http listener", http_only, False),
        ("full values", full_values, True),
    ]:
        lint(values, label)
        objects = render(values, label)
        validate(objects, label)
        check_promises(objects, full, values)
    print("helm check: ok")


if __name__ == "__main__":
    main()
