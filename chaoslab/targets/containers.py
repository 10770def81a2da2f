"""The Docker runtime: each target is a container on a bridge network that the run creates.

Talks to the engine through the Docker SDK for Python. Images are built here (images.py).
Each container gets a fixed address on the run's network (10.233.<net>.0/24), its ports
published on 127.0.0.1 only (for a person poking at the stack), the run's work directory
mounted at the same path (certificates, Envoy's config and log), and labels naming the run
and the target. chaoslab itself reaches a container at its address on the run's network:
the published ports go through docker-proxy, which would hide the control traffic's source
ports and add a user-space hop that no user's service-to-service traffic takes.

So that faults and probes work exactly as on the local runtime, a container is described by
the same RunningTarget: its network namespace gets a name under /run/netns (`ip netns
attach`), its cgroup is the one the engine made (read from /proc/<pid>/cgroup, v1 or v2),
its process is the host PID of its entrypoint, and its files are reached through
/proc/<pid>/root. Its links are all on its one `eth0`, told apart by the peer's address.

Every container, network and namespace name is journaled before it is created and removed
through the run's ExitStack on every exit path; `chaoslab recover` also removes containers
and networks labelled with a run that is no longer alive.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoslab import proc
from chaoslab.context import RunContext
from chaoslab.errors import PreflightError, TargetError
from chaoslab.proc import run
from chaoslab.safety import locks
from chaoslab.scenario.model import Scenario, TargetSpec
from chaoslab.targets import attach, certs, images, netns
from chaoslab.targets.base import HOST, RunningTarget, WatchedProcess
from chaoslab.targets.certs import Certs
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.health import wait_healthy
from chaoslab.targets.local import start_order
from chaoslab.targets.netns import Link
from chaoslab.targets.services import Launch, Service

if TYPE_CHECKING:
    from docker.client import DockerClient

NET = "10.233"
LABEL_RUN = "org.chaoslab.run"
LABEL_TARGET = "org.chaoslab.target"
# The chaoslab process that made it, "pid@start time": its run is live while that process runs,
# whatever run index a sweeping chaoslab reads (another state directory, a test's own).
LABEL_OWNER = "org.chaoslab.owner"
STOP_TIMEOUT = 3


def client() -> DockerClient:
    """A client of a running engine, or a PreflightError that says what to do."""
    try:
        import docker.errors
        from docker.client import DockerClient
    except ImportError as exc:
        raise PreflightError(
            "the Docker runtime needs the Docker SDK for Python",
            "pip install docker (the set-up script does)",
        ) from exc
    hint = (
        "install Docker (apt-get install docker.io) and start it (`dockerd &`, the set-up script "
        "does), or use runtime: local"
    )
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        # asked first, and closed: the SDK leaves its socket open when nothing listens
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(host.removeprefix("unix://"))
        except OSError as exc:
            raise PreflightError(f"Docker is not reachable: {host}: {exc.strerror or exc}", hint) from exc
    try:
        c = DockerClient.from_env(timeout=60)
    except docker.errors.DockerException as exc:
        raise PreflightError(f"Docker is not reachable: {exc}", hint) from exc
    try:
        c.ping()
    except docker.errors.DockerException as exc:
        c.close()
        raise PreflightError(f"Docker is not reachable: {exc}", hint) from exc
    return c


def unavailable() -> str | None:
    """Why the Docker runtime cannot run here, or None when it can (for `runtime: auto`)."""
    try:
        client().close()
    except PreflightError as exc:
        return exc.message
    return None


@contextlib.contextmanager
def reachable() -> Iterator[DockerClient | None]:
    """A client when an engine answers, None otherwise (recover and the residue check); closed
    on leaving."""
    try:
        engine = client()
    except PreflightError:
        yield None
        return
    with contextlib.closing(engine):
        yield engine


@contextlib.contextmanager
def connected() -> Iterator[DockerClient]:
    """client(), closed on leaving."""
    with contextlib.closing(client()) as engine:
        yield engine


class ContainerProcess(WatchedProcess):
    """A container's main process, by its host PID.

    An exit code above 128 (the engine's way to report a signal) is given as -signal, as
    Popen does for a child, so that the two runtimes report a kill the same way.
    """

    def __init__(self, docker: DockerClient, container_id: str, pid: int) -> None:
        super().__init__(pid, f"container {container_id[:12]}")
        self._docker = docker
        self.id = container_id

    def exit_code(self) -> int:
        status = int(self._docker.api.wait(self.id, timeout=10)["StatusCode"])
        return -(status - 128) if status > 128 else status


def free_subnet_index(docker: DockerClient) -> int:
    """N such that 10.233.N.0/24 is neither on an interface here nor in a Docker network."""
    used = run(["ip", "-o", "-4", "addr", "show"]).stdout
    for net in docker.networks.list():
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
            used += f" {pool.get('Subnet', '')}"
    for n in range(1, 255):
        if f" {NET}.{n}." not in used:
            return n
    raise PreflightError(f"no free {NET}.N.0/24 subnet left", "run `chaoslab recover` to remove stale runs")


def names(scenario: Scenario, run_id: str) -> dict[str, str]:
    return {t: f"chaoslab-{run_id}-{t}" for t in scenario.targets}


def layout(scenario: Scenario, run_id: str, net: int) -> tuple[dict[str, str], dict[str, dict[str, Link]]]:
    """Each started target's address and links on the run's network (one eth0, peers told by
    address)."""
    specs = [t for t in start_order(dict(scenario.targets)) if t.kind != "attach"]
    ips = {t.name: f"{NET}.{net}.{2 + i}" for i, t in enumerate(specs)}
    ns = names(scenario, run_id)
    gateway, bridge = f"{NET}.{net}.1", f"clb{run_id}"
    links: dict[str, dict[str, Link]] = {}
    for t in specs:
        links[t.name] = {HOST: Link("eth0", ips[t.name], gateway, bridge, None)}
    for t in specs:
        for other in t.links:
            if other in ips:
                links[t.name][other] = Link("eth0", ips[t.name], ips[other], "eth0", ns[other])
                links[other][t.name] = Link("eth0", ips[other], ips[t.name], "eth0", ns[t.name])
    return ips, links


def _launch_for(t: TargetSpec, scenario: Scenario, ips: dict[str, str], work: Path, tls: Certs) -> Launch:
    peers = {o: Service(scenario.targets[o]).peer(ips[o], tls) for o in t.links if o in ips}
    return Launch(work, tls, peers)


def _command(service: Service, launch: Launch) -> list[str] | None:
    """The container's command: a built-in's arguments (its image's ENTRYPOINT is the binary),
    a user image's `command:` (None: the image's own CMD)."""
    argv = service.argv(launch)
    if service.builtin is not None:
        return argv[1:]
    return argv or None


def plan_targets(scenario: Scenario, work_dir: Path) -> dict[str, RunningTarget]:
    """The targets as a Docker run would lay them out, with no container: for `chaoslab plan`."""
    ips, links = layout(scenario, "RUNID", 1)
    ns = names(scenario, "RUNID")
    out = {}
    for t in scenario.targets.values():
        if t.kind == "attach":
            out[t.name] = attach.plan(t)
            continue
        service = Service(t)
        cgroup = Cgroup(ns[t.name], Cgroup.paths_for(f"docker/<id of {ns[t.name]}>"))
        rt = RunningTarget(t, service, None, ips[t.name], ns[t.name], cgroup, links[t.name])
        if service.builtin is not None:
            rt.binary = service.builtin.binary()
        out[t.name] = rt
    return out


class DockerRuntime:
    name = "docker"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.tags: dict[str, str] = {}  # target -> image tag
        self._seq: dict[str, int] = {}  # target -> journal entry of its container
        self._ca: dict[str, Path | None] = {}

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError(
                "the Docker runtime needs root (namespaces, cgroups, BPF)", "run chaoslab with sudo"
            )
        netns.preflight()
        self.docker = client()
        for t in self.ctx.scenario.targets.values():
            if t.kind == "program":
                raise PreflightError(
                    f"target {t.name}: a program runs on the local runtime",
                    "use runtime: local, or build it into an image (image: or build:)",
                )
            if t.kind == "service":
                builtin = Service(t).builtin
                assert builtin is not None
                self.tags[t.name] = images.ensure(self.docker, builtin)
            elif t.kind == "image":
                self.tags[t.name] = images.ensure_user(self.docker, t)

    def start(self, stack: ExitStack) -> dict[str, RunningTarget]:
        ctx, journal, docker = self.ctx, self.ctx.journal, self.docker
        stack.callback(docker.close)  # last: every removal below uses it
        short = ctx.short_id
        running: dict[str, RunningTarget] = {}
        for t in ctx.scenario.targets.values():
            if t.kind == "attach":
                running[t.name] = attach.resolve(t, ctx, stack)
        specs = [t for t in start_order(dict(ctx.scenario.targets)) if t.kind != "attach"]
        if not specs:
            return running
        labels = {LABEL_RUN: ctx.run_id, LABEL_OWNER: f"{os.getpid()}@{proc.start_time(os.getpid())}"}
        network = f"chaoslab-{short}"
        with locks.allocating():  # two runs starting at once must not pick the same subnet
            net = free_subnet_index(docker)
            ips, links = layout(ctx.scenario, short, net)
            seq = journal.intent("docker_network", name=network)
            stack.callback(self._remove_network, network, seq)
            docker.networks.create(
                network,
                driver="bridge",
                ipam=_ipam(f"{NET}.{net}.0/24", f"{NET}.{net}.1"),
                options={"com.docker.network.bridge.name": links[next(iter(links))][HOST].peer_if},
                labels=labels,
            )
        ns = names(ctx.scenario, short)
        work = ctx.work_dir.resolve()
        tls = certs.make(work / "certs", sorted(ips.values()))

        for t in specs:
            service = Service(t)
            launch = _launch_for(t, ctx.scenario, ips, work, tls)
            name = ns[t.name]
            seq = journal.intent("container", name=name, target=t.name)
            self._seq[t.name] = seq
            stack.callback(self._remove, t.name, name, seq)
            ports = sorted({*service.ports.values(), *service.control_ports, *_health_port(service)})
            api = docker.api
            created = api.create_container(
                self.tags[t.name],
                command=_command(service, launch),
                environment=service.env(launch) or None,
                name=name,
                labels={**labels, LABEL_TARGET: t.name},
                ports=ports,
                host_config=api.create_host_config(
                    binds={str(work): {"bind": str(work), "mode": "rw"}},
                    port_bindings={p: ("127.0.0.1", None) for p in ports},
                ),
                networking_config=api.create_networking_config(
                    {network: api.create_endpoint_config(ipv4_address=ips[t.name])}
                ),
            )
            journal.update(seq, id=created["Id"])
            rt = RunningTarget(
                t, service, None, ips[t.name], name, Cgroup(name, ()), links[t.name], in_container=True
            )
            rt.ca = service.client_ca(tls)
            rt.restarter = self._restart
            rt.launch = launch
            ns_seq = journal.intent("netns", name=name)
            stack.callback(self._delete_ns, name, ns_seq)
            took = self._launch(rt, created["Id"])
            published = ", ".join(f"{p}->127.0.0.1:{h}" for p, h in self._published(created["Id"]).items())
            ctx.say(
                f"target {t.name}: {t.what} container {name} (pid {rt.pid}) at {rt.ip}, "
                f"published {published} (healthy in {took:.1f}s)"
            )
            running[t.name] = rt
        return running

    def _launch(self, rt: RunningTarget, container_id: str) -> float:
        """Start the container, name its namespace, find its cgroup, wait until healthy."""
        api = self.docker.api
        api.start(container_id)
        pid = int(api.inspect_container(container_id)["State"]["Pid"])
        if pid <= 0:
            raise TargetError(f"container {rt.netns} exited at once", f"see `docker logs {rt.netns}`")
        rt.proc = ContainerProcess(self.docker, container_id, pid)
        self.ctx.journal.update(self._seq[rt.name], pid=pid, start_time=proc.start_time(pid))
        netns.delete(rt.netns)  # a restarted container has a new namespace
        run(["ip", "netns", "attach", rt.netns, str(pid)])
        rt.cgroup = Cgroup.of_process(pid, rt.netns)
        return wait_healthy(
            f"target {rt.name}", rt.service.health, rt.ip, rt.ca, rt.alive, self._logs(container_id)
        )

    def _logs(self, container_id: str) -> Callable[[], str]:
        def read() -> str:
            import docker.errors

            try:
                return bytes(self.docker.api.logs(container_id, tail=20)).decode(errors="replace")
            except docker.errors.APIError:
                return ""

        return read

    def _published(self, container_id: str) -> dict[int, str]:
        ports = self.docker.api.inspect_container(container_id)["NetworkSettings"]["Ports"] or {}
        return {int(k.split("/")[0]): v[0]["HostPort"] for k, v in sorted(ports.items()) if v}

    def _restart(self, rt: RunningTarget) -> float:
        """The runtime's supervisor: the same container started again (same address, new PID)."""
        assert isinstance(rt.proc, ContainerProcess)
        if rt.alive():
            self.docker.api.stop(rt.proc.id, timeout=STOP_TIMEOUT)
        took = self._launch(rt, rt.proc.id)
        self.ctx.events.fire("target_restarted", target=rt)
        self.ctx.say(f"target {rt.name}: container restarted, pid {rt.pid} (healthy in {took:.1f}s)")
        return took

    def _remove(self, target: str, name: str, seq: int) -> None:
        import docker.errors

        try:
            container = self.docker.containers.get(name)
        except docker.errors.NotFound:
            self.ctx.journal.undone(seq)
            return
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=STOP_TIMEOUT)
        log = self.ctx.work_dir / f"{target}.log"
        with contextlib.suppress(docker.errors.APIError, OSError):
            log.write_bytes(container.logs())
        container.remove(force=True)
        self.ctx.journal.undone(seq)

    def _delete_ns(self, name: str, seq: int) -> None:
        netns.delete(name)
        self.ctx.journal.undone(seq)

    def _remove_network(self, name: str, seq: int) -> None:
        remove_network(self.docker, name)
        self.ctx.journal.undone(seq)


def _health_port(service: Service) -> list[int]:
    return [service.health.port] if service.health.port else []


def _ipam(subnet: str, gateway: str) -> Any:
    import docker.types

    return docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)])


def remove_network(engine: DockerClient, name: str) -> bool:
    from docker.errors import NotFound

    try:
        engine.networks.get(name).remove()
    except NotFound:
        return False
    return True


def remove_container(engine: DockerClient, name: str) -> bool:
    from docker.errors import NotFound

    try:
        engine.containers.get(name).remove(force=True)
    except NotFound:
        return False
    return True


def labelled(engine: DockerClient) -> tuple[list[Any], list[Any]]:
    """Every container (any state) and network that carries a chaoslab run label."""
    flt = {"label": LABEL_RUN}
    return engine.containers.list(all=True, filters=flt), engine.networks.list(filters=flt)


def live(labels: dict[str, str] | None, live_runs: Collection[str]) -> bool:
    """A container or network of a live run: one of `live_runs`, or its chaoslab still runs."""
    labels = labels or {}
    if labels.get(LABEL_RUN) in live_runs:
        return True
    pid, _, started = labels.get(LABEL_OWNER, "").partition("@")
    if not (pid.isdigit() and started.isdigit()):
        return False
    return proc.start_time(int(pid)) == int(started) and not proc.exited(int(pid))


def sweep(live_runs: set[str]) -> list[str]:
    """Remove containers and networks of runs that are not alive (for `chaoslab recover`)."""
    with reachable() as engine:
        return [] if engine is None else _sweep(engine, live_runs)


def _sweep(engine: DockerClient, live_runs: set[str]) -> list[str]:
    done = []
    containers, networks = labelled(engine)
    for c in containers:
        if not live(c.labels, live_runs):
            c.remove(force=True)
            done.append(f"removed container {c.name}")
    for n in networks:
        if not live(n.attrs.get("Labels"), live_runs):
            n.remove()
            done.append(f"removed Docker network {n.name}")
    return done
