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
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chaoslab import journal, proc
from chaoslab.context import RunContext
from chaoslab.errors import PreflightError, TargetError
from chaoslab.proc import run
from chaoslab.safety import locks
from chaoslab.scenario.model import Scenario, TargetSpec
from chaoslab.targets import attach, certs, cgroup, engines, hosthelper, images, netns
from chaoslab.targets.base import HOST, RunningTarget, WatchedProcess
from chaoslab.targets.certs import Certs
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.engines import Engine
from chaoslab.targets.health import wait_healthy
from chaoslab.targets.hosthelper import HostHelper
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
# The machine whose chaoslab made it (/etc/machine-id): another machine's owner PID means
# nothing here; on this one, a PID and start time of an earlier boot are a dead run's.
LABEL_HOST = "org.chaoslab.host"
STOP_TIMEOUT = 3
POLL_TIMEOUT = 5  # seconds for a remote engine to say a container's state


def client(engine: Engine | None = None) -> DockerClient:
    """A client of a running engine (default: DOCKER_HOST, then the local socket), or a
    PreflightError that names it and says what to do."""
    return engines.client(engine or engines.resolve())


def unavailable(engine: Engine | None = None) -> str | None:
    """Why the Docker runtime cannot run here, or None when it can (for `runtime: auto`)."""
    try:
        client(engine).close()
    except PreflightError as exc:
        return exc.message
    return None


@contextlib.contextmanager
def reachable(engine: Engine | None = None) -> Iterator[DockerClient | None]:
    """A client when an engine answers, None otherwise (recover and the residue check); closed
    on leaving."""
    with engines.reachable(engine or engines.resolve()) as c:
        yield c


@contextlib.contextmanager
def connected(engine: Engine | None = None) -> Iterator[DockerClient]:
    """client(), closed on leaving."""
    with contextlib.closing(client(engine)) as c:
        yield c


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


class EngineProcess:
    """A container's main process on a remote engine, known only through the engine's API
    (its PID is the engine host's, and means nothing here). Asked at most every POLL_EVERY."""

    POLL_EVERY = 0.5

    def __init__(self, docker: DockerClient, container_id: str, pid: int) -> None:
        self._docker = docker
        self.id = container_id
        self._pid = pid
        self.returncode: int | None = None
        self._asked = 0.0

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        import docker.errors

        now = time.monotonic()
        if self.returncode is not None or now - self._asked < self.POLL_EVERY:
            return self.returncode
        self._asked = now
        try:
            state = self._docker.api.inspect_container(self.id)["State"]
        except docker.errors.NotFound:
            self.returncode = -1
            return self.returncode
        except docker.errors.DockerException:
            return None  # the engine did not answer this time: not taken for an exit
        if not state.get("Running") or int(state.get("Pid") or 0) != self._pid:
            status = int(state.get("ExitCode") or 0)
            self.returncode = -(status - 128) if status > 128 else status
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self._docker.api.kill(self.id, signal=int(sig))

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"container {self.id[:12]}", timeout or 0)
            time.sleep(0.02)
            self._asked = 0.0  # waiting: asked each time
        return code


class EngineContainer:
    """A container on a remote engine, acted on through the engine's API: what a fault can do
    to it without a helper on the engine's host (the engine's pause, its CPU limit). Made again
    from a journal record (`of_record`) by recover and the dead man's switch. An engine that
    fails a call is a TargetError naming it (a container gone is the SDK's NotFound)."""

    def __init__(self, engine: Engine, docker: DockerClient, container_id: str, name: str) -> None:
        self.engine = engine
        self.docker = docker
        self.id = container_id
        self.name = name

    @property
    def record(self) -> dict[str, object]:
        return {
            "engine": self.engine.url,
            "engine_name": self.engine.name,
            "container": self.id,
            "container_name": self.name,
        }

    @classmethod
    @contextlib.contextmanager
    def of_record(cls, record: Mapping[str, object]) -> Iterator[EngineContainer]:
        """The container a journal record names; a TargetError when its engine does not
        answer (the record stays pending: a later recover tries again)."""
        engine = engines.reopen(str(record.get("engine", "")), str(record.get("engine_name") or ""))
        with reachable(engine) as docker:
            if docker is None:
                raise TargetError(
                    f"container {record.get('container_name')}: the {engine} is not reachable",
                    "start it, or reach it from here, then run `chaoslab recover` again",
                )
            yield cls(engine, docker, str(record.get("container")), str(record.get("container_name")))

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        import docker.errors

        try:
            return fn(*args, **kw)
        except docker.errors.NotFound:
            raise
        except Exception as exc:  # the SDK's errors, requests' (a lost connection) alike
            raise TargetError(
                f"container {self.name}: the {self.engine} failed to {what}: {engines.why(exc)}",
                "see the engine's log; `chaoslab recover` undoes what is left once it answers",
            ) from exc

    def state(self) -> dict[str, Any]:
        return dict(self._call("say its state", self.docker.api.inspect_container, self.id)["State"])

    def paused(self) -> bool:
        return bool(self.state().get("Paused"))

    def pause(self, paused: bool, timeout: float) -> None:
        """Pause (or unpause) it, and wait until the engine says it is."""
        api = self.docker.api
        self._call("pause it" if paused else "unpause it", api.pause if paused else api.unpause, self.id)
        deadline = time.monotonic() + timeout
        while self.paused() != paused:
            if time.monotonic() > deadline:
                raise TargetError(
                    f"container {self.name} on the {self.engine} is not {'paused' if paused else 'running'} "
                    f"{timeout:g}s after the engine was asked",
                    "see the engine's log",
                )
            time.sleep(0.02)

    def _cpu_stats(self) -> dict[str, Any]:
        stats = self._call("give its stats", self.docker.api.stats, self.id, stream=False, one_shot=True)
        return dict(stats.get("cpu_stats") or {})

    def cpu_ns(self) -> int:
        """The CPU time its processes used so far, as the engine counts it (its cgroup's)."""
        return int((self._cpu_stats().get("cpu_usage") or {}).get("total_usage") or 0)

    def throttling(self) -> dict[str, int]:
        """Its cgroup's CFS counters, as the engine reads them: periods, throttled_periods,
        throttled_time (ns)."""
        data = self._cpu_stats().get("throttling_data") or {}
        return {k: int(data.get(k) or 0) for k in ("periods", "throttled_periods", "throttled_time")}

    def cpu_limit(self) -> tuple[int, int, int]:
        """Its CPU limit as the engine holds it: (CpuQuota, CpuPeriod, NanoCpus), 0 for unset."""
        hc = self._call("say its limits", self.docker.api.inspect_container, self.id)["HostConfig"]
        return int(hc.get("CpuQuota") or 0), int(hc.get("CpuPeriod") or 0), int(hc.get("NanoCpus") or 0)

    def set_cpu_limit(self, quota_us: int, period_us: int) -> None:
        """`docker update --cpu-quota --cpu-period`: the engine writes its cgroup's CFS bandwidth
        (a quota of -1: no limit)."""
        update = self.docker.api.update_container
        self._call("change its CPU limit", update, self.id, cpu_quota=quota_us, cpu_period=period_us)


@contextlib.contextmanager
def engine_errors(engine: Engine, what: str) -> Iterator[None]:
    """An engine's failure (an API error, a lost connection) as a TargetError naming it."""
    import docker.errors

    try:
        yield
    except docker.errors.NotFound:
        raise
    except (docker.errors.DockerException, OSError, ValueError) as exc:
        hint = "see the engine's log"
        if "cannot assign requested address" in str(exc):
            hint = f"{engine.host or 'the engine host'} is not an address of the engine's host: give its own"
        raise TargetError(f"the {engine} failed to {what}: {engines.why(exc)}", hint) from exc
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("requests", "urllib3", "paramiko"):
            raise
        raise TargetError(
            f"the {engine} failed to {what}: {engines.why(exc)}", "see the engine's log"
        ) from exc


def here(engine: Engine, container_id: str, pid: int, name: str) -> None:
    """Check that a container's PID, as its engine gives it, is that container's process on this
    machine (its cgroup names the container): an engine behind a forwarded socket, or in a VM,
    gives PIDs of another kernel, which faults and probes must never take for this one's."""
    if not cgroup.holds(container_id, pid):
        raise TargetError(
            f"container {name}: the {engine} says its process is pid {pid}, which is not it on this "
            "machine: the engine runs its containers on another kernel (a forwarded socket, a VM)",
            "give the engine as remote (tcp://HOST:2375 or ssh://user@HOST, or a context with such a host)",
        )


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


def layout(
    scenario: Scenario, run_id: str, net: int, remote: bool = False
) -> tuple[dict[str, str], dict[str, dict[str, Link]]]:
    """Each started target's address and links on the run's network (one eth0, peers told by
    address). On a remote engine the host's side is also every address off the run's network
    (`Link.beyond`): the load reaches a published port from wherever it runs, its source kept."""
    specs = [t for t in start_order(dict(scenario.targets)) if t.kind != "attach"]
    ips = {t.name: f"{NET}.{net}.{2 + i}" for i, t in enumerate(specs)}
    ns = names(scenario, run_id)
    gateway, bridge = f"{NET}.{net}.1", f"clb{run_id}"
    links: dict[str, dict[str, Link]] = {}
    for t in specs:
        beyond = f"{NET}.{net}.0/24" if remote else ""
        links[t.name] = {HOST: Link("eth0", ips[t.name], gateway, bridge, None, beyond)}
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
    engine = planned_engine(scenario)
    ips, links = layout(scenario, "RUNID", 1, engine.remote)
    ns = names(scenario, "RUNID")
    out = {}
    for t in scenario.targets.values():
        if t.kind == "attach":
            out[t.name] = attach.plan(t)
            continue
        service = Service(t)
        cgroup = Cgroup(ns[t.name], Cgroup.paths_for(f"docker/<id of {ns[t.name]}>"))
        rt = RunningTarget(t, service, None, ips[t.name], ns[t.name], cgroup, links[t.name])
        if engine.remote:
            rt.ip, rt.cgroup, rt.remote = engine.host or "<engine host>", Cgroup(ns[t.name], ()), str(engine)
            # planned: named only, its API never called
            rt.container = EngineContainer(
                engine, cast("DockerClient", None), f"<id of {ns[t.name]}>", ns[t.name]
            )
        elif service.builtin is not None:
            rt.binary = service.builtin.binary()
        out[t.name] = rt
    return out


def planned_engine(scenario: Scenario) -> Engine:
    """The engine a run of the scenario would use, read without connecting (a context that
    cannot be read is taken as named: the run says what is wrong with it)."""
    try:
        return engines.resolve(scenario.engine)
    except PreflightError:
        return Engine(scenario.engine, scenario.engine)


class DockerRuntime:
    name = "docker"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.tags: dict[str, str] = {}  # target -> image tag
        self._seq: dict[str, int] = {}  # target -> journal entry of its container
        self._ca: dict[str, Path | None] = {}
        self.engine = Engine("", engines.LOCAL)
        self.address = ""  # a remote engine's host, as an address (where its ports are published)

    @property
    def remote(self) -> bool:
        return self.engine.remote

    @property
    def where(self) -> str:
        return str(self.engine) if self.remote else ""

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError(
                "the Docker runtime needs root (namespaces, cgroups, BPF)", "run chaoslab with sudo"
            )
        netns.preflight()
        self.engine = engines.resolve(self.ctx.scenario.engine)
        if self.remote:
            self._refuse_on_remote()
            self.address = _address(self.engine)
        self.docker = client(self.engine)
        # its containers' state is asked on every tick of the run: on a client of its own, with a
        # short timeout, so an engine that stops answering cannot hold the run loop
        self.poller = engines.client(self.engine, timeout=POLL_TIMEOUT) if self.remote else self.docker
        if self.remote:
            self.ctx.say(f"targets on the remote {self.engine}, published on {self.address}")
        engines.remember(self.engine)  # before anything is put on it
        for t in self.ctx.scenario.targets.values():
            if t.kind == "program":
                raise PreflightError(
                    f"target {t.name}: a program runs on the local runtime",
                    "use runtime: local, or build it into an image (image: or build:)",
                )
            try:
                if t.kind == "service":
                    builtin = Service(t).builtin
                    assert builtin is not None
                    self.tags[t.name] = images.ensure(self.docker, builtin)
                elif t.kind == "image":
                    self.tags[t.name] = images.ensure_user(self.docker, t)
            except PreflightError as exc:
                if not self.remote:
                    raise
                raise PreflightError(f"on the {self.engine}: {exc.message}", exc.hint) from exc

    def _refuse_on_remote(self) -> None:
        """A fault kind that acts from this machine alone (neither through the engine's API nor
        from chaoslab's helper on its host) cannot reach a remote engine's containers."""
        from chaoslab.faults import FAULT_KINDS

        s = self.ctx.scenario
        on_engine = {n for n, t in s.targets.items() if t.kind != "attach"}
        for phase in s.phases:
            for f in phase.faults:
                cls = FAULT_KINDS[f.kind]
                if f.target in on_engine and not (cls.through_engine or cls.through_helper):
                    there = sorted(k for k, c in FAULT_KINDS.items() if c.through_engine or c.through_helper)
                    raise PreflightError(
                        f"{f.path}: a {f.kind} fault at {f.target}, which runs on the remote {self.engine}: "
                        "this kind acts from the run's own machine alone",
                        f"run it on a local engine (leave engine: out); at a remote engine's targets a run "
                        f"takes {', '.join(there)}",
                    )

    def _needs_helper(self) -> bool:
        """A remote engine's targets have their probes, and the faults its API does not do,
        from chaoslab's helper on its host."""
        return self.remote and any(t.kind != "attach" for t in self.ctx.scenario.targets.values())

    def _start_helper(self, stack: ExitStack, labels: dict[str, str], where: dict[str, str]) -> HostHelper:
        """chaoslab's helper on the remote engine's host, for the faults and probes there: journaled like a
        target's container; at the end its stream closes and it exits (its container goes)."""
        name = f"chaoslab-{self.ctx.short_id}-{hosthelper.ROLE}"
        helper = hosthelper.HostHelper(
            self.engine, self.docker, name, self.ctx.work_dir / f"{hosthelper.ROLE}.log", self.ctx.say
        )
        with engine_errors(self.engine, "build chaoslab's helper image"):
            try:
                helper.image = hosthelper.ensure_image(self.docker)
            except PreflightError as exc:
                raise PreflightError(
                    f"on the {self.engine}: chaoslab's helper: {exc.message}", exc.hint
                ) from exc
        seq = self.ctx.journal.intent("container", name=name, target=hosthelper.ROLE, **where)
        stack.callback(self._stop_helper, helper, seq)
        with engine_errors(self.engine, f"start chaoslab's helper {name}"):
            helper.start({**labels, LABEL_TARGET: hosthelper.ROLE}, self.ctx.scenario.switch.within)
        self.ctx.journal.update(seq, id=helper.id)
        self.ctx.say(
            f"chaoslab's helper on the {self.engine}: container {name}, for the faults and probes there "
            f"(its clock {helper.offset * 1000:+.1f} ms from this one's)"
        )
        return helper

    def _stop_helper(self, helper: HostHelper, seq: int) -> None:
        """The stream closes and the helper exits once its watchdog is done (the engine removes
        it); a helper still there after that is stopped. An engine that does not answer keeps
        the entry pending, for `recover`."""
        import docker.errors

        helper.close()
        deadline = time.monotonic() + hosthelper.STOP_TIMEOUT
        try:
            with engine_errors(self.engine, f"remove chaoslab's helper {helper.name}"):
                while time.monotonic() < deadline:
                    try:
                        self.docker.api.inspect_container(helper.name)
                    except docker.errors.NotFound:
                        break
                    time.sleep(0.1)
                else:
                    hosthelper.stop(self.docker, helper.name, self.engine)
        except TargetError as exc:
            self.ctx.say(f"{exc.message}: left for `chaoslab recover`")
            return
        self.ctx.journal.undone(seq)

    def start(self, stack: ExitStack) -> dict[str, RunningTarget]:
        ctx, journal, docker = self.ctx, self.ctx.journal, self.docker
        stack.callback(docker.close)  # last: every removal below uses it
        if self.poller is not docker:
            stack.callback(self.poller.close)
        short = ctx.short_id
        running: dict[str, RunningTarget] = {}
        for t in ctx.scenario.targets.values():
            if t.kind == "attach":
                running[t.name] = attach.resolve(t, ctx, stack)
        specs = [t for t in start_order(dict(ctx.scenario.targets)) if t.kind != "attach"]
        if not specs:
            return running
        labels = {
            LABEL_RUN: ctx.run_id,
            LABEL_OWNER: f"{os.getpid()}@{proc.start_time(os.getpid())}",
            LABEL_HOST: machine_id(),
        }
        network = f"chaoslab-{short}"
        where = {"engine": self.engine.url, "engine_name": self.engine.name} if self.remote else {}
        with locks.allocating(), engine_errors(self.engine, f"create network {network}"):
            # two runs starting at once must not pick the same subnet
            net = free_subnet_index(docker)
            ips, links = layout(ctx.scenario, short, net, self.remote)
            seq = journal.intent("docker_network", name=network, **where)
            stack.callback(self._remove_network, network, seq)
            # its bridge by the name the links give it (a network fault shapes the host's end)
            options = {"com.docker.network.bridge.name": links[next(iter(links))][HOST].peer_if}
            docker.networks.create(
                network,
                driver="bridge",
                ipam=_ipam(f"{NET}.{net}.0/24", f"{NET}.{net}.1"),
                options=options,
                labels=labels,
            )
        ns = names(ctx.scenario, short)
        work = ctx.work_dir.resolve()
        tls = certs.make(work / "certs", sorted({*ips.values(), *([self.address] if self.remote else [])}))

        for t in specs:
            service = Service(t)
            launch = _launch_for(t, ctx.scenario, ips, work, tls)
            name = ns[t.name]
            seq = journal.intent("container", name=name, target=t.name, **where)
            self._seq[t.name] = seq
            stack.callback(self._remove, t.name, name, seq)
            ports = sorted({*service.ports.values(), *service.control_ports, *_health_port(service)})
            api = docker.api
            create = engine_errors(self.engine, f"create container {name}")
            # a local engine's containers see the work directory itself; a remote one's are given
            # a copy of it at each start, and what they write there is copied back at the end
            binds = {} if self.remote else {str(work): {"bind": str(work), "mode": "rw"}}
            # a remote engine's ports on the address chaoslab reaches its host at, not on all of them
            on = self.address if self.remote else "127.0.0.1"
            with create:
                created = api.create_container(
                    self.tags[t.name],
                    command=_command(service, launch),
                    environment=service.env(launch) or None,
                    name=name,
                    labels={**labels, LABEL_TARGET: t.name},
                    ports=ports,
                    host_config=api.create_host_config(
                        binds=binds, port_bindings={p: (on, None) for p in ports}
                    ),
                    networking_config=api.create_networking_config(
                        {network: api.create_endpoint_config(ipv4_address=ips[t.name])}
                    ),
                )
            journal.update(seq, id=created["Id"])
            ip = self.address if self.remote else ips[t.name]
            rt = RunningTarget(t, service, None, ip, name, Cgroup(name, ()), links[t.name], in_container=True)
            rt.remote = str(self.engine) if self.remote else ""
            rt.ca = service.client_ca(tls)
            rt.restarter = self._restart
            rt.launch = launch
            if not self.remote:
                ns_seq = journal.intent("netns", name=name)
                stack.callback(self._delete_ns, name, ns_seq)
            took = self._launch(rt, created["Id"])
            published = self._published(created["Id"])
            rt.published = {p: int(h) for p, h in published.items()} if self.remote else {}
            ctx.say(
                f"target {t.name}: {t.what} container {name} (pid {rt.pid}"
                + (f" on {self.engine.host}" if self.remote else "")
                + f") at {ips[t.name]}, published "
                + ", ".join(
                    f"{p}->{on if not self.remote else self.address}:{h}" for p, h in published.items()
                )
                + f" (healthy in {took:.1f}s)"
            )
            running[t.name] = rt
        if self._needs_helper():
            helper = self._start_helper(stack, labels, where)
            far = [rt for rt in running.values() if rt.remote]
            for rt in far:
                rt.helper = helper
            helper.call("targets", hosthelper.READY_TIMEOUT, targets=[hosthelper.described(rt) for rt in far])
        return running

    def _launch(self, rt: RunningTarget, container_id: str) -> float:
        """Start the container, name its namespace, find its cgroup, wait until healthy."""
        with engine_errors(self.engine, f"start container {rt.netns}"):
            return self._start(rt, container_id)

    def _start(self, rt: RunningTarget, container_id: str) -> float:
        api = self.docker.api
        if self.remote:
            _put_files(api, container_id, _given(self.ctx.work_dir.resolve(), self.ctx.scenario.targets))
        api.start(container_id)
        pid = int(api.inspect_container(container_id)["State"]["Pid"])
        if pid <= 0:
            raise TargetError(
                f"container {rt.netns} exited at once" + (f" on the {self.engine}" if self.remote else ""),
                f"see `docker logs {rt.netns}`",
            )
        if self.remote:
            rt.proc = EngineProcess(self.poller, container_id, pid)
            rt.container = EngineContainer(self.engine, self.docker, container_id, rt.netns)
            self.ctx.journal.update(self._seq[rt.name], remote_pid=pid)
            rt.published = {p: int(h) for p, h in self._published(container_id).items()}
            if rt.helper is not None:  # restarted: the helper names its new network namespace
                rt.helper.call("targets", hosthelper.READY_TIMEOUT, targets=[hosthelper.described(rt)])
        else:
            here(self.engine, container_id, pid, rt.netns)
            rt.proc = ContainerProcess(self.docker, container_id, pid)
            self.ctx.journal.update(self._seq[rt.name], pid=pid, start_time=proc.start_time(pid))
            netns.delete(rt.netns)  # a restarted container has a new namespace
            run(["ip", "netns", "attach", rt.netns, str(pid)])
            rt.cgroup = Cgroup.of_process(pid, rt.netns)
        health = rt.service.health
        return wait_healthy(
            f"target {rt.name}",
            health,
            rt.ip,
            rt.ca,
            rt.alive,
            self._logs(container_id),
            rt.reach(health.port) if health.port else 0,
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
        assert isinstance(rt.proc, ContainerProcess | EngineProcess)
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
        if self.remote:
            with contextlib.suppress(docker.errors.APIError, OSError, tarfile.TarError):
                _take_files(container, self.ctx.work_dir.resolve())
        container.remove(force=True)
        self.ctx.journal.undone(seq)

    def _delete_ns(self, name: str, seq: int) -> None:
        netns.delete(name)
        self.ctx.journal.undone(seq)

    def _remove_network(self, name: str, seq: int) -> None:
        remove_network(self.docker, name)
        self.ctx.journal.undone(seq)


def _address(engine: Engine) -> str:
    """The address of a remote engine's host (where its published ports are reached)."""
    host = engine.host
    if not host:
        raise PreflightError(
            f"the {engine} names no host to reach its containers at",
            "give tcp://HOST:PORT or ssh://user@HOST",
        )
    try:
        # IPv4: the health checks and the load's URLs take the address as it is
        return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except OSError as exc:
        raise PreflightError(
            f"the {engine}: its host {host} cannot be resolved: {exc.strerror or exc}",
            "check the name, or give its address",
        ) from None


def _given(work: Path, targets: Collection[str]) -> list[Path]:
    """What a remote engine's container is given of the work directory at each of its starts:
    the run's certificates and the files written for its targets (`<target>-...`: configs,
    bootstraps, xDS resources), as they are then."""
    files = [p for p in (work / "certs").rglob("*") if p.is_file()]
    files += [p for t in targets for p in work.glob(f"{t}-*") if p.is_file()]
    return sorted(set(files))


def _put_files(api: Any, container_id: str, files: list[Path]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in files:
            with contextlib.suppress(OSError):
                tar.add(f, arcname=str(f).lstrip("/"), recursive=False)
    if not api.put_archive(container_id, "/", buf.getvalue()):
        raise TargetError(
            f"container {container_id[:12]}: the work directory's files could not be given to it",
            "see the engine's log",
        )


def _take_files(container: Any, work: Path) -> None:
    """Copy back what a remote container wrote in the work directory (an access log, events)
    that is not here: files only, never over one of ours. Spooled through a temporary file and
    copied in chunks: a long run's access log is not held in memory."""
    stream, _ = container.get_archive(str(work))
    with tempfile.TemporaryFile() as spool:
        for chunk in stream:
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool) as tar:
            for m in tar:
                rel = Path(m.name).relative_to(work.name) if Path(m.name).parts[0] == work.name else None
                if not m.isfile() or rel is None or ".." in rel.parts or (work / rel).exists():
                    continue
                src = tar.extractfile(m)
                if src is not None:
                    (work / rel).parent.mkdir(parents=True, exist_ok=True)
                    with src, (work / rel).open("wb") as out:
                        shutil.copyfileobj(src, out)


def machine_id() -> str:
    """This machine, as systemd and D-Bus name it: labels say which machine's chaoslab made them."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            if found := Path(path).read_text().strip():
                return found
    return ""


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
    if labels.get(LABEL_HOST, machine_id()) != machine_id():
        return True  # another machine's run: its own chaoslab recover judges it
    pid, _, started = labels.get(LABEL_OWNER, "").partition("@")
    if not (pid.isdigit() and started.isdigit()):
        return False
    return proc.start_time(int(pid)) == int(started) and not proc.exited(int(pid))


def sweep(live_runs: set[str]) -> list[str]:
    """Remove containers and networks of runs that are not alive (for `chaoslab recover`), on
    the default engine and every engine a run here used. A used engine found holding nothing of
    chaoslab's is struck off the list."""
    done = []
    for i, where in enumerate(engines.every()):
        on = f" on the {where}" if i else ""
        with reachable(where) as engine:
            if engine is None:
                if i:
                    done.append(f"the {where}, used by an earlier run, is not reachable: not swept")
                continue
            done += [f"{line}{on}" for line in _sweep(engine, live_runs)]
            if i and labelled(engine) == ([], []):
                engines.forget(where.url, busy=lambda: bool(journal.live_runs()))
    return done


def _sweep(engine: DockerClient, live_runs: set[str]) -> list[str]:
    done = []
    containers, networks = labelled(engine)
    for c in containers:
        if not live(c.labels, live_runs):
            if (c.labels or {}).get(LABEL_TARGET) == hosthelper.ROLE:  # stopped: it undoes what it holds
                done += hosthelper.stop(engine, c.name, Engine("", "a Docker engine"))
                continue
            c.remove(force=True)
            done.append(f"removed container {c.name}")
    for n in networks:
        if not live(n.attrs.get("Labels"), live_runs):
            n.remove()
            done.append(f"removed Docker network {n.name}")
    return done
