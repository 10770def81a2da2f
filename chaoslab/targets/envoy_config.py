"""Envoy bootstrap for an `envoy` target: HTTPS in, HTTPS to its upstream target.

`max_requests_per_connection` on the upstream cluster decides how often the upstream
sees a fresh TLS handshake (1: every request); session resumption is off
(`max_session_keys: 0`) so every upstream connection is a full handshake.
"""

from __future__ import annotations

from typing import Any

from chaoslab.targets.certs import Certs

API = "type.googleapis.com/envoy.extensions"

LISTEN_PORT = 10000
ADMIN_PORT = 9901


def bootstrap(
    certs: Certs, upstream_ip: str, upstream_port: int, requests_per_connection: int
) -> dict[str, Any]:
    tls_files = {
        "certificate_chain": {"filename": str(certs.cert)},
        "private_key": {"filename": str(certs.key)},
    }
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": f"{API}.filters.http.router.v3.Router"},
    }
    hcm = {
        "@type": f"{API}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "http_filters": [router],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ]
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "0.0.0.0", "port_value": ADMIN_PORT}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": LISTEN_PORT}},
                    "filter_chains": [
                        {
                            "transport_socket": {
                                "name": "envoy.transport_sockets.tls",
                                "typed_config": {
                                    "@type": f"{API}.transport_sockets.tls.v3.DownstreamTlsContext",
                                    "common_tls_context": {"tls_certificates": [tls_files]},
                                },
                            },
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ],
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": f"{API}.upstreams.http.v3.HttpProtocolOptions",
                            "common_http_protocol_options": {
                                "max_requests_per_connection": requests_per_connection
                            },
                            "explicit_http_config": {"http_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": upstream_ip,
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": f"{API}.transport_sockets.tls.v3.UpstreamTlsContext",
                            "max_session_keys": 0,
                            "common_tls_context": {
                                "validation_context": {"trusted_ca": {"filename": str(certs.ca)}}
                            },
                        },
                    },
                }
            ],
        },
    }
