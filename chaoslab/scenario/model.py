"""The typed scenario: what the YAML says once it has been validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    """The outcome of one fault phase."""

    ABSORBED = "absorbed"
    NO_CHANGE = "no-change"
    INCONCLUSIVE = "inconclusive"
    INVALID = "invalid"


# Load and port protocols: gRPC is over TLS ("grpc") or in the clear ("grpc-plain").
PROTOCOLS = ("https", "http", "grpc", "grpc-plain", "tcp")
TLS_PROTOCOLS = ("https", "grpc")


@dataclass(frozen=True)
class HealthSpec:
    """How to tell that a target is up: an HTTP(S) GET, a gRPC health check, a TCP connect."""

    protocol: str  # https, http, grpc, grpc-plain, tcp, or none
    path: str = "/"  # http(s)
    status: int = 200  # http(s): the status that means healthy
    service: str = ""  # grpc: the service asked about ("": the server as a whole)
    port: int = 0
    timeout: float = 30.0  # to become healthy once started

    def describe(self) -> str:
        if self.protocol == "none":
            return "no health check"
        if self.protocol in ("https", "http"):
            return f"GET {self.protocol}://:{self.port}{self.path} answers {self.status}"
        if self.protocol.startswith("grpc"):
            return f"gRPC health of {self.service or 'the server'} on :{self.port}"
        return f"TCP connect to :{self.port}"


@dataclass(frozen=True)
class TlsSpec:
    """The certificate a target serves: chaoslab's run CA (default), its own, or not checked."""

    ca: str = ""  # the CA of the target's own certificate; "" for the run's
    verify: bool = True


@dataclass(frozen=True)
class ImageSpec:
    tag: str = ""  # an image in the local engine
    build: str = ""  # or a Dockerfile context to build it from
    dockerfile: str = "Dockerfile"


@dataclass(frozen=True)
class AttachSpec:
    """Something already running, chosen one way: a PID, a process name, a port it listens
    on, a container (name or id), or container labels (compose's project and service)."""

    pid: int = 0
    process: str = ""
    port: int = 0
    container: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def in_docker(self) -> bool:
        return bool(self.container or self.labels)

    def describe(self) -> str:
        if self.pid:
            return f"pid {self.pid}"
        if self.process:
            return f"process named {self.process!r}"
        if self.port:
            return f"the process listening on port {self.port}"
        if self.container:
            return f"container {self.container!r}"
        return "container labelled " + ", ".join(f"{k}={v}" for k, v in self.labels)


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster the xDS control plane serves: its endpoints (targets) on one of their ports."""

    name: str
    endpoints: tuple[str, ...]
    port: str = ""  # the endpoints' port protocol (https or http); "": https where they all have it


@dataclass(frozen=True)
class MeshSpec:
    """What an xds-control target serves: clusters, the route's weights, endpoint health."""

    clusters: tuple[ClusterSpec, ...]
    weights: tuple[tuple[str, int], ...]  # (cluster, weight) of the one route every listener takes
    # targets it checks and Envoy can reach that no cluster has at start (a config change can
    # put them in one)
    standby: tuple[str, ...] = ()
    health_interval: float = 0.2  # seconds between endpoint checks; 0: none
    health_failures: int = 2  # failed checks in a row that withdraw an endpoint


@dataclass(frozen=True)
class ResilienceSpec:
    """An Envoy's resilience settings, passed into its config: the route's timeout and retries,
    its upstream clusters' circuit breaker and outlier detection (None: Envoy's default)."""

    timeout: float | None = None  # the route's timeout, seconds (Envoy's default: 15 s)
    retries: int = 0  # retries after the first try
    per_try_timeout: float | None = None
    retry_on: str = "5xx,reset,connect-failure"
    max_connections: int | None = None  # circuit breaker thresholds (Envoy's default: 1024 each)
    max_pending: int | None = None
    max_requests: int | None = None
    consecutive_5xx: int | None = None  # outlier detection: ejected after this many 5xx in a row
    outlier_interval: float = 1.0
    ejection: float = 5.0  # base ejection time, seconds


@dataclass(frozen=True)
class TargetSpec:
    """One target as the scenario declares it; every kind carries the same declarations."""

    name: str
    kind: str = "service"  # service (a built-in), program, image, attach
    service: str = ""  # the built-in (kind service)
    # program: the command line; image: a command replacing the image's CMD (empty: its own)
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    image: ImageSpec | None = None
    attach: AttachSpec | None = None
    ports: tuple[tuple[str, int], ...] = ()  # (protocol, port)
    health: HealthSpec = HealthSpec("none")
    tls: TlsSpec = TlsSpec()
    links: tuple[str, ...] = ()  # targets this one talks to (it starts after them)
    # a built-in's links: the YAML path of the option that names each (envoy: upstream)
    link_paths: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # config templates: (name, path; "" when generated)
    proxy: bool = False  # measured as a proxy (the proxy layer)
    control_ports: tuple[int, ...] = ()  # admin ports: control traffic, never faulted
    address: str = ""  # attach: where the host reaches it (default: found out)
    upstream: str | None = None  # envoy: the target it proxies to (one of its links)
    # envoy: requests an upstream connection carries before it is closed (1: a fresh TLS
    # handshake at the upstream for every request)
    requests_per_connection: int = 1
    xds: str | None = None  # envoy: the xds-control target it takes clusters and routes from
    xds_api: str = "delta"  # envoy: incremental (delta) or state-of-the-world (sotw) ADS
    resilience: ResilienceSpec = ResilienceSpec()  # envoy: timeouts, retries, breaker, outliers
    mesh: MeshSpec | None = None  # xds-control: what it serves
    # gRPC: the .proto files describing its API (absolute paths) and their import roots;
    # a gRPC request to it without its own `proto:` uses them
    protos: tuple[str, ...] = ()
    proto_path: tuple[str, ...] = ()

    @property
    def port_map(self) -> dict[str, int]:
        return dict(self.ports)

    def port(self, protocol: str | None = None) -> int:
        """Its port for `protocol`, or its main one (https, http, grpc, then tcp; a control
        port, which no fault touches, only when it has no other)."""
        ports = self.port_map
        if protocol is not None:
            return ports[protocol]
        served = [ports[p] for p in PROTOCOLS if p in ports]
        return next((p for p in served if p not in self.control_ports), served[0] if served else 0)

    def depends(self) -> tuple[str, ...]:
        """The targets that must be up before this one starts."""
        return self.links

    @property
    def what(self) -> str:
        """What it is, in a few words, for messages."""
        if self.kind == "service":
            return self.service
        if self.kind == "program":
            return f"program {Path(self.argv[0]).name if self.argv else '?'}"
        if self.kind == "image":
            assert self.image is not None
            return f"image {self.image.tag or self.image.build}"
        assert self.attach is not None
        return f"attached to {self.attach.describe()}"


@dataclass(frozen=True)
class GrpcCall:
    """A gRPC call: a method of the target's API, and the message sent to it as JSON.

    Its schema comes from .proto files (compiled by chaoslab at the start of the run) or
    from the server's reflection service; whether the method streams is read from there."""

    method: str  # package.Service/Method
    message: str = "{}"  # the request message, JSON (protobuf's JSON mapping)
    protos: tuple[str, ...] = ()  # .proto files (absolute); () with `reflection`
    proto_path: tuple[str, ...] = ()  # import roots besides each file's own directory
    reflection: bool = False  # the descriptors come from the server's reflection service
    protos_from: str = ""  # YAML path that named the protos, for messages
    replies: int = 0  # a server stream's expected number of replies (0: any)
    where: str = ""  # YAML path of the request, for problems found once the schema is read

    @property
    def service(self) -> str:
        return self.method.split("/", 1)[0]

    @property
    def path(self) -> str:
        """The HTTP/2 path the call is sent to."""
        return "/" + self.method


@dataclass(frozen=True)
class TcpExchange:
    """A tcp request: bytes sent, and a reply read until `expect` is in it, `read` bytes have
    come, or (both absent) the server closes the connection."""

    send: bytes
    expect: bytes = b""
    read: int = 0
    keep: bool = True  # one connection for the user's every request (False: a new one each)


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request in the load's mix."""

    name: str
    protocol: str  # https, http, grpc, grpc-plain or tcp
    target: str
    path: str = ""  # http and https
    weight: int = 1
    method: str = "GET"  # http and https
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""  # inline, or read from `body_file` at the start of the run
    body_file: str = ""
    status: int = 200  # the status that counts as success; any other is an error `http-<status>`
    grpc: GrpcCall | None = None  # grpc and grpc-plain
    tcp: TcpExchange | None = None  # tcp


@dataclass(frozen=True)
class Stage:
    """Ramp the open model's rate, or the closed model's users, to `value` over `duration`."""

    duration: float
    value: float


class Model(StrEnum):
    OPEN = "open"  # arrivals at a rate, whatever the target does (latency from the due time)
    CLOSED = "closed"  # a number of users, each sending its next request after a response


@dataclass(frozen=True)
class RemoteSpec:
    """Locust workers on other hosts (`chaoslab worker --master HOST:PORT`) that the run's Locust
    master waits for, beside its own `workers`."""

    workers: int
    host: str  # the address the run's Locust master listens on, one the workers' hosts reach
    port: int
    wait: float = 60.0  # seconds for every remote worker to join

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LoadSpec:
    target: str  # default target of the requests
    protocol: str  # default protocol of the requests
    model: Model
    requests: tuple[RequestSpec, ...]
    rate: float = 0.0  # open: arrivals per second (at the start, when there are stages)
    concurrency: int = 64  # open: most requests in flight at once
    users: int = 0  # closed: users (at the start, when there are stages)
    spawn_rate: float = 0.0  # closed: users started per second
    think: float = 0.0  # closed: a user's wait after each response
    stages: tuple[Stage, ...] = ()
    workers: int = 1  # Locust worker processes (more than one: Locust's master/worker mode)
    timeout: float = 10.0  # a request not answered in this time counts as an error
    remote: RemoteSpec | None = None  # workers on other hosts

    @property
    def all_workers(self) -> int:
        """Every Locust worker of the run: its own and the remote ones."""
        return self.workers + (self.remote.workers if self.remote else 0)

    @property
    def peak(self) -> float:
        """The highest rate (open) or user count (closed) the load reaches."""
        start = self.rate if self.model is Model.OPEN else self.users
        return max([start, *(s.value for s in self.stages)])

    def describe(self) -> str:
        protocols = "/".join(sorted({r.protocol for r in self.requests}))
        workers = f", {self.workers} workers" if self.workers > 1 else ""
        if self.remote:
            remote = f"{self.remote.workers} remote workers (master at {self.remote.listen})"
            workers = f", {self.workers} local and {remote}"
        unit = "/s" if self.model is Model.OPEN else " users"
        ramp = f", {len(self.stages)} stages up to {self.peak:g}{unit}" if self.stages else ""
        if self.model is Model.OPEN:
            return (
                f"open model {self.rate:g}/s {protocols}, at most {self.concurrency} in flight{ramp}{workers}"
            )
        return f"closed model {self.users} users {protocols}, think {self.think * 1000:g} ms{ramp}{workers}"


@dataclass(frozen=True)
class FaultSpec:
    """Common part of every fault; each fault kind subclasses it with its own parameters."""

    kind: str
    target: str
    path: str  # YAML path of this fault, for messages


@dataclass(frozen=True)
class ChangeSpec:
    """A config change an xDS control plane makes during a phase (`changes:`), undone at its end:
    some clusters' endpoints replaced, the route's weights replaced."""

    at: float  # seconds into the phase
    target: str  # the xds-control target
    path: str
    clusters: tuple[ClusterSpec, ...] = ()  # each replaces the cluster of its name
    weights: tuple[tuple[str, int], ...] | None = None

    def apply(self, mesh: MeshSpec) -> MeshSpec:
        new = {c.name: c for c in self.clusters}
        # a cluster given new endpoints keeps its protocol unless the change names one
        clusters = tuple(
            replace(new[c.name], port=new[c.name].port or c.port) if c.name in new else c
            for c in mesh.clusters
        )
        return replace(
            mesh, clusters=clusters, weights=mesh.weights if self.weights is None else self.weights
        )

    def describe(self) -> str:
        parts = [f"{c.name} -> [{', '.join(c.endpoints)}]" for c in self.clusters]
        if self.weights is not None:
            parts.append("weights " + ", ".join(f"{n} {w}" for n, w in self.weights))
        return "; ".join(parts)


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    duration: float
    faults: tuple[FaultSpec, ...] = ()
    changes: tuple[ChangeSpec, ...] = ()
    # Compare this phase against the baseline and give it a verdict (fault phases always
    # are; a fault-free phase with `compare: true` is a control).
    compare: bool = False


@dataclass(frozen=True)
class SweepPoint:
    """One value of a sweep, and the phase that runs the fault with it."""

    value: str  # as the scenario gives it ("4ms", "5%", "0.5")
    x: float  # the same in the fault's own unit (seconds, percent, cores, bits/s): the curve's axis
    phase: str


@dataclass(frozen=True)
class SweepSpec:
    """A phase whose fault is run at a list or range of values of one parameter (`sweep:`):
    one phase per value, a fault-free rest between two values."""

    name: str  # the phase's name in the scenario; its values' phases are NAME@VALUE
    path: str  # YAML path of the sweep
    fault: str  # YAML path of the swept fault
    kind: str
    target: str
    param: str
    points: tuple[SweepPoint, ...]
    duration: float  # of each value's phase
    rest: float  # the fault-free phase after each value but the last (0: none)

    @property
    def total(self) -> float:
        return len(self.points) * self.duration + (len(self.points) - 1) * self.rest

    def describe(self) -> str:
        values = [p.value for p in self.points]
        shown = ", ".join(values) if len(values) <= 8 else f"{values[0]}, {values[1]} ... {values[-1]}"
        rest = f" + {self.rest:g}s rest between" if self.rest else ""
        return (
            f"sweep {self.name}: {self.kind} {self.param} at {self.target} over {len(values)} values "
            f"({shown}), {self.duration:g}s each{rest} = {_clock(self.total)}"
        )


def _clock(seconds: float) -> str:
    """1h02m05s, 3m20s, 45s."""
    s = round(seconds)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


@dataclass(frozen=True)
class CauseRef:
    """A cause an expectation names: a layer, at one target or at any."""

    layer: str
    target: str | None = None

    def fits(self, layer: str, target: str) -> bool:
        return layer == self.layer and self.target in (None, target)

    def describe(self) -> str:
        return self.layer + (f" at {self.target}" if self.target else "")


@dataclass(frozen=True)
class Expectation:
    phase: str
    path: str
    absorbed_by: str | None = None  # the verdict's layer (its main cause)
    target: str | None = None
    status: Status | None = None
    client_p50_below: float | None = None
    client_p99_below: float | None = None
    error_rate_below: float | None = None
    # `absorbed_by` as a list: the phase is absorbed and every one of these is among its causes
    causes: tuple[CauseRef, ...] = ()
    # a share of the client's added time that one cause (the causes it fits, together) explains
    cause: CauseRef | None = None
    share_at_least: float | None = None
    share_below: float | None = None
    # every config version an xDS control plane set in the phase reached each Envoy (ACK)
    # within this many seconds of its snapshot
    xds_sync_below: float | None = None
    # an expectation on a sweep is checked at each of its values (`phase` is that value's phase)
    sweep: str = ""
    # the sweep's values it must hold through (in the fault's unit, see SweepPoint.x; None: all);
    # beyond it, a failure only marks the breaking point
    through: float | None = None
    through_text: str = ""
    binding: bool = True  # a failure fails the run (False: a sweep's value past `through`)

    def describe(self) -> str:
        parts = []
        if self.absorbed_by:
            parts.append(f"absorbed by {self.absorbed_by}" + (f" at {self.target}" if self.target else ""))
        if self.causes:
            parts.append("absorbed by " + " and ".join(c.describe() for c in self.causes))
        if self.cause is not None:
            if self.share_at_least is not None:
                parts.append(f"{self.cause.describe()} explains >= {self.share_at_least:.0%}")
            if self.share_below is not None:
                parts.append(f"{self.cause.describe()} explains < {self.share_below:.0%}")
        if self.status:
            parts.append(f"status {self.status}")
        if self.client_p50_below is not None:
            parts.append(f"client p50 < {self.client_p50_below * 1000:g}ms")
        if self.client_p99_below is not None:
            parts.append(f"client p99 < {self.client_p99_below * 1000:g}ms")
        if self.error_rate_below is not None:
            parts.append(f"error rate < {self.error_rate_below:.1%}")
        if self.xds_sync_below is not None:
            parts.append(f"xds sync < {self.xds_sync_below * 1000:g}ms")
        if self.through_text:
            parts.append(f"through {self.sweep} {self.through_text}")
        return f"{self.phase}: " + ", ".join(parts)


@dataclass(frozen=True)
class AbortSpec:
    """Stop conditions (`abort:`): when one holds, every fault is reverted at once, the load
    stops and the report is written with the phases so far and the reason (exit 5)."""

    window: float = 5.0  # the sliding window of the client and layer conditions, seconds
    min_requests: int = 10  # fewer requests in the window decide nothing
    error_rate: float | None = None  # client errors / requests ended in the window, 0..1
    p50: float | None = None  # client p50 over the window, seconds
    p99: float | None = None
    unhealthy: float | None = None  # a target's own health check failing this long, seconds
    unhealthy_targets: tuple[str, ...] = ()  # () = every target that has a health check
    added: tuple[tuple[str, float], ...] = ()  # (layer, seconds per request against the baseline)
    target_exit: tuple[str, ...] | None = None  # None: off (an exit is an error, exit 3); () = any

    def describe(self) -> list[str]:
        out = []
        if self.error_rate is not None:
            out.append(f"error rate above {self.error_rate:.0%}")
        for name, value in (("p50", self.p50), ("p99", self.p99)):
            if value is not None:
                out.append(f"client {name} above {value * 1000:g} ms")
        if self.unhealthy is not None:
            who = ", ".join(self.unhealthy_targets) or "any target"
            out.append(f"{who} unhealthy for {self.unhealthy:g} s")
        out += [f"{layer} adding more than {v * 1000:g} ms per request" for layer, v in self.added]
        if self.target_exit is not None:
            out.append(f"{', '.join(self.target_exit) or 'a target'} exiting")
        return out


@dataclass(frozen=True)
class SwitchSpec:
    """The dead man's switch (`switch:`): every applied fault is undone within `within` seconds
    of chaoslab's last heartbeat, and no fault outlives its phase's scheduled end by more
    than `margin` seconds, whatever happens to chaoslab."""

    within: float = 5.0
    margin: float = 5.0


@dataclass(frozen=True)
class ProbeBudget:
    """What each probe may cost the targets, as a share of the time the requests took
    (`probes: {budget: 5%, limit: 50%}`): over `warn` the run says so, over `limit` the probe is
    detached and its layer is lost from then on (the kill switch). A tool that explains latency
    must not be the latency."""

    warn: float = 0.05
    limit: float = 0.5


# Where targets run: local namespaces and cgroups, Docker containers, or Docker when it answers.
RUNTIMES = ("local", "docker", "auto")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    runtime: str
    targets: Mapping[str, TargetSpec]
    load: LoadSpec
    phases: tuple[PhaseSpec, ...]
    expect: tuple[Expectation, ...] = ()
    source: Path | None = field(default=None, compare=False)
    # Layers to probe (None: every layer that applies; empty: none, a load-only run).
    probes: tuple[str, ...] | None = None
    # Layers that must attach: without one of them the run stops before any load (exit 3).
    # Any other layer that cannot attach on the kernel is left out and the run goes on.
    required_probes: tuple[str, ...] = ()
    abort: AbortSpec = AbortSpec()
    switch: SwitchSpec = SwitchSpec()
    probe_budget: ProbeBudget = ProbeBudget()
    sweeps: tuple[SweepSpec, ...] = ()
    # The Docker engine the containers run on ("": DOCKER_HOST, then the local socket).
    engine: str = ""

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.phases)

    @property
    def compared_phases(self) -> tuple[PhaseSpec, ...]:
        return tuple(p for p in self.phases[1:] if p.compare)
