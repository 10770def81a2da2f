"""Envoy bootstrap for an `envoy` target: HTTPS and HTTP in, HTTPS to its upstream target;
gRPC in (TLS, HTTP/2), gRPC to the upstream's gRPC port (TLS, HTTP/2).

`max_requests_per_connection` on the upstream cluster decides how often the upstream
sees a fresh TLS handshake (1: every request); session resumption is off
(`max_session_keys: 0`) so every upstream connection is a full handshake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaoslab.targets.certs import Certs

API = "type.googleapis.com/envoy.extensions"

# Listener ports by load protocol. https and http go to the upstream's HTTPS port over
# HTTP/1.1; grpc (TLS, HTTP/2 by ALPN) goes to the upstream's gRPC port over HTTP/2.
LISTEN_PORTS = {"https": 10000, "http": 10080, "grpc": 10443}
ADMIN_PORT = 9901


def _address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _listener(protocol: str, certs: Certs, cluster: str) -> dict[str, Any]:
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{API}.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": f"{API}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": protocol,
        "http_filters": [router],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                }
            ]
        },
    }
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if protocol != "http":
        tls: dict[str, Any] = {"tls_certificates": [_tls_files(certs)]}
        if protocol == "grpc":
            tls["alpn_protocols"] = ["h2"]
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": f"{API}.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": tls,
            },
        }
    return {
        "name": protocol,
        "address": _address("0.0.0.0", LISTEN_PORTS[protocol]),
        "filter_chains": [chain],
    }


def _tls_files(certs: Certs) -> dict[str, Any]:
    return {
        "certificate_chain": {"filename": str(certs.cert)},
        "private_key": {"filename": str(certs.key)},
    }


def _cluster(
    name: str, ca: Path | None, ip: str, port: int, http2: bool, requests_per_connection: int, tls: bool
) -> dict[str, Any]:
    """A cluster of one endpoint; `tls`: the upstream speaks TLS (verified with `ca`, if any)."""
    context: dict[str, Any] = {"validation_context": {"trusted_ca": {"filename": str(ca)}}} if ca else {}
    if http2:
        context["alpn_protocols"] = ["h2"]
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{API}.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"max_requests_per_connection": requests_per_connection},
                "explicit_http_config": (
                    {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
                ),
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(ip, port)}}]}],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": f"{API}.transport_sockets.tls.v3.UpstreamTlsContext",
                "max_session_keys": 0,
                "common_tls_context": context,
            },
        }
    return cluster


def bootstrap(
    certs: Certs,
    upstream_ip: str,
    upstream_ports: dict[str, int],
    requests_per_connection: int,
    upstream_ca: Path | None,
    verify: bool = True,
) -> dict[str, Any]:
    """Listeners for https and http (and grpc when the upstream serves gRPC) towards the
    upstream's https port (or its http port when it has no https), and its grpc port."""
    ca = upstream_ca if verify else None
    tls = "https" in upstream_ports
    web = upstream_ports["https"] if tls else upstream_ports["http"]
    clusters = [_cluster("upstream", ca, upstream_ip, web, False, requests_per_connection, tls)]
    listeners = [_listener("https", certs, "upstream"), _listener("http", certs, "upstream")]
    for proto, secure in (("grpc", True), ("grpc-plain", False)):
        if proto in upstream_ports:
            clusters.append(
                _cluster(
                    "upstream-grpc",
                    ca,
                    upstream_ip,
                    upstream_ports[proto],
                    True,
                    requests_per_connection,
                    secure,
                )
            )
            listeners.append(_listener("grpc", certs, "upstream-grpc"))
            break
    return {
        "admin": {"address": _address("0.0.0.0", ADMIN_PORT)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
