"""chaoslab's ready-made services, as data on the path every target takes.

A built-in turns its few scenario options into an ordinary target spec: a command line
with placeholders (`{bin.go-api}`, `{cert}`, `{ports.https}`...), ports, a health check, and
config files (Envoy's bootstrap, generated from its upstream unless the user gives one).
From there a built-in runs exactly like a user's program or image.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from chaoslab import build
from chaoslab.paths import DOCKER_SRC
from chaoslab.scenario.fields import Fields, Problems
from chaoslab.scenario.model import HealthSpec, TargetSpec
from chaoslab.targets import envoy_config, images

if TYPE_CHECKING:
    from chaoslab.targets.services import Launch

GENERATED = ""  # the path of a file the built-in writes itself


class Builtin(ABC):
    name: ClassVar[str]
    go: ClassVar[bool] = False  # a Go program (known before it is built)

    @abstractmethod
    def parse(self, fields: Fields, name: str, base: Path) -> TargetSpec:
        """The target spec for this built-in, from its options in the scenario."""

    def complete(self, spec: TargetSpec, targets: Mapping[str, TargetSpec]) -> TargetSpec:
        """The spec with what only the other targets tell (links, options), once all are parsed."""
        return spec

    def check(self, spec: TargetSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        """Checks that need the other targets; problems go to `problems`."""
        return None

    def generate(self, spec: TargetSpec, file: str, launch: Launch) -> str:
        """The content of a config file the built-in writes itself (GENERATED in spec.files)."""
        raise NotImplementedError(f"{self.name} generates no file {file!r}")

    @abstractmethod
    def binary(self) -> Path:
        """The executable (`{bin.NAME}`), built or found on demand."""

    def image_files(self) -> dict[str, Path]:
        """What its Docker image holds: absolute path in the image -> file here."""
        return {f"/{self.name}": self.binary()}


class GoApi(Builtin):
    """The demo Go service in docker/go-api: HTTPS, plain HTTP and gRPC (TLS, the Work API,
    declared by its .proto file; the server also answers reflection)."""

    name = "go-api"
    go = True
    PORTS = (("https", 8443), ("http", 8080), ("grpc", 9443))
    PROTOS = (str(DOCKER_SRC / "go-api" / "work.proto"),)

    def parse(self, fields: Fields, name: str, base: Path) -> TargetSpec:
        return self.parse_default(name)

    def parse_default(self, name: str) -> TargetSpec:
        return TargetSpec(
            name=name,
            kind="service",
            service=self.name,
            argv=(
                "{bin.go-api}",
                "-addr",
                "0.0.0.0:{ports.https}",
                "-http-addr",
                "0.0.0.0:{ports.http}",
                "-grpc-addr",
                "0.0.0.0:{ports.grpc}",
                "-cert",
                "{cert}",
                "-key",
                "{key}",
            ),
            ports=self.PORTS,
            health=HealthSpec("https", path="/healthz", port=8443),
            protos=self.PROTOS,
        )

    def binary(self) -> Path:
        return build.go_service("go-api")


class Envoy(Builtin):
    """Envoy in front of one upstream target: HTTPS and HTTP in, HTTP(S) out; gRPC in and out.

    Its bootstrap is generated from the upstream (its address and ports as Envoy reaches it),
    or is the user's own (`bootstrap: FILE`), a template with the same placeholders."""

    name = "envoy"

    def parse(self, fields: Fields, name: str, base: Path) -> TargetSpec:
        upstream = fields.name("upstream", required=True)
        per_conn = fields.integer("requests_per_connection", 1, low=1, high=100_000)
        bootstrap = ""
        if fields.has("bootstrap"):
            bootstrap = str((base / fields.string("bootstrap", required=True)).resolve())
            if not Path(bootstrap).is_file():
                fields.problems.add(fields.at("bootstrap"), f"{bootstrap} is not a file")
        ports = tuple(envoy_config.LISTEN_PORTS.items())
        return TargetSpec(
            name=name,
            kind="service",
            service=self.name,
            argv=(
                "{bin.envoy}",
                "-c",
                "{files.bootstrap}",
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
                "--log-path",
                "{workdir}/envoy-{name}.log",
            ),
            ports=ports,
            # Envoy's own readiness on its admin port (control traffic, never faulted).
            health=HealthSpec("http", path="/ready", port=envoy_config.ADMIN_PORT),
            links=(upstream,) if upstream else (),
            link_paths=("upstream",),
            files=(("bootstrap", bootstrap or GENERATED),),
            proxy=True,
            control_ports=(envoy_config.ADMIN_PORT,),
            upstream=upstream or None,
            requests_per_connection=per_conn,
        )

    def check(self, spec: TargetSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        up = targets.get(spec.upstream or "")
        if up is not None and not {"https", "http"} & set(up.port_map):
            problems.add(
                f"targets.{spec.name}.upstream",
                f"{up.name} declares no https or http port for Envoy to send requests to",
                f"give {up.name} ports: {{https: PORT}} or {{http: PORT}}",
            )

    def generate(self, spec: TargetSpec, file: str, launch: Launch) -> str:
        assert file == "bootstrap" and spec.upstream is not None, "validated: an envoy target has an upstream"
        peer = launch.peers[spec.upstream]
        config = envoy_config.bootstrap(
            launch.certs, peer.host, peer.ports, spec.requests_per_connection, peer.ca, peer.verify
        )
        return json.dumps(config, indent=1)

    def binary(self) -> Path:
        return build.envoy_binary()

    def image_files(self) -> dict[str, Path]:
        binary = self.binary()
        return {"/usr/local/bin/envoy": binary, **images.shared_libraries(binary)}


class CacheApi(Builtin):
    """The example service with a dependency, docker/cache-api: an HTTPS API keeping a Redis
    hash cache (HSET and HMGET per request). `cache:` names the Redis target."""

    name = "cache-api"
    go = True
    PORTS = (("https", 8443), ("http", 8080))

    def parse(self, fields: Fields, name: str, base: Path) -> TargetSpec:
        cache = fields.name("cache", required=True)
        return TargetSpec(
            name=name,
            kind="service",
            service=self.name,
            argv=(
                "{bin.cache-api}",
                "-addr",
                "0.0.0.0:{ports.https}",
                "-http-addr",
                "0.0.0.0:{ports.http}",
                "-cert",
                "{cert}",
                "-key",
                "{key}",
                "-redis",
                f"{{targets.{cache}.host}}:{{targets.{cache}.ports.tcp}}",
            ),
            ports=self.PORTS,
            health=HealthSpec("https", path="/healthz", port=8443),
            links=(cache,) if cache else (),
            link_paths=("cache",),
        )

    def check(self, spec: TargetSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        [cache] = spec.links or ("",)
        if cache in targets and "tcp" not in targets[cache].port_map:
            problems.add(
                f"targets.{spec.name}.cache",
                f"{cache} declares no tcp port for the cache client to connect to",
                f"give {cache} ports: {{tcp: 6379}}",
            )

    def binary(self) -> Path:
        return build.go_service("cache-api")


BUILTINS: dict[str, Builtin] = {b.name: b for b in (GoApi(), Envoy(), CacheApi())}
