"""Service kinds a target can be, registered under their YAML `service:` name.

A service knows its scenario options and how to launch it (command line and config
files); where it runs (namespace and cgroup, or container) is the runtime's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from chaoslab import build
from chaoslab.scenario.fields import Fields
from chaoslab.scenario.model import TargetSpec
from chaoslab.targets import envoy_config, images
from chaoslab.targets.certs import Certs


@dataclass(frozen=True)
class Launch:
    """What a runtime tells a service about where it runs."""

    spec: TargetSpec
    workdir: Path
    certs: Certs
    # Address of the upstream target as seen from here, and its ports by protocol.
    upstream: tuple[str, dict[str, int]] | None


class Service:
    name: ClassVar[str]
    # Where the service listens, by load protocol (https, http, grpc). The https port is
    # the one health checks use.
    ports: ClassVar[dict[str, int]]
    # Whether the service is a Go binary (Go probes and Go faults apply to it).
    is_go: ClassVar[bool] = False
    # Whether the service is a proxy (the proxy layer is measured on it).
    is_proxy: ClassVar[bool] = False
    # Ports that carry control traffic only (admin APIs): network faults never touch them.
    control_ports: ClassVar[tuple[int, ...]] = ()

    @classmethod
    def port(cls, protocol: str = "https") -> int:
        return cls.ports[protocol]

    @classmethod
    def parse(cls, fields: Fields, name: str) -> TargetSpec:
        return TargetSpec(name=name, service=cls.name)

    @classmethod
    def argv(cls, launch: Launch) -> list[str]:
        """The command line; argv[0] is the binary (in an image: its ENTRYPOINT)."""
        raise NotImplementedError

    @classmethod
    def image_files(cls) -> dict[str, Path]:
        """What the service's image holds: absolute path in the image -> file here."""
        raise NotImplementedError


class GoApi(Service):
    """The demo Go service in docker/go-api: HTTPS, plain HTTP and gRPC (TLS)."""

    name = "go-api"
    ports: ClassVar[dict[str, int]] = {"https": 8443, "http": 8080, "grpc": 9443}
    is_go = True

    @classmethod
    def argv(cls, launch: Launch) -> list[str]:
        return [
            str(build.go_service("go-api")),
            "-addr",
            f"0.0.0.0:{cls.ports['https']}",
            "-http-addr",
            f"0.0.0.0:{cls.ports['http']}",
            "-grpc-addr",
            f"0.0.0.0:{cls.ports['grpc']}",
            "-cert",
            str(launch.certs.cert),
            "-key",
            str(launch.certs.key),
        ]

    @classmethod
    def image_files(cls) -> dict[str, Path]:
        return {"/go-api": build.go_service("go-api")}


class Envoy(Service):
    """Envoy in front of one upstream target: HTTPS and HTTP in, HTTPS out; gRPC (TLS) in and out."""

    name = "envoy"
    ports: ClassVar[dict[str, int]] = dict(envoy_config.LISTEN_PORTS)
    is_proxy = True
    control_ports = (envoy_config.ADMIN_PORT,)

    @classmethod
    def parse(cls, fields: Fields, name: str) -> TargetSpec:
        upstream = fields.name("upstream", required=True)
        per_conn = fields.integer("requests_per_connection", 1, low=1, high=100_000)
        return TargetSpec(
            name=name, service=cls.name, upstream=upstream or None, requests_per_connection=per_conn
        )

    @classmethod
    def argv(cls, launch: Launch) -> list[str]:
        assert launch.upstream is not None, "validated: an envoy target has an upstream"
        config = launch.workdir / f"envoy-{launch.spec.name}.json"
        ip, ports = launch.upstream
        config.write_text(
            json.dumps(
                envoy_config.bootstrap(launch.certs, ip, ports, launch.spec.requests_per_connection), indent=1
            )
        )
        return [
            str(build.envoy_binary()),
            "-c",
            str(config),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
            "--log-path",
            str(launch.workdir / f"envoy-{launch.spec.name}.log"),
        ]

    @classmethod
    def image_files(cls) -> dict[str, Path]:
        binary = build.envoy_binary()
        return {"/usr/local/bin/envoy": binary, **images.shared_libraries(binary)}


SERVICES: dict[str, type[Service]] = {cls.name: cls for cls in (GoApi, Envoy)}
