"""The local runtime: each target is a process in its own network namespace and cgroup.

Built-ins and programs run the same way: their command line, environment and config files
come from their Service (placeholders expanded for this runtime: a linked target's address
is the far end of the veth pair between the two namespaces). Attached targets are found,
not started (chaoslab/targets/attach.py).

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
from chaoslab.safety import locks
from chaoslab.scenario.model import Scenario, TargetSpec
from chaoslab.targets import attach, certs, cgroup, netns
from chaoslab.targets.base import HOST, RunningTarget
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.health import wait_healthy
from chaoslab.targets.services import Launch, Service

Links = dict[str, dict[str, netns.Link]]


def start_order(targets: dict[str, TargetSpec]) -> list[TargetSpec]:
    """The targets a target links to start before it (validation refuses cycles)."""
    done: list[TargetSpec] = []
    pending = dict(targets)
    while pending:
        ready = [t for t in pending.values() if all(d not in pending for d in t.depends())]
        if not ready:
            raise TargetError(f"targets depend on each other in a cycle: {', '.join(pending)}")
        for t in ready:
            done.append(pending.pop(t.name))
    return done


def layout(scenario: Scenario, run: str, net: int) -> tuple[list[TargetSpec], dict[str, str], Links]:
    """Start order, namespace names and links of the targets chaoslab starts (nothing is created)."""
    specs = [t for t in start_order(dict(scenario.targets)) if t.kind != "attach"]
    names = {t.name: f"chaoslab-{run}-{t.name}" for t in specs}
    links: Links = {t.name: {} for t in specs}
    for i, t in enumerate(specs):
        links[t.name][HOST] = netns.host_link(names[t.name], f"clh{run}{i}", net, i)
    pairs = [(t.name, other) for t in specs for other in t.links if other in names]
    for k, (a_name, b_name) in enumerate(pairs):
        a, b = netns.peer_link(names[a_name], names[b_name], f"clp{run}{k}", net, k)
        links[a_name][b_name], links[b_name][a_name] = a, b
    return specs, names, links


def launch_for(t: TargetSpec, scenario: Scenario, links: Links, work_dir: Path, tls: certs.Certs) -> Launch:
    """Where `t` runs: its linked targets as it reaches them (the far end of each veth pair)."""
    peers = {
        other: Service(scenario.targets[other]).peer(links[t.name][other].peer_ip, tls)
        for other in t.links
        if other in links.get(t.name, {})
    }
    return Launch(work_dir, tls, peers)


def plan_targets(scenario: Scenario, work_dir: Path) -> dict[str, RunningTarget]:
    """The targets as a run would lay them out, with no process: for `chaoslab plan`."""
    specs, names, links = layout(scenario, "RUNID", 1)
    tls = certs.Certs(*(work_dir / "certs" / n for n in ("ca.pem", "tls.pem", "tls.key")))
    out = {}
    for t in specs:
        service = Service(t)
        cgroup_ = Cgroup(names[t.name], Cgroup.paths_for(names[t.name]))
        rt = RunningTarget(
            t, service, None, links[t.name][HOST].local_ip, names[t.name], cgroup_, links[t.name]
        )
        rt.binary = program_path(service.argv(launch_for(t, scenario, links, work_dir, tls))[0], t)
        out[t.name] = rt
    for t in scenario.targets.values():
        if t.kind == "attach":
            out[t.name] = attach.plan(t)
    return out


def program_path(argv0: str, spec: TargetSpec) -> Path:
    """The executable a command line names: a path (relative to the target's workdir), or a
    name looked up on PATH. A symbolic link is kept as it is: a program may act by the name
    it is called by (Debian's redis-server is a link to redis-check-rdb)."""
    import shutil

    if "/" in argv0:
        return Path(os.path.abspath(Path(spec.workdir or ".") / argv0))
    found = shutil.which(argv0)
    if found is None:
        raise PreflightError(f"target {spec.name}: {argv0!r} is not on PATH", "give its path, or install it")
    return Path(found)


class LocalRuntime:
    name = "local"
    where = ""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        # target -> argv, environment, working directory, journal entry: to start it again
        self._launch: dict[str, tuple[list[str], dict[str, str], str | None, int]] = {}

    def _start_process(self, rt: RunningTarget, seq: int) -> subprocess.Popen[bytes]:
        argv, env, cwd, _ = self._launch[rt.name]
        p = proc.start(netns.enter_argv(rt.netns) + argv, self._log(rt), env={**os.environ, **env}, cwd=cwd)
        self.ctx.journal.update(seq, pid=p.pid, start_time=proc.start_time(p.pid))
        rt.cgroup.add(p.pid)
        rt.proc = p
        return p

    def _log(self, rt: RunningTarget) -> Path:
        return self.ctx.work_dir / f"{rt.name}.log"

    def _healthy(self, rt: RunningTarget) -> float:
        return wait_healthy(
            f"target {rt.name}",
            rt.service.health,
            rt.ip,
            rt.ca,
            rt.alive,
            lambda: self._log(rt).read_text(errors="replace")[-4000:] if self._log(rt).exists() else "",
        )

    def _restart(self, rt: RunningTarget) -> float:
        """The runtime's supervisor: same command, namespace and cgroup; journaled first."""
        if isinstance(rt.proc, subprocess.Popen) and rt.alive():
            proc.stop(rt.proc)
        p = self._start_process(rt, self._launch[rt.name][3])
        took = self._healthy(rt)
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
        for t in self.ctx.scenario.targets.values():
            if t.kind == "image":
                raise PreflightError(
                    f"target {t.name}: an image runs on the Docker runtime", "use runtime: docker (or auto)"
                )

    def start(self, stack: ExitStack) -> dict[str, RunningTarget]:
        ctx, journal = self.ctx, self.ctx.journal
        running: dict[str, RunningTarget] = {}
        # Found before anything is created: a selector that matches nothing stops the run here.
        for t in ctx.scenario.targets.values():
            if t.kind == "attach":
                running[t.name] = attach.resolve(t, ctx, stack)
        with locks.allocating():  # the subnet is taken once an address of it is on a link
            specs, names, links = layout(ctx.scenario, ctx.short_id, netns.free_subnet_index())
            for t in specs:
                ns = names[t.name]
                seq = journal.intent("netns", name=ns)
                stack.callback(self._delete_ns, ns, seq)
                netns.create(ns)
                netns.create_host_link(ns, links[t.name][HOST])
        for t in specs:
            for other in t.links:
                if other in names:
                    netns.create_peer_link(names[t.name], links[t.name][other])
        tls = certs.make(
            ctx.work_dir / "certs", sorted({lk.local_ip for d in links.values() for lk in d.values()})
        )
        if specs:
            self._enable_controllers(stack)
        for t in specs:
            service = Service(t)
            launch = launch_for(t, ctx.scenario, links, ctx.work_dir, tls)
            argv, env = service.argv(launch), service.env(launch)
            argv[0] = str(program_path(argv[0], t))
            cg_name = names[t.name]
            cg_seq = journal.intent("cgroup", name=cg_name, dirs=[str(d) for d in Cgroup.paths_for(cg_name)])
            cgroup_ = Cgroup.create(cg_name)
            stack.callback(self._remove_cgroup, cgroup_, cg_seq)
            seq = journal.intent("process", target=t.name, argv=argv)
            rt = RunningTarget(
                t, service, None, links[t.name][HOST].local_ip, names[t.name], cgroup_, links[t.name]
            )
            rt.ca = service.client_ca(tls)
            rt.restarter = self._restart
            rt.launch = launch
            self._launch[t.name] = (argv, env, t.workdir or None, seq)
            stack.callback(self._stop, rt, seq)
            try:
                p = self._start_process(rt, seq)
            except OSError as exc:
                raise TargetError(
                    f"target {t.name}: cannot start {argv[0]}: {exc.strerror}",
                    "check that the program exists and is executable",
                ) from exc
            took = self._healthy(rt)
            ctx.say(f"target {t.name}: {t.what} pid {p.pid} at {rt.ip} (healthy in {took:.1f}s)")
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
            f"cgroup v2: enabled {', '.join(missing)} for the child cgroups of {cgroup.ROOT} (until the end)"
        )

    def _restore_controllers(self, enabled: list[str], seq: int) -> None:
        self.ctx.say(restore_controllers(cgroup.ROOT, enabled))
        self.ctx.journal.undone(seq)

    def _stop(self, rt: RunningTarget, seq: int) -> None:
        code = proc.stop(rt.proc) if isinstance(rt.proc, subprocess.Popen) else None
        if code not in (0, -15, None):
            self.ctx.say(f"target {rt.name} exited with code {code}")
        self.ctx.journal.undone(seq)

    def _remove_cgroup(self, cgroup_: Cgroup, seq: int) -> None:
        cgroup_.remove()
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
