"""chaoslab's ready-made services, as data on the path every target takes.

A built-in turns its few scenario options into an ordinary target spec: a command line
with placeholders (`{bin.go-api}`, `{cert}`, `{ports.https}`...), ports, a health check, and
config files (Envoy's bootstrap, generated from its upstream unless the user gives one).
From there a built-in runs exactly like a user's program or image.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from chaoslab import build
from chaoslab.paths import DOCKER_SRC
from chaoslab.quote import show
from chaoslab.scenario.fields import NAME_HINT, NAME_RE, Fields, Problems, join
from chaoslab.scenario.model import (
    ChangeSpec,
    ClusterSpec,
    HealthSpec,
    MeshSpec,
    ResilienceSpec,
    TargetSpec,
)
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
        xds = fields.name("xds") if fields.has("xds") else ""
        if fields.has("xds_api") and not xds:
            fields.problems.add(
                fields.at("xds_api"), "only an envoy with xds: takes config over ADS", "remove it"
            )
        xds_api = fields.choice("xds_api", ("delta", "sotw"), "delta")
        upstream = fields.name("upstream", required=not xds)
        if xds and upstream:
            fields.problems.add(
                fields.at("xds"),
                "takes its clusters from a control plane (xds) or proxies to one upstream, not both",
                "remove upstream: (the control plane's clusters say where requests go)",
            )
        per_conn = fields.integer("requests_per_connection", 1, low=1, high=100_000)
        resilience = self._resilience(fields)
        bootstrap = ""
        if fields.has("bootstrap"):
            bootstrap = str((base / fields.string("bootstrap", required=True)).resolve())
            if not Path(bootstrap).is_file():
                fields.problems.add(fields.at("bootstrap"), f"{bootstrap} is not a file")
        # with a control plane only the https and http listeners exist (their route comes from it)
        ports = tuple((p, n) for p, n in envoy_config.LISTEN_PORTS.items() if not xds or p != "grpc")
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
                # the access log reaches its file this often (Envoy's default is 10 s: the
                # last phase's answers would be read before they were written)
                "--file-flush-interval-msec",
                str(round(ACCESS_LOG_FLUSH * 1000)),
            ),
            ports=ports,
            # Envoy's own readiness on its admin port (control traffic, never faulted).
            health=HealthSpec("http", path="/ready", port=envoy_config.ADMIN_PORT),
            links=tuple(link for link in (upstream, xds) if link),
            link_paths=tuple(path for path, link in (("upstream", upstream), ("xds", xds)) if link),
            files=(("bootstrap", bootstrap or GENERATED), *((("resources", GENERATED),) if xds else ())),
            proxy=True,
            control_ports=(envoy_config.ADMIN_PORT,),
            upstream=upstream or None,
            requests_per_connection=per_conn,
            xds=xds or None,
            xds_api=xds_api,
            resilience=resilience,
        )

    @staticmethod
    def _resilience(fields: Fields) -> ResilienceSpec:
        """`timeout:`, `retries:` (a count or {attempts, per_try_timeout, retry_on}), `circuit_breaker:`
        ({max_connections, max_pending, max_requests}) and `outlier_detection:`
        ({consecutive_5xx, interval, ejection})."""
        p = fields.problems
        timeout = fields.duration("timeout", 0.0, low=0.001, high=300) or None
        retries, per_try, retry_on = 0, None, ResilienceSpec.retry_on
        raw = fields.value("retries") if fields.has("retries") else None
        if isinstance(raw, dict):
            r = Fields(raw, fields.at("retries"), p)
            retries = r.integer("attempts", 1, low=0, high=10)
            per_try = r.duration("per_try_timeout", 0.0, low=0.001, high=300) or None
            retry_on = r.string("retry_on", retry_on)
            if not re.fullmatch(r"[a-z0-9-]+(,[a-z0-9-]+)*", retry_on):
                p.add(
                    r.at("retry_on"), f"{show(retry_on)} is not a list of Envoy retry conditions", RETRY_HINT
                )
            r.finish()
            if per_try and timeout and per_try > timeout:
                p.add(
                    r.at("per_try_timeout"),
                    f"a try of {per_try:g}s outlasts the route's timeout ({timeout:g}s)",
                    "make per_try_timeout shorter than timeout",
                )
        elif raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 10:
                p.add(
                    fields.at("retries"),
                    f"expected 0 to 10 retries or a mapping, got {show(raw)}",
                    RETRY_HINT,
                )
            else:
                retries = raw
        limits: dict[str, int | None] = {"max_connections": None, "max_pending": None, "max_requests": None}
        if fields.has("circuit_breaker"):
            cb = Fields(fields.value("circuit_breaker"), fields.at("circuit_breaker"), p)
            for key in limits:
                if cb.has(key):
                    limits[key] = cb.integer(key, 1, low=1, high=1_000_000)
            if cb.ok and not any(v is not None for v in limits.values()):
                p.add(cb.path, "sets no threshold", "give max_connections, max_pending or max_requests")
            cb.finish()
        interval, ejection = ResilienceSpec.outlier_interval, ResilienceSpec.ejection
        consecutive = None
        if fields.has("outlier_detection"):
            od = Fields(fields.value("outlier_detection"), fields.at("outlier_detection"), p)
            consecutive = od.integer("consecutive_5xx", 5, low=1, high=1000, required=True)
            interval = od.duration("interval", interval, low=0.01, high=60)
            ejection = od.duration("ejection", ejection, low=0.01, high=3600)
            od.finish()
        return ResilienceSpec(
            timeout=timeout,
            retries=retries,
            per_try_timeout=per_try,
            retry_on=retry_on,
            max_connections=limits["max_connections"],
            max_pending=limits["max_pending"],
            max_requests=limits["max_requests"],
            consecutive_5xx=consecutive,
            outlier_interval=interval,
            ejection=ejection,
        )

    def complete(self, spec: TargetSpec, targets: Mapping[str, TargetSpec]) -> TargetSpec:
        """With a control plane, Envoy links to its endpoints too (it sends them requests) and
        carries what it serves (its resources are written for Envoy's view of them)."""
        cp = targets.get(spec.xds or "")
        if cp is None or cp.mesh is None:
            return spec
        # an unknown endpoint is the control plane's problem, reported there once
        more = tuple(e for e in cp.links if e not in spec.links and e in targets)
        return replace(
            spec,
            links=(*spec.links, *more),
            link_paths=(*spec.link_paths, *(("xds",) * len(more))),
            mesh=cp.mesh,
        )

    def check(self, spec: TargetSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        cp = targets.get(spec.xds or "")
        if cp is not None and cp.mesh is None:
            problems.add(
                f"targets.{spec.name}.xds",
                f"{cp.name} is not an xDS control plane",
                f"name a target with service: {XdsControl.name}",
            )
        up = targets.get(spec.upstream or "")
        if up is not None and not {"https", "http"} & set(up.port_map):
            problems.add(
                f"targets.{spec.name}.upstream",
                f"{up.name} declares no https or http port for Envoy to send requests to",
                f"give {up.name} ports: {{https: PORT}} or {{http: PORT}}",
            )

    def generate(self, spec: TargetSpec, file: str, launch: Launch) -> str:
        if file == "resources":
            assert spec.mesh is not None, "completed: an envoy target with xds carries its mesh"
            resources = envoy_config.mesh_resources(
                spec.mesh, launch.peers, spec.requests_per_connection, spec.resilience
            )
            return json.dumps(resources, indent=1)
        assert file == "bootstrap", "an envoy target generates its bootstrap and resources only"
        if spec.xds is not None:
            cp = launch.peers[spec.xds]
            log = str(launch.workdir / access_log_name(spec.name))
            ads = envoy_config.ads_bootstrap(
                launch.certs, spec.name, cp.host, cp.ports[XdsControl.XDS], log, spec.xds_api
            )
            return json.dumps(ads, indent=1)
        assert spec.upstream is not None, "validated: an envoy target has an upstream or a control plane"
        peer = launch.peers[spec.upstream]
        config = envoy_config.bootstrap(
            launch.certs,
            peer.host,
            peer.ports,
            spec.requests_per_connection,
            peer.ca,
            peer.verify,
            spec.resilience,
            str(launch.workdir / access_log_name(spec.name)),
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
        # its own hop's timeout: one Redis command, dial, read and write alike
        timeout = fields.duration("cache_timeout", 2.0, low=0.001, high=60)
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
                "-redis-timeout",
                f"{round(timeout * 1000)}ms",
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


class XdsControl(Builtin):
    """chaoslab's xDS control plane, docker/xds-control (go-control-plane): serves the Envoy
    targets that name it (`xds: NAME`) their clusters, endpoints and route over ADS, withdraws
    an endpoint that stops answering its checks, takes new resources during a run, and logs
    when each Envoy received and acknowledged each version (the xds layer)."""

    name = "xds-control"
    go = True
    XDS = "grpc-plain"  # the ADS port's protocol: gRPC in the clear
    PORTS = ((XDS, 18000), ("http", 18001))  # ADS; the control API (control traffic)

    def parse(self, fields: Fields, name: str, base: Path) -> TargetSpec:
        clusters, link_paths = self._clusters(fields)
        weights = self._weights(fields, [c.name for c in clusters])
        standby = self._targets(fields, "standby", link_paths) if fields.has("standby") else ()
        interval = fields.duration("health_interval", 0.2, positive=False, low=0.05, high=60)
        timeout = fields.duration("health_timeout", 0.5, low=0.01, high=30)
        failures = fields.integer("health_failures", 2, low=1, high=100)
        links = tuple(dict.fromkeys([*(e for c in clusters for e in c.endpoints), *standby]))
        paths = tuple(link_paths[link] for link in links)
        return TargetSpec(
            name=name,
            kind="service",
            service=self.name,
            argv=(
                "{bin.xds-control}",
                "-xds-addr",
                f"0.0.0.0:{{ports.{self.XDS}}}",
                "-http-addr",
                "0.0.0.0:{ports.http}",
                "-events",
                f"{{workdir}}/{xds_events_name(name)}",
                "-health-interval",
                f"{round(interval * 1000)}ms",
                "-health-failures",
                str(failures),
                "-health-timeout",
                f"{round(timeout * 1000)}ms",
            ),
            ports=self.PORTS,
            health=HealthSpec("http", path="/healthz", port=18001),
            links=links,
            link_paths=paths,
            control_ports=(18001,),
            mesh=MeshSpec(
                clusters, weights, standby=standby, health_interval=interval, health_failures=failures
            ),
        )

    def parse_change(self, fields: Fields, at: float, target: str, mesh: MeshSpec | None) -> ChangeSpec:
        """A phase's config change at this control plane: `clusters:` (each named one's endpoints
        replaced, among the targets it serves) and `routes:` (the weights replaced)."""
        clusters: tuple[ClusterSpec, ...] = ()
        weights = None
        known = [c.name for c in mesh.clusters] if mesh else []
        served = {e for c in mesh.clusters for e in c.endpoints} | set(mesh.standby) if mesh else set()
        if fields.has("clusters"):
            clusters, _ = self._clusters(fields, allow_empty=True)
            for c in clusters:
                at_path = join(fields.at("clusters"), c.name)
                if mesh and c.name not in known:
                    fields.problems.add(
                        at_path,
                        f"{target} serves no cluster {show(c.name)}",
                        f"clusters are: {', '.join(known)}",
                    )
                for e in c.endpoints:
                    if mesh and e not in served:
                        fields.problems.add(
                            at_path,
                            f"{e} is not among the targets {target} serves from the start",
                            f"list it in targets.{target}.standby: a change moves the endpoints it can reach",
                        )
        if fields.has("routes"):
            weights = self._weights(fields, known)
        if fields.ok and not clusters and weights is None:
            fields.problems.add(fields.path, "changes nothing", "give clusters: or routes:")
        return ChangeSpec(at, target, fields.path, clusters, weights)

    @classmethod
    def _clusters(
        cls, fields: Fields, allow_empty: bool = False
    ) -> tuple[tuple[ClusterSpec, ...], dict[str, str]]:
        """`clusters: {NAME: [TARGET, ...]}` or `{NAME: {endpoints: [...], port: https}}`."""
        seen = len(list(fields.problems))
        raw = fields.mapping("clusters", required=True)
        if not raw and len(list(fields.problems)) == seen:  # given, as an empty mapping
            fields.problems.add(
                fields.at("clusters"), "names no cluster", "e.g. clusters: {api: [api-a, api-b]}"
            )
        out: list[ClusterSpec] = []
        paths: dict[str, str] = {}
        for cname, value in raw.items():
            path = join(fields.at("clusters"), cname)
            if not NAME_RE.match(cname):
                fields.problems.add(path, f"{show(cname)} is not a valid cluster name", NAME_HINT)
                continue
            port = ""
            if isinstance(value, dict):
                sub = Fields(value, path, fields.problems)
                value = sub.sequence("endpoints", required=True)
                port = sub.choice("port", ("https", "http"), "")
                sub.finish()
                path = join(path, "endpoints")
            if not isinstance(value, list) or not (value or allow_empty):
                fields.problems.add(
                    path, "expected a list of targets", "give the targets it sends to, e.g. [api-a, api-b]"
                )
                continue
            endpoints = cls._names(value, path, fields, paths)
            out.append(ClusterSpec(cname, endpoints, port))
        return tuple(out), paths

    @classmethod
    def _targets(cls, fields: Fields, key: str, paths: dict[str, str]) -> tuple[str, ...]:
        value = fields.sequence(key)
        return cls._names(value, fields.at(key), fields, paths)

    @staticmethod
    def _names(value: list[object], path: str, fields: Fields, paths: dict[str, str]) -> tuple[str, ...]:
        """Target names, each once; `paths` gets where each was first named."""
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not NAME_RE.match(item):
                fields.problems.add(join(path, i), f"{show(item)} is not a target name", NAME_HINT)
            elif item in out:
                fields.problems.add(join(path, i), f"{item} is listed twice")
            else:
                out.append(item)
                paths.setdefault(item, join(path, i).removeprefix(fields.path + "."))
        return tuple(out)

    @staticmethod
    def _weights(fields: Fields, names: list[str]) -> tuple[tuple[str, int], ...]:
        """`routes: {CLUSTER: WEIGHT, ...}`: how the one route splits requests; default: all to
        the first cluster."""
        if not fields.has("routes"):
            return ((names[0], 100),) if names else ()
        seen = len(list(fields.problems))
        raw = fields.mapping("routes", required=True)
        if not raw and len(list(fields.problems)) == seen:
            fields.problems.add(fields.at("routes"), "gives no weight", "e.g. routes: {api: 90, canary: 10}")
        out: list[tuple[str, int]] = []
        for cname, weight in raw.items():
            path = join(fields.at("routes"), cname)
            if cname not in names:
                fields.problems.add(
                    path, f"unknown cluster {show(cname)}", f"clusters are: {', '.join(names)}"
                )
            elif isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 10_000:
                fields.problems.add(path, f"weight {show(weight)} is not a whole number from 0 to 10000")
            else:
                out.append((cname, weight))
        if raw and out and not any(w for _, w in out):
            fields.problems.add(fields.at("routes"), "every weight is 0", "give one cluster a weight above 0")
        return tuple(out)

    def complete(self, spec: TargetSpec, targets: Mapping[str, TargetSpec]) -> TargetSpec:
        """The Envoys that name it (each one's resources file, written when it launches) and
        where it checks each endpoint (as it reaches it)."""
        assert spec.mesh is not None
        args: list[str] = []
        for t in targets.values():
            if t.xds == spec.name:
                args += ["-node", f"{t.name}={{workdir}}/{t.name}-resources.json"]
        checked: set[str] = set()
        ports_of = [(e, c.port) for c in spec.mesh.clusters for e in c.endpoints]
        for e, port in [*ports_of, *((e, "") for e in spec.mesh.standby)]:
            ports = targets[e].port_map if e in targets else {}
            proto = port or ("https" if "https" in ports else "http")
            if proto in ports and e not in checked:
                checked.add(e)
                args += ["-check", f"{e}={{targets.{e}.host}}:{{targets.{e}.ports.{proto}}}"]
        return replace(spec, argv=(*spec.argv, *args))

    def check(self, spec: TargetSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        assert spec.mesh is not None
        for cluster in spec.mesh.clusters:
            cluster_problem(cluster, targets, f"targets.{spec.name}.clusters.{cluster.name}", problems)
        for endpoint in spec.mesh.standby:
            t = targets.get(endpoint)
            if t is not None and not {"https", "http"} & set(t.port_map):
                problems.add(
                    f"targets.{spec.name}.standby",
                    f"{endpoint} declares no https or http port for Envoy to send requests to",
                    f"give {endpoint} ports: {{https: PORT}}",
                )

    def binary(self) -> Path:
        return build.go_service(self.name)


def cluster_problem(
    cluster: ClusterSpec, targets: Mapping[str, TargetSpec], path: str, problems: Problems
) -> None:
    """A cluster's endpoints must share the protocol Envoy speaks to them: its `port:`, or https
    where they all have it, else http where they all have that."""
    known = [targets[e] for e in cluster.endpoints if e in targets]  # an unknown one: reported with the links
    if cluster.port:
        need = cluster.port
    elif all("https" in t.port_map for t in known):
        need = "https"
    else:
        need = "http"
    for t in known:
        if need not in t.port_map:
            problems.add(
                path,
                f"{t.name} declares no {need} port, which Envoy speaks to this cluster"
                + ("" if cluster.port else " (its endpoints do not all have https)"),
                f"give {t.name} ports: {{{need}: PORT}}, or keep endpoints of one protocol in a cluster",
            )


ACCESS_LOG_FLUSH = 0.25  # seconds between Envoy's writes of its access log


def access_log_name(target: str) -> str:
    """The file (in the run's work directory) where an envoy target with a generated bootstrap
    logs each request (chaoslab's error attribution reads it)."""
    return f"envoy-{target}-access.jsonl"


RETRY_HINT = 'e.g. retries: {attempts: 2, per_try_timeout: 50ms, retry_on: "5xx,reset,connect-failure"}'


def xds_events_name(target: str) -> str:
    """The file (in the run's work directory) where an xds-control target logs its events."""
    return f"xds-{target}.jsonl"


BUILTINS: dict[str, Builtin] = {b.name: b for b in (GoApi(), Envoy(), CacheApi(), XdsControl())}
