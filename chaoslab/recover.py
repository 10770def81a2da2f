"""`chaoslab recover`: undo what killed runs left, from their write-ahead journals.

Safe to run twice: every undo checks the state first (a namespace that is gone, a PID
that now belongs to another process, an instruction already restored are skipped). The
watchdog of a run (chaoslab/safety/watchdog.py) undoes its faults with the same per-kind
undo, from the same journal.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from chaoslab import journal, proc
from chaoslab.errors import ChaoslabError, TargetError, UsageError
from chaoslab.faults import FAULT_KINDS
from chaoslab.journal import Entry, indexed_runs, pending
from chaoslab.safety import locks
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
    if e.data.get("through_helper"):  # applied by chaoslab's helper on a remote engine's host
        from chaoslab.faults.far import FarFault

        return FarFault.recover(e.data)
    cls = FAULT_KINDS.get(kind)
    return cls.recover(e.data) if cls else [f"unknown fault kind {kind!r} in journal: left as is"]


def _undo_docker(e: Entry) -> list[str]:
    """A container or a Docker network of the run, removed by name."""
    from chaoslab.targets import containers, engines, hosthelper

    what, remove = {
        "container": ("container", containers.remove_container),
        "docker_network": ("Docker network", containers.remove_network),
    }[e.kind]
    name = str(e.data.get("name"))
    url = str(e.data.get("engine") or "")
    where = engines.reopen(url, str(e.data.get("engine_name") or "")) if url else engines.resolve()
    on = f" on the {where}" if url else ""
    with containers.reachable(where) as engine:
        if engine is None:  # kept pending: a later recover tries again
            raise TargetError(
                f"{what} {name}{on}: the {where} is not reachable", "run `chaoslab recover` again"
            )
        if e.kind == "container" and e.data.get("target") == hosthelper.ROLE:
            return hosthelper.stop(engine, name, where)  # stopped: its watchdog undoes what it holds
        return [f"removed {what} {name}{on}"] if remove(engine, name) else []


UNDO: dict[str, Callable[[Entry], list[str]]] = {
    "process": _undo_process,
    "container": _undo_docker,
    "docker_network": _undo_docker,
    "cgroup": _undo_cgroup,
    "cgroup_controllers": _undo_controllers,
    "netns": _undo_netns,
    "fault": _undo_fault,
}


ORDER = {
    "fault": 0,
    "process": 1,
    "container": 1,
    "cgroup": 2,
    "cgroup_controllers": 3,
    "netns": 3,
    "docker_network": 4,
}


@dataclass(frozen=True)
class Undo:
    """One journal entry undone (or not): what was done, how long it took, what failed."""

    entry: Entry
    lines: list[str]
    seconds: float
    error: str = ""


def undo_entries(path: Path, kinds: Collection[str] | None = None) -> list[Undo]:
    """Undo the entries of a journal that were not undone (only `kinds`, when given): faults first
    (they act on live targets), then processes and containers, cgroups, namespaces, and the
    containers' network last; newest first within each. Each one undone is marked `undone` in the
    journal, so chaoslab (when it comes back) and a later recover see it gone."""
    entries = [e for e in pending(path) if kinds is None or e.kind in kinds]
    done = []
    for e in sorted(entries, key=lambda e: (ORDER.get(e.kind, 9), -e.seq)):
        undo = UNDO.get(e.kind)
        start = time.monotonic()
        if undo is None:
            done.append(Undo(e, [f"unknown journal entry {e.kind!r}: left as is"], 0.0, "unknown"))
            continue
        try:
            lines = undo(e)
        except (ChaoslabError, OSError, ValueError) as exc:
            msg = exc.message if isinstance(exc, ChaoslabError) else str(exc)
            done.append(Undo(e, [f"could not undo {e.kind} {e.seq}: {msg}"], time.monotonic() - start, msg))
            continue
        with contextlib.suppress(OSError):
            journal.append(path, {"seq": e.seq, "op": "undone", "by": f"pid {os.getpid()}"})
        done.append(Undo(e, lines, time.monotonic() - start))
    return done


def recover_journal(path: Path) -> list[str]:
    return [line for u in undo_entries(path) for line in u.lines]


def recover_all(journals: list[Path] | None = None, force: bool = False) -> list[str]:
    """Recover every indexed run that is not live (neither its chaoslab nor its watchdog runs), or
    the runs of the given journals. A live run is left alone: it may be someone else's, and its
    own watchdog undoes its faults if it stalls. `force` recovers the named journals even when
    their run is live (a chaoslab stopped for good).

    Then containers and networks labelled with a run that is not live are removed (a run killed
    between the engine's create call and its journal update leaves no name), and the locks of
    runs that are not live are dropped.
    """
    from chaoslab.targets import containers

    if force and not journals:
        raise UsageError(
            "recover --force needs the journals of the runs to recover: a live run on this machine "
            "may be someone else's",
            "run `chaoslab recover` to list the live runs, then `chaoslab recover --force DIR/journal.jsonl`",
        )
    wanted = {j.resolve() for j in journals or []}
    done: list[str] = []
    live: set[str] = set()
    seen: set[Path] = set()
    for index, info in indexed_runs():
        journal_path = info.journal.resolve() if str(info.journal) else info.journal
        named = journal_path in wanted
        if wanted and not named:
            if info.alive():
                live.add(info.run_id)
            continue
        seen.add(journal_path)
        if info.alive() and info.pid != os.getpid() and not (force and named):
            hint = "; add --force to recover it anyway" if named else ""
            done.append(f"{info.describe()} is live: left alone{hint}")
            live.add(info.run_id)
            continue
        if journal_path.exists():
            done += recover_journal(journal_path)
        index.unlink(missing_ok=True)
        locks.release(info.run_id)
    for j in wanted - seen:
        done += recover_journal(j)
    if not wanted:
        done += containers.sweep(live)
    return done + locks.sweep()
