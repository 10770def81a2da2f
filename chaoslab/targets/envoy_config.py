"""Envoy bootstrap for an `envoy` target: HTTPS and HTTP in, HTTPS to its upstream target;
gRPC in (TLS, HTTP/2), gRPC to the upstream's gRPC port (TLS, HTTP/2).

`max_requests_per_connection` on the upstream cluster decides how often the upstream
sees a fresh TLS handshake (1: every request); session resumption is off
(`max_session_keys: 0`) so every upstream connection is a full handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoslab.scenario.model import MeshSpec, ResilienceSpec
from chaoslab.targets.certs import Certs

if TYPE_CHECKING:
    from chaoslab.targets.services import Peer

API = "type.googleapis.com/envoy.extensions"
CONFIG = "type.googleapis.com/envoy.config"
# Resources from the aggregated stream (ADS) of the control plane, xDS v3.
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}
XDS_CLUSTER = "xds"  # the static cluster of the control plane
WEB_ROUTE = "web"  # the route configuration the https and http listeners take from it

# Listener ports by load protocol. https and http go to the upstream's HTTPS port over
# HTTP/1.1; grpc (TLS, HTTP/2 by ALPN) goes to the upstream's gRPC port over HTTP/2.
LISTEN_PORTS = {"https": 10000, "http": 10080, "grpc": 10443}
ADMIN_PORT = 9901
NONE = ResilienceSpec()  # Envoy's own defaults


def _address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def _route_config(route: dict[str, Any], name: str = "", res: ResilienceSpec = NONE) -> dict[str, Any]:
    """One virtual host for every domain, one route (`route`: where it sends requests), with
    the route's timeout and retries."""
    route = dict(route)
    if res.timeout is not None:
        route["timeout"] = _duration(res.timeout)
    if res.retries:
        policy: dict[str, Any] = {"retry_on": res.retry_on, "num_retries": res.retries}
        if res.per_try_timeout is not None:
            policy["per_try_timeout"] = _duration(res.per_try_timeout)
        route["retry_policy"] = policy
    config: dict[str, Any] = {
        "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}
        ]
    }
    return {"name": name, **config} if name else config


def _duration(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _access_log(path: str) -> list[dict[str, Any]]:
    """Each request as one JSON line: when it started, its status, Envoy's response flags (why
    Envoy answered as it did: UO overflow, UT timeout, URX retries exhausted, UH no healthy
    upstream, UF connect failure...), the upstream host and how many tries it took."""
    if not path:
        return []
    fields = {
        "start": "%START_TIME(%s.%6f)%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "upstream": "%UPSTREAM_HOST%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "ms": "%DURATION%",
    }
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": f"{API}.access_loggers.file.v3.FileAccessLog",
                "path": path,
                "log_format": {"json_format": fields},
            },
        }
    ]


def _listener(
    protocol: str,
    certs: Certs,
    cluster: str = "",
    rds: str = "",
    res: ResilienceSpec = NONE,
    access_log: str = "",
) -> dict[str, Any]:
    """A listener routing to `cluster`, or to the route configuration `rds` from the control plane."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{API}.filters.http.router.v3.Router"},
    }
    hcm: dict[str, Any] = {
        "@type": f"{API}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": protocol,
        "http_filters": [router],
    }
    if access_log:
        hcm["access_log"] = _access_log(access_log)
    if rds:
        hcm["rds"] = {"route_config_name": rds, "config_source": ADS_SOURCE}
    else:
        hcm["route_config"] = _route_config({"cluster": cluster}, res=res)
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
    name: str,
    ca: Path | None,
    ip: str,
    port: int,
    http2: bool,
    requests_per_connection: int,
    tls: bool,
    res: ResilienceSpec = NONE,
) -> dict[str, Any]:
    """A cluster of one endpoint; `tls`: the upstream speaks TLS (verified with `ca`, if any)."""
    cluster = _upstream(name, ca, http2, requests_per_connection, tls, res)
    cluster["type"] = "STATIC"
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(ip, port)}}]}],
    }
    return cluster


def _upstream(
    name: str,
    ca: Path | None,
    http2: bool,
    requests_per_connection: int,
    tls: bool,
    res: ResilienceSpec = NONE,
) -> dict[str, Any]:
    """A cluster's connection settings, circuit breaker and outlier detection, without where
    its endpoints come from."""
    context: dict[str, Any] = {"validation_context": {"trusted_ca": {"filename": str(ca)}}} if ca else {}
    if http2:
        context["alpn_protocols"] = ["h2"]
    cluster: dict[str, Any] = {
        "name": name,
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
    limits = {
        "max_connections": res.max_connections,
        "max_pending_requests": res.max_pending,
        "max_requests": res.max_requests,
    }
    if any(v is not None for v in limits.values()):
        cluster["circuit_breakers"] = {"thresholds": [{k: v for k, v in limits.items() if v is not None}]}
    if res.consecutive_5xx is not None:
        cluster["outlier_detection"] = {
            "consecutive_5xx": res.consecutive_5xx,
            "interval": _duration(res.outlier_interval),
            "base_ejection_time": _duration(res.ejection),
            "max_ejection_percent": 100,
        }
    return cluster


def bootstrap(
    certs: Certs,
    upstream_ip: str,
    upstream_ports: dict[str, int],
    requests_per_connection: int,
    upstream_ca: Path | None,
    verify: bool = True,
    res: ResilienceSpec = NONE,
    access_log: str = "",
) -> dict[str, Any]:
    """Listeners for https and http (and grpc when the upstream serves gRPC) towards the
    upstream's https port (or its http port when it has no https), and its grpc port."""
    ca = upstream_ca if verify else None
    tls = "https" in upstream_ports
    web = upstream_ports["https"] if tls else upstream_ports["http"]
    clusters = [_cluster("upstream", ca, upstream_ip, web, False, requests_per_connection, tls, res)]
    listeners = [_listener(p, certs, "upstream", res=res, access_log=access_log) for p in ("https", "http")]
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
                    res,
                )
            )
            listeners.append(_listener("grpc", certs, "upstream-grpc", res=res, access_log=access_log))
            break
    return {
        "admin": {"address": _address("0.0.0.0", ADMIN_PORT)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def ads_bootstrap(
    certs: Certs, node: str, control_ip: str, control_port: int, access_log: str = "", api: str = "delta"
) -> dict[str, Any]:
    """Envoy as node `node` of an xDS control plane: its https and http listeners are fixed
    here (they hold this run's certificate files), their route and every cluster and
    endpoint come over one ADS stream (gRPC, HTTP/2 in the clear; `api`: delta, each change's
    resources only, or sotw, every resource of a changed type) from the control plane at
    `control_ip:control_port`."""
    xds = {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{API}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(control_ip, control_port)}}]}],
        },
    }
    listeners = [_listener(p, certs, rds=WEB_ROUTE, access_log=access_log) for p in ("https", "http")]
    return {
        "node": {"id": node, "cluster": "chaoslab"},
        "admin": {"address": _address("0.0.0.0", ADMIN_PORT)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if api == "delta" else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ADS_SOURCE,
        },
        "static_resources": {"listeners": listeners, "clusters": [xds]},
    }


def mesh_resources(
    mesh: MeshSpec, peers: Mapping[str, Peer], requests_per_connection: int, res: ResilienceSpec = NONE
) -> dict[str, Any]:
    """What the control plane serves one Envoy, as that Envoy reaches the endpoints (`peers`):
    each cluster (EDS) with its endpoints, each endpoint's hostname its target's name (the
    control plane withdraws it by that name), and the route every listener takes."""
    resources: list[dict[str, Any]] = []
    for c in mesh.clusters:
        reached = [peers[e] for e in c.endpoints]
        proto = c.port or ("https" if all("https" in p.ports for p in reached) else "http")
        verified = all(p.verify for p in reached)
        ca = reached[0].ca if reached and verified else None
        cluster = _upstream(c.name, ca, False, requests_per_connection, proto == "https", res)
        cluster["type"] = "EDS"
        cluster["eds_cluster_config"] = {"eds_config": ADS_SOURCE}
        resources.append({"@type": f"{CONFIG}.cluster.v3.Cluster", **cluster})
        lb = [
            {"endpoint": {"address": _address(p.host, p.ports[proto]), "hostname": e}}
            for e, p in zip(c.endpoints, reached, strict=True)
        ]
        resources.append(
            {
                "@type": f"{CONFIG}.endpoint.v3.ClusterLoadAssignment",
                "cluster_name": c.name,
                "endpoints": [{"lb_endpoints": lb}],
            }
        )
    weighted = [(name, w) for name, w in mesh.weights if w > 0]
    route: dict[str, Any] = (
        {"cluster": weighted[0][0]}
        if len(weighted) == 1
        else {"weighted_clusters": {"clusters": [{"name": n, "weight": w} for n, w in weighted]}}
    )
    resources.append(
        {"@type": f"{CONFIG}.route.v3.RouteConfiguration", **_route_config(route, WEB_ROUTE, res)}
    )
    return {"resources": resources}
