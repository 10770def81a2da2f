"""`chaoslab recover`: undo what killed runs left, from their write-ahead journals.

Safe to run twice: every undo checks the state first (a namespace that is gone, a PID
that now belongs to another process, an instruction already restored are skipped).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from chaoslab import proc
from chaoslab.faults import FAULT_KINDS
from chaoslab.journal import Entry, indexed_runs, pending
from chaoslab.targets import netns
from chaoslab.targets.cgroup import Cgroup


def _undo_process(e: Entry) -> list[str]:
    pid, start = e.data.get("pid"), e.data.get("start_time")
    if isinstance(pid, int) and proc.kill_if_same(pid, start if isinstance(start, int) else None):
        return [f"stopped {e.data.get('target', 'process')} pid {pid}"]
    return []


def _undo_cgroup(e: Entry) -> list[str]:
    raw = e.data.get("dirs")
    dirs = tuple(Path(str(d)) for d in raw) if isinstance(raw, list) else ()
    existing = tuple(d for d in dirs if d.exists())
    if not existing:
        return []
    Cgroup(str(e.data.get("name")), existing).remove()
    return [f"removed cgroup {e.data.get('name')}"]


def _undo_controllers(e: Entry) -> list[str]:
    from chaoslab.targets.local import restore_controllers

    parent = Path(str(e.data.get("parent")))
    raw = e.data.get("enabled")
    enabled = [str(c) for c in raw] if isinstance(raw, list) else []
    try:
        still = (parent / "cgroup.subtree_control").read_text().split()
    except OSError:
        return []
    enabled = [c for c in enabled if c in still]
    return [restore_controllers(parent, enabled)] if enabled else []


def _undo_netns(e: Entry) -> list[str]:
    name = str(e.data.get("name"))
    return [f"deleted network namespace {name}"] if netns.delete(name) else []


def _undo_fault(e: Entry) -> list[str]:
    kind = str(e.data.get("kind"))
    cls = FAULT_KINDS.get(kind)
    return cls.recover(e.data) if cls else [f"unknown fault kind {kind!r} in journal: left as is"]


def _undo_docker(e: Entry) -> list[str]:
    """A container or a Docker network of the run, removed by name."""
    from chaoslab.targets import containers

    what, remove = {
        "container": ("container", containers.remove_container),
        "docker_network": ("Docker network", containers.remove_network),
    }[e.kind]
    name = str(e.data.get("name"))
    engine = containers.reachable()
    if engine is None:
        return [f"{what} {name}: Docker is not reachable, left as is"]
    return [f"removed {what} {name}"] if remove(engine, name) else []


UNDO: dict[str, Callable[[Entry], list[str]]] = {
    "process": _undo_process,
    "container": _undo_docker,
    "docker_network": _undo_docker,
    "cgroup": _undo_cgroup,
    "cgroup_controllers": _undo_controllers,
    "netns": _undo_netns,
    "fault": _undo_fault,
}


def recover_journal(path: Path) -> list[str]:
    done: list[str] = []
    entries = pending(path)
    # Faults first (they act on live targets), then processes and containers, cgroups,
    # namespaces, and the containers' network last.
    order = {
        "fault": 0,
        "process": 1,
        "container": 1,
        "cgroup": 2,
        "cgroup_controllers": 3,
        "netns": 3,
        "docker_network": 4,
    }
    for e in sorted(entries, key=lambda e: (order.get(e.kind, 9), -e.seq)):
        undo = UNDO.get(e.kind)
        done += undo(e) if undo else [f"unknown journal entry {e.kind!r}: left as is"]
    return done


def recover_all(journals: list[Path] | None = None, force: bool = False) -> list[str]:
    """Recover the given journals, or every indexed run whose chaoslab process is gone.

    Then containers and networks labelled with a run that is not alive are removed too (a
    run killed between the engine's create call and its journal update leaves no name).
    """
    from chaoslab.targets import containers

    done: list[str] = []
    if journals:
        for j in journals:
            done += recover_journal(j)
        return done
    live: set[str] = set()
    for index, info in indexed_runs():
        pid = info.get("pid")
        if not force and isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            done.append(f"run {info.get('run_id')} is still running (pid {pid}): left alone, use --force")
            live.add(str(info.get("run_id")))
            continue
        journal = Path(str(info.get("journal")))
        if journal.exists():
            done += recover_journal(journal)
        index.unlink(missing_ok=True)
    return done + containers.sweep(live)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
