"""The local runtime: each target is a process in its own network namespace and cgroup.

Everything created is journaled before it is created and torn down through the run's
ExitStack, in reverse order, on every exit path.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from chaoslab import proc
from chaoslab.context import RunContext
from chaoslab.errors import PreflightError, TargetError
from chaoslab.scenario.model import Scenario, TargetSpec
from chaoslab.targets import certs, cgroup, netns
from chaoslab.targets.base import HOST, RunningTarget
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.health import wait_healthy
from chaoslab.targets.services import SERVICES, Launch

START_TIMEOUT = 30.0
Links = dict[str, dict[str, netns.Link]]


def start_order(targets: dict[str, TargetSpec]) -> list[TargetSpec]:
    """Upstreams before the targets in front of them."""
    done: list[TargetSpec] = []
    pending = dict(targets)
    while pending:
        ready = [t for t in pending.values() if t.upstream is None or t.upstream in {d.name for d in done}]
        if not ready:
            raise TargetError(f"targets form a cycle of upstreams: {', '.join(pending)}")
        for t in ready:
            done.append(pending.pop(t.name))
    return done


def layout(scenario: Scenario, run: str, net: int) -> tuple[list[TargetSpec], dict[str, str], Links]:
    """Start order, namespace names and links of the run's targets (nothing is created)."""
    specs = start_order(dict(scenario.targets))
    names = {t.name: f"chaoslab-{run}-{t.name}" for t in specs}
    links: Links = {t.name: {} for t in specs}
    for i, t in enumerate(specs):
        links[t.name][HOST] = netns.host_link(names[t.name], f"clh{run}{i}", net, i)
    for k, t in enumerate(t for t in specs if t.upstream):
        assert t.upstream is not None
        a, b = netns.peer_link(names[t.name], names[t.upstream], f"clp{run}{k}", net, k)
        links[t.name][t.upstream], links[t.upstream][t.name] = a, b
    return specs, names, links


def plan_targets(scenario: Scenario, work_dir: Path) -> dict[str, RunningTarget]:
    """The targets as a run would lay them out, with no process: for `chaoslab plan`."""
    specs, names, links = layout(scenario, "RUNID", 1)
    tls = certs.Certs(*(work_dir / "certs" / n for n in ("ca.pem", "tls.pem", "tls.key")))
    out = {}
    for t in specs:
        service = SERVICES[t.service]
        upstream = None
        if t.upstream:
            up = links[t.name][t.upstream]
            upstream = (up.peer_ip, dict(SERVICES[scenario.targets[t.upstream].service].ports))
        argv = service.argv(Launch(t, work_dir, tls, upstream))
        cgroup = Cgroup(names[t.name], Cgroup.paths_for(names[t.name]))
        out[t.name] = RunningTarget(
            t, service, None, links[t.name][HOST].local_ip, names[t.name], cgroup, links[t.name]
        )
        out[t.name].binary = Path(argv[0])
    return out


class LocalRuntime:
    name = "local"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._launch: dict[str, tuple[list[str], int]] = {}  # target -> argv, journal entry

    def _restart(self, rt: RunningTarget) -> float:
        """The runtime's supervisor: same command, namespace and cgroup; journaled first."""
        argv, seq = self._launch[rt.name]
        if isinstance(rt.proc, subprocess.Popen) and rt.alive():
            proc.stop(rt.proc)
        p = proc.start(netns.enter_argv(rt.netns) + argv, self.ctx.work_dir / f"{rt.name}.log")
        self.ctx.journal.update(seq, pid=p.pid, start_time=proc.start_time(p.pid))
        rt.cgroup.add(p.pid)
        rt.proc = p
        took = wait_healthy(f"{rt.url}/healthz", self.ca, START_TIMEOUT, rt.alive)
        self.ctx.events.fire("target_restarted", target=rt)
        self.ctx.say(f"target {rt.name}: restarted as pid {p.pid} (healthy in {took:.1f}s)")
        return took

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError(
                "the local runtime needs root (namespaces, cgroups, BPF)", "run chaoslab with sudo"
            )
        netns.preflight()
        Cgroup.paths_for("probe")  # detects the cgroup layout or raises

    def start(self, stack: ExitStack) -> dict[str, RunningTarget]:
        ctx, journal = self.ctx, self.ctx.journal
        self.ca = ctx.work_dir / "certs" / "ca.pem"
        specs, names, links = layout(ctx.scenario, ctx.short_id, netns.free_subnet_index())
        for t in specs:
            ns = names[t.name]
            seq = journal.intent("netns", name=ns)
            stack.callback(self._delete_ns, ns, seq)
            netns.create(ns)
            netns.create_host_link(ns, links[t.name][HOST])
        for t in specs:
            if t.upstream:
                netns.create_peer_link(names[t.name], links[t.name][t.upstream])
        tls = certs.make(
            ctx.work_dir / "certs", sorted({lk.local_ip for d in links.values() for lk in d.values()})
        )
        self._enable_controllers(stack)

        running: dict[str, RunningTarget] = {}
        for t in specs:
            service = SERVICES[t.service]
            upstream = None
            if t.upstream:
                up = links[t.name][t.upstream]
                upstream = (up.peer_ip, dict(SERVICES[ctx.scenario.targets[t.upstream].service].ports))
            argv = service.argv(Launch(t, ctx.work_dir, tls, upstream))
            cg_name = names[t.name]
            cg_seq = journal.intent("cgroup", name=cg_name, dirs=[str(d) for d in Cgroup.paths_for(cg_name)])
            cgroup = Cgroup.create(cg_name)
            stack.callback(self._remove_cgroup, cgroup, cg_seq)
            seq = journal.intent("process", target=t.name, argv=argv)
            p = proc.start(netns.enter_argv(names[t.name]) + argv, ctx.work_dir / f"{t.name}.log")
            journal.update(seq, pid=p.pid, start_time=proc.start_time(p.pid))
            cgroup.add(p.pid)
            rt = RunningTarget(
                t, service, p, links[t.name][HOST].local_ip, names[t.name], cgroup, links[t.name]
            )
            rt.restarter = self._restart
            self._launch[t.name] = (argv, seq)
            stack.callback(self._stop, rt, seq)
            took = wait_healthy(f"{rt.url}/healthz", tls.ca, START_TIMEOUT, rt.alive)
            ctx.say(f"target {t.name}: {t.service} pid {p.pid} at {rt.url} (healthy in {took:.1f}s)")
            running[t.name] = rt
        return running

    def _enable_controllers(self, stack: ExitStack) -> None:
        """cgroup v2: make the controllers chaoslab needs available to the targets' cgroups.

        Journaled first and restored last (after the cgroups are gone), so the host is left
        as it was found; `recover` restores it after a killed run.
        """
        if cgroup.version() != 2:
            return
        missing = cgroup.missing_controllers()
        if not missing:
            return
        seq = self.ctx.journal.intent("cgroup_controllers", parent=str(cgroup.ROOT), enabled=missing)
        stack.callback(self._restore_controllers, missing, seq)
        cgroup.set_subtree_control(cgroup.ROOT, missing, True)
        self.ctx.say(
            f"cgroup v2: enabled {', '.join(missing)} for child cgroups of {cgroup.ROOT} (restored after)"
        )

    def _restore_controllers(self, enabled: list[str], seq: int) -> None:
        self.ctx.say(restore_controllers(cgroup.ROOT, enabled))
        self.ctx.journal.undone(seq)

    def _stop(self, rt: RunningTarget, seq: int) -> None:
        code = proc.stop(rt.proc) if isinstance(rt.proc, subprocess.Popen) else None
        if code not in (0, -15, None):
            self.ctx.say(f"target {rt.name} exited with code {code}")
        self.ctx.journal.undone(seq)

    def _remove_cgroup(self, cgroup: Cgroup, seq: int) -> None:
        cgroup.remove()
        self.ctx.journal.undone(seq)

    def _delete_ns(self, ns: str, seq: int) -> None:
        netns.delete(ns)
        self.ctx.journal.undone(seq)


def restore_controllers(parent: Path, enabled: list[str]) -> str:
    """Disable what a run enabled in a v2 parent's subtree_control, unless another run's
    cgroups (chaoslab-*) are still there and may use it."""
    others = cgroup.children(parent)
    if others:
        return (
            f"cgroup v2: left {', '.join(enabled)} enabled in {parent}: other chaoslab cgroups still use it "
            f"({', '.join(d.name for d in others[:3])})"
        )
    cgroup.set_subtree_control(parent, enabled, False)
    return f"cgroup v2: disabled {', '.join(enabled)} again in {parent}"
