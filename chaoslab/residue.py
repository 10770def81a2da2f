"""What chaoslab may have left on this machine: namespaces, cgroups, processes, fault rules,
containers and Docker networks.

`python -m chaoslab.residue` prints each leftover and exits 1 if there is any. Tests call
`leftovers()` after every run; CI calls it at the end. What a live run holds (its chaoslab or
its watchdog still runs: a run of someone else's on a shared machine, or one just starting) is
not a leftover: it is named apart, and left alone.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from chaoslab import journal
from chaoslab.journal import RunInfo
from chaoslab.paths import BUILD
from chaoslab.proc import descendants, run
from chaoslab.targets import netns
from chaoslab.targets.cgroup import ROOT

PREFIX = "chaoslab-"


@dataclass(frozen=True)
class Live:
    """What live runs hold, to tell their things from leftovers."""

    ids: frozenset[str]  # short run ids (the 6 characters in names)
    run_ids: frozenset[str]
    pids: frozenset[int]
    netns_inodes: frozenset[int]  # network namespaces a live run has locked (the host's, for one)

    @classmethod
    def of(cls, runs: Collection[RunInfo]) -> Live:
        from chaoslab.safety import locks

        pids: set[int] = set()
        for info in runs:
            for pid in (info.pid, info.watchdog_pid):
                if pid:
                    pids |= {pid, *descendants(pid)}
            if info.journal.is_file():
                for e in journal.pending(info.journal):
                    pids |= {v for k, v in e.data.items() if k.endswith("pid") and isinstance(v, int)}
        run_ids = {i.run_id for i in runs}
        inodes = {
            int(lock.key.split(":", 1)[1])
            for lock in locks.held()
            if lock.key.startswith("netns:") and lock.holder.run_id in run_ids
        }
        return cls(frozenset(r[:6] for r in run_ids), frozenset(run_ids), frozenset(pids), frozenset(inodes))

    def owns(self, name: str) -> bool:
        """A chaoslab-<short>-... name (namespace, cgroup) or a clh<short>/clb<short> device."""
        short = name.removeprefix(PREFIX).split("-", 1)[0] if name.startswith(PREFIX) else name[3:9]
        return short in self.ids


def _namespaces(live: Live) -> list[str]:
    if not netns.NETNS_DIR.is_dir():
        return []
    return [
        f"network namespace {p.name}"
        for p in netns.NETNS_DIR.iterdir()
        if p.name.startswith(PREFIX) and not live.owns(p.name)
    ]


def _cgroups(live: Live) -> list[str]:
    found = [*ROOT.glob(f"{PREFIX}*"), *ROOT.glob(f"*/{PREFIX}*")]
    return [f"cgroup {p}" for p in found if p.is_dir() and not live.owns(p.name)]


def _processes(live: Live) -> list[str]:
    out = []
    build_bin = (BUILD / "bin").resolve()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in live.pids or int(d.name) == os.getpid():
            continue
        try:
            exe = (d / "exe").resolve()
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in args if a]
        ours = (
            exe.parent == build_bin
            or any(a.endswith("chaoslab/load/locustfile.py") for a in argv)
            or "chaoslab.safety.watchdog" in argv
            or (
                exe.name == "envoy"
                and any(Path(a).parent.name == "work" and a.endswith(".json") for a in argv)
            )
        )
        if ours:
            out.append(f"process {d.name}: {' '.join(argv)[:120]}")
    return out


def _host_network(live: Live) -> list[str]:
    """Fault rules in the host's own namespace (iptables chains, tc trees on the run's veths)."""
    out = []
    host_locked = _host_inode() in live.netns_inodes  # a live run faults a target of the host's
    if shutil.which("iptables") and not host_locked:
        rules = run(["iptables", "-w", "-S"], check=False).stdout
        out += [f"iptables: {line}" for line in rules.splitlines() if "CHAOSLAB" in line]
    if shutil.which("tc"):
        qdiscs = run(["tc", "qdisc", "show"], check=False).stdout
        for line in qdiscs.splitlines():
            dev = line.split(" dev ", 1)[1].split()[0] if " dev " in line else ""
            if dev.startswith(("clh", "clb")) and "htb 1:" in line and not live.owns(dev):
                out.append(f"tc: {line}")
    return out


def _host_inode() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def _docker(live: Live) -> list[str]:
    """Containers (any state) and networks labelled with a chaoslab run, on the default engine
    and every engine a run here used; none on an engine that does not answer."""
    from chaoslab.targets import containers, engines

    out = []
    for i, where in enumerate(engines.every()):
        on = f" on the {where}" if i else ""
        with containers.reachable(where) as engine:
            if engine is None:
                continue
            found, networks = containers.labelled(engine)
        out += [
            f"container {c.name} ({c.status}){on}"
            for c in found
            if not containers.live(c.labels, live.run_ids)
        ] + [
            f"Docker network {n.name}{on}"
            for n in networks
            if not containers.live(n.attrs.get("Labels"), live.run_ids)
        ]
    return out


def leftovers(runs: Collection[RunInfo] | None = None) -> list[str]:
    """What chaoslab left on the machine, leaving out what `runs` hold (default: the live runs)."""
    live = Live.of(journal.live_runs() if runs is None else runs)
    return _namespaces(live) + _cgroups(live) + _processes(live) + _host_network(live) + _docker(live)


def main() -> int:
    runs = journal.live_runs()
    for info in runs:
        print(f"live: {info.describe()}: what it holds is not residue")
    found = leftovers(runs)
    for line in found:
        print(f"residue: {line}")
    if not found:
        print("residue: none")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
