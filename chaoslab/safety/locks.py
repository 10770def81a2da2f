"""One run per target: a lock on everything a run's faults act on, for the run's lifetime.

Each fault names what it acts on (`Fault.locks()`): the target's process, and by kind its
cgroup (a CPU limit, a freeze) or its network namespace (rules and qdiscs). A lock is a file
under /run/chaoslab/locks naming its holder: the run, its chaoslab process and watchdog (by
PID and start time) and its report directory. It is held while the holder run is live (its
chaoslab, even stopped, or its watchdog runs), so a run that was killed holds nothing once its
watchdog has undone its faults, and a stopped one keeps its targets from a second run.

Taking the locks is one step under a mutex (flock), all or nothing: a second run that wants
one of them is refused before it applies anything, with the holder named.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from chaoslab.errors import ChaoslabError, ExitCode
from chaoslab.journal import STATE_DIR, RunInfo

LOCK_DIR = STATE_DIR / "locks"


class TargetLocked(ChaoslabError):
    """Another live run holds a target this run would fault; nothing was applied."""

    exit_code = ExitCode.ENVIRONMENT


@dataclass(frozen=True)
class Lock:
    key: str  # what is locked: process:PID@START, cgroup:DIR, netns:INODE
    what: str  # in words, for messages: "target api (pid 1234)"
    holder: RunInfo


@contextlib.contextmanager
def _mutex() -> Iterator[None]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR / ".mutex", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def allocating() -> Iterator[None]:
    """Machine-wide, while a run picks a free subnet and puts its first address on it: two runs
    starting at once must not pick the same one."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR / ".allocate", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _file(key: str) -> Path:
    return LOCK_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def read(path: Path) -> Lock | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("holder"), dict):
        return None
    return Lock(str(data.get("key")), str(data.get("what")), RunInfo.of(data["holder"]))


def held() -> list[Lock]:
    """Every lock whose holder run is live."""
    if not LOCK_DIR.is_dir():
        return []
    return [lock for p in sorted(LOCK_DIR.glob("*.json")) if (lock := read(p)) and lock.holder.alive()]


def acquire(wanted: Mapping[str, str], me: RunInfo) -> None:
    """Take every lock in `wanted` (key -> what, in words) for run `me`, or none: TargetLocked
    names each holder. A lock whose holder is no longer live is taken over."""
    with _mutex():
        taken = [
            (what, lock)
            for key, what in wanted.items()
            if (lock := read(_file(key))) is not None
            and lock.holder.run_id != me.run_id
            and lock.holder.alive()
        ]
        if taken:
            lines = [f"{what} is held by {lock.holder.describe()}" for what, lock in taken]
            raise TargetLocked(
                "; ".join(lines) + ": one run per target at a time, nothing was applied",
                "wait for that run to end (or stop it: Ctrl-C, or SIGTERM to its chaoslab pid), then "
                "run again",
            )
        for key, what in wanted.items():
            _write(_file(key), key, what, me)


def _write(path: Path, key: str, what: str, me: RunInfo) -> None:
    holder = {
        "run_id": me.run_id,
        "pid": me.pid,
        "pid_start": me.pid_start,
        "journal": str(me.journal),
        "out_dir": me.out_dir,
        "watchdog_pid": me.watchdog_pid,
        "watchdog_start": me.watchdog_start,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "what": what, "holder": holder}))
    tmp.rename(path)


def release(run_id: str) -> int:
    """Drop every lock of run `run_id`; returns how many."""
    if not LOCK_DIR.is_dir():
        return 0
    n = 0
    with _mutex():
        for p in LOCK_DIR.glob("*.json"):
            lock = read(p)
            if lock is not None and lock.holder.run_id == run_id:
                p.unlink(missing_ok=True)
                n += 1
    return n


def sweep() -> list[str]:
    """Drop the locks of runs that are no longer live (recover); returns what was dropped."""
    if not LOCK_DIR.is_dir():
        return []
    out = []
    with _mutex():
        for p in LOCK_DIR.glob("*.json"):
            lock = read(p)
            if lock is None or not lock.holder.alive():
                p.unlink(missing_ok=True)
                if lock is not None:
                    out.append(f"released the lock on {lock.what} of dead run {lock.holder.run_id[:12]}")
    return out
