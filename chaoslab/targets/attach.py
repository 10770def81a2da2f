"""Attach to something already running: chaoslab neither starts nor stops it.

A target is found by PID, by process name, by a port it listens on (in any network
namespace), or as a container (name or id, labels, compose's project and service). Zero or
several matches is an error that lists them; nothing has been applied by then.

What chaoslab needs of it is read, never changed: its network namespace (named under
/run/netns for the run, a name removed at the end; the namespace lives on with the
process), its interfaces, its cgroup and its executable. After the run it is as it was
found: still running, the same PID. A target in the host's own network namespace is
reached at 127.0.0.1 (or its `address:`), and network faults on it act on its own ports
only, never on the whole host.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from chaoslab import proc
from chaoslab.context import RunContext
from chaoslab.errors import TargetError
from chaoslab.proc import LISTEN, run, tcp_sockets
from chaoslab.scenario.model import AttachSpec, TargetSpec
from chaoslab.targets import netns
from chaoslab.targets.base import HOST, RunningTarget, WatchedProcess
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.netns import Link
from chaoslab.targets.services import Service

HOST_NETNS = ""  # RunningTarget.netns of a target in the host's own network namespace


@dataclass(frozen=True)
class Match:
    pid: int
    comm: str
    cmdline: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.comm}: {self.cmdline[:80]})"


class AttachedProcess(WatchedProcess):
    """A process chaoslab found running; its exit code belongs to its own parent."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid, f"pid {pid}")


def _matches(pids: list[int]) -> list[Match]:
    out = []
    for pid in sorted(set(pids)):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out.append(Match(pid, comm, cmdline.strip()))
    return out


def _processes() -> list[int]:
    me = {os.getpid(), os.getppid()}
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in me]


def _by_name(name: str) -> list[int]:
    out = []
    for pid in _processes():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            continue
        if name in (comm, exe):
            out.append(pid)
    return out


def _listening_inodes(pid: int, port: int) -> set[str]:
    """Socket inodes listening on `port` in the network namespace of `pid`."""
    return {inode for inode, local, state in tcp_sockets(pid) if state == LISTEN and local == port}


def _by_port(port: int) -> list[int]:
    """Processes holding a socket that listens on `port`, in any network namespace; of a
    pre-forked server, the process at the top (its workers share the socket)."""
    seen_ns: dict[int, set[str]] = {}
    holders = []
    for pid in _processes():
        try:
            ns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if ns not in seen_ns:
            seen_ns[ns] = _listening_inodes(pid, port)
        inodes = seen_ns[ns]
        if not inodes:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                holders.append(pid)
                break
    tops = set(holders)
    return [p for p in holders if _ppid(p) not in tops]


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _in_docker(a: AttachSpec) -> list[tuple[int, str]]:
    """(host PID, container name) of the running containers the selector names."""
    from chaoslab.targets import engines
    from chaoslab.targets.containers import connected, here

    engine_of = engines.resolve()
    if engine_of.remote:
        raise TargetError(
            f"attach: a container is looked up on the {engine_of}, which is remote: its processes "
            "are not this machine's, and attaching reaches a target's process here",
            "run chaoslab on the engine's host (or point DOCKER_HOST at this machine's engine), or "
            "let the run start the target there (engine:)",
        )
    with connected(engine_of) as engine:
        if a.container:
            import docker.errors

            try:
                found = [engine.containers.get(a.container)]
            except docker.errors.NotFound:
                found = []
        else:
            found = engine.containers.list(filters={"label": [f"{k}={v}" for k, v in a.labels]})
        out = []
        for c in found:
            pid = int(c.attrs.get("State", {}).get("Pid") or 0)
            if pid > 0:
                here(engine_of, str(c.id), pid, str(c.name))
                out.append((pid, str(c.name)))
        return out


def find(spec: TargetSpec) -> tuple[int, str]:
    """(PID, container name or "") of the one process the selector matches; a TargetError
    listing the matches when there are none or several."""
    a = spec.attach
    assert a is not None
    if a.in_docker:
        found = _in_docker(a)
        if len(found) == 1:
            return found[0]
        names = ", ".join(f"{n} (pid {p})" for p, n in found) or "none"
        raise TargetError(
            f"target {spec.name}: {len(found)} running containers match {a.describe()}: {names}",
            "make the selector name exactly one running container (docker ps shows them)",
        )
    if a.pid:
        pids = [a.pid] if proc.start_time(a.pid) is not None else []
    elif a.process:
        pids = _by_name(a.process)
    else:
        pids = _by_port(a.port)
    if len(pids) == 1:
        return pids[0], ""
    listed = "; ".join(m.describe() for m in _matches(pids)[:10]) or "none"
    raise TargetError(
        f"target {spec.name}: {len(pids)} processes match {a.describe()}: {listed}",
        "make the selector match exactly one process (a pid is exact)",
    )


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def in_host_netns(pid: int) -> bool:
    """Whether the process shares chaoslab's own network namespace (the host's)."""
    return _netns_inode(pid) == _netns_inode(os.getpid())


def _interfaces(ns: str) -> list[tuple[str, str]]:
    """(interface, IPv4 address) of a namespace, loopback left out."""
    out = []
    for line in run(["ip", "-n", ns, "-o", "-4", "addr", "show"]).stdout.splitlines():
        f = line.split()
        if len(f) > 3 and f[1] != "lo":
            out.append((f[1].split("@")[0], f[3].split("/")[0]))
    return out


def _reachable(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((addr, port))
        except OSError:
            return False
    return True


def resolve(spec: TargetSpec, ctx: RunContext, stack: ExitStack) -> RunningTarget:
    """Find the target and describe it for faults and probes; only a name for its network
    namespace is created (journaled, removed at the end)."""
    pid, container = find(spec)
    service = Service(spec)
    p = AttachedProcess(pid)
    cgroup = Cgroup.of_process(pid, spec.name)
    if in_host_netns(pid):
        ip = spec.address or "127.0.0.1"
        links = {HOST: Link("lo", ip, ip, "", None)}
        ns = HOST_NETNS
    else:
        ns = f"chaoslab-{ctx.short_id}-{spec.name}"
        seq = ctx.journal.intent("netns", name=ns)
        stack.callback(_forget_ns, ctx, ns, seq)
        run(["ip", "netns", "attach", ns, str(pid)])
        ifaces = _interfaces(ns)
        if spec.address:
            ip = spec.address
        else:
            ip = next((a for _, a in ifaces if _reachable(a, service.port())), "")
            if not ip:
                raise TargetError(
                    f"target {spec.name}: none of its addresses "
                    f"({', '.join(a for _, a in ifaces) or 'none'}) answers on {service.port()} from here",
                    "give address: (where this machine reaches it), or check its ports",
                )
        iface = next((i for i, a in ifaces if a == ip), ifaces[0][0] if ifaces else "eth0")
        links = {HOST: Link(iface, ip, "", "", None)}
    rt = RunningTarget(spec, service, p, ip, ns, cgroup, links, attached=True, in_container=bool(container))
    rt.ca = Path(spec.tls.ca) if spec.tls.ca else None
    how = f"container {container}, " if container else ""
    where = "the host's network namespace" if ns == HOST_NETNS else f"its own network namespace ({ns})"
    ctx.say(f"target {spec.name}: attached to {how}pid {pid} ({rt.exe.name}) in {where}, at {ip}")
    stack.callback(_check_left_as_found, ctx, rt)
    return rt


def plan(spec: TargetSpec) -> RunningTarget:
    """The target as `chaoslab plan` shows it: found, nothing named or changed."""
    pid, container = find(spec)
    host = in_host_netns(pid)
    ip = spec.address or ("127.0.0.1" if host else "<its address>")
    links = {HOST: Link("lo" if host else "<its interface>", ip, "", "", None)}
    rt = RunningTarget(
        spec,
        Service(spec),
        None,
        ip,
        HOST_NETNS if host else f"chaoslab-RUNID-{spec.name}",
        Cgroup.of_process(pid, spec.name),
        links,
        attached=True,
        in_container=bool(container),
    )
    rt.binary = Path(f"/proc/{pid}/exe")
    return rt


def _forget_ns(ctx: RunContext, ns: str, seq: int) -> None:
    netns.delete(ns)  # the name only: the namespace lives on with its process
    ctx.journal.undone(seq)


def _check_left_as_found(ctx: RunContext, rt: RunningTarget) -> None:
    if not rt.alive():
        ctx.say(f"target {rt.name}: the attached process (pid {rt.pid}) is gone")
