"""Validates envoy.yaml against Envoy's own protos (PyPI xds-protos), as far as a machine without
an Envoy binary can: every field name, type and enum value of the bootstrap and of each
typed_config, and the settings Tessera relies on.

    pip install xds-protos pyyaml && python3 examples/envoy/check_bootstrap.py
"""

import pathlib
import sys

import yaml
from google.protobuf import json_format

# Importing a module registers its messages, so the typed_config `@type`s resolve.
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("envoy.yaml"))
bootstrap = json_format.ParseDict(yaml.safe_load(path.read_text()), bootstrap_pb2.Bootstrap())

manager = http_connection_manager_pb2.HttpConnectionManager()
listener = bootstrap.static_resources.listeners[0]
listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
ext_authz = ext_authz_pb2.ExtAuthz()
manager.http_filters[0].typed_config.Unpack(ext_authz)
assert manager.http_filters[0].name == "envoy.filters.http.ext_authz"
assert manager.http_filters[-1].name == "envoy.filters.http.router"
assert ext_authz.transport_api_version == config_source_pb2.V3, "transport_api_version must be V3"
assert not ext_authz.failure_mode_allow, "failure_mode_allow must be false"
# Defence in depth: Envoy resolves paths as Tessera does and refuses escaped slashes.
assert manager.normalize_path.value, "normalize_path must be true"
assert manager.merge_slashes, "merge_slashes must be true"
assert (
    manager.path_with_escaped_slashes_action
    == http_connection_manager_pb2.HttpConnectionManager.REJECT_REQUEST
), "path_with_escaped_slashes_action must be REJECT_REQUEST"
cluster_names = {cluster.name for cluster in bootstrap.static_resources.clusters}
assert ext_authz.grpc_service.envoy_grpc.cluster_name in cluster_names, "ext_authz names an unknown cluster"

for route in manager.route_config.virtual_hosts[0].routes:
    assert route.route.cluster in cluster_names, f"route to unknown cluster {route.route.cluster}"
    config = route.typed_per_filter_config.get("envoy.filters.http.ext_authz")
    assert config is not None, "every route says how ext_authz treats it"
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    config.Unpack(per_route)
    if not per_route.disabled:
        assert "tenant" in per_route.check_settings.context_extensions, "a route without a tenant"

print(f"{path}: valid Envoy v3 bootstrap; ext_authz -> cluster {ext_authz.grpc_service.envoy_grpc.cluster_name}")
