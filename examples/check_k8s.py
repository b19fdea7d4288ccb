"""Checks the Istio examples against their schemas; run by .ci/run.

- examples/istio/authorization-policy.yaml: Istio's own AuthorizationPolicy schema, as the
  PyPI package cloudcoil-models-istio generates it from Istio's CRDs (1.24); a field the model
  does not know fails (the document must survive a round trip unchanged).
- examples/istio/mesh-config.yaml: the ConfigMap with kubernetes-validate --strict, and its
  extension provider against examples/istio/extension-provider.schema.json, written down from
  Istio's MeshConfig.ExtensionProvider message (MeshConfig is not a CRD, so no model has it).

examples/envoy-gateway/ is checked by examples/check_envoy_gateway.mjs (node, with the
@kubernetes-models classes generated from the Envoy Gateway and Gateway API types).

python3 examples/check_k8s.py  (pip install cloudcoil-models-istio==1.24.2.1 jsonschema pyyaml
kubernetes-validate)
"""

import json
import pathlib
import subprocess
import sys

import jsonschema
import yaml
from cloudcoil.models.istio.security.v1 import AuthorizationPolicy

HERE = pathlib.Path(__file__).parent
EXTENSION_PROVIDER = json.loads((HERE / "istio" / "extension-provider.schema.json").read_text())


def strip_none(value):
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def check_istio_policy():
    path = HERE / "istio" / "authorization-policy.yaml"
    document = yaml.safe_load(path.read_text())
    policy = AuthorizationPolicy.model_validate(document)
    again = strip_none(policy.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    if again != document:
        sys.exit(f"{path}: fields Istio's schema does not know:\n{document}\n!=\n{again}")
    spec = document["spec"]
    assert spec["action"] == "CUSTOM" and spec["provider"]["name"] == "tessera", path
    return spec["provider"]["name"]


def check_mesh_config(provider_name):
    path = HERE / "istio" / "mesh-config.yaml"
    subprocess.run(["kubernetes-validate", "--strict", str(path)], check=True)
    mesh = yaml.safe_load(yaml.safe_load(path.read_text())["data"]["mesh"])
    providers = mesh["extensionProviders"]
    for provider in providers:
        jsonschema.validate(provider, EXTENSION_PROVIDER)
    names = [provider["name"] for provider in providers]
    assert provider_name in names, f"{path} has no provider {provider_name}: {names}"
    grpc = next(p for p in providers if p["name"] == provider_name)["envoyExtAuthzGrpc"]
    assert grpc["failOpen"] is False, "fail closed"


check_mesh_config(check_istio_policy())
print("istio examples: ok")
