"""What chaoslab may have left on this machine: namespaces, cgroups, processes, fault rules,
containers and Docker networks.

`python -m chaoslab.residue` prints each leftover and exits 1 if there is any. Tests call
`leftovers()` after every run; CI calls it at the end.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from chaoslab.paths import BUILD
from chaoslab.proc import run
from chaoslab.targets import netns
from chaoslab.targets.cgroup import ROOT

PREFIX = "chaoslab-"


def _namespaces() -> list[str]:
    if not netns.NETNS_DIR.is_dir():
        return []
    return [f"network namespace {p.name}" for p in netns.NETNS_DIR.iterdir() if p.name.startswith(PREFIX)]


def _cgroups() -> list[str]:
    found = [*ROOT.glob(f"{PREFIX}*"), *ROOT.glob(f"*/{PREFIX}*")]
    return [f"cgroup {p}" for p in found if p.is_dir()]


def _processes() -> list[str]:
    out = []
    build_bin = (BUILD / "bin").resolve()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
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
            or (
                exe.name == "envoy"
                and any(Path(a).parent.name == "work" and a.endswith(".json") for a in argv)
            )
        )
        if ours:
            out.append(f"process {d.name}: {' '.join(argv)[:120]}")
    return out


def _host_network() -> list[str]:
    """Fault rules in the host's own namespace (iptables chains, tc trees on the run's veths)."""
    out = []
    if shutil.which("iptables"):
        rules = run(["iptables", "-w", "-S"], check=False).stdout
        out += [f"iptables: {line}" for line in rules.splitlines() if "CHAOSLAB" in line]
    if shutil.which("tc"):
        qdiscs = run(["tc", "qdisc", "show"], check=False).stdout
        out += [
            f"tc: {line}"
            for line in qdiscs.splitlines()
            if (" dev clh" in line or " dev clb" in line) and "htb 1:" in line
        ]
    return out


def _docker() -> list[str]:
    """Containers (any state) and networks labelled with a chaoslab run; none without Docker."""
    from chaoslab.targets import containers

    engine = containers.reachable()
    if engine is None:
        return []
    found, networks = containers.labelled(engine)
    return [f"container {c.name} ({c.status})" for c in found] + [
        f"Docker network {n.name}" for n in networks
    ]


def leftovers() -> list[str]:
    return _namespaces() + _cgroups() + _processes() + _host_network() + _docker()


def main() -> int:
    found = leftovers()
    for line in found:
        print(f"residue: {line}")
    if not found:
        print("residue: none")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
