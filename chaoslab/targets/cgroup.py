"""A cgroup per target, on cgroup v1 (one directory per controller) or v2 (unified).

The layout is detected, never assumed: v2 when /sys/fs/cgroup is itself a cgroup2 mount
(most current distros), v1 otherwise (this kind of machine: cpu, cpuacct, freezer, ... under
/sys/fs/cgroup/<controller>).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from chaoslab.errors import PreflightError, TargetError

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("cpu", "cpuacct", "freezer", "pids")


def version() -> int:
    if (ROOT / "cgroup.controllers").exists():
        return 2
    if (ROOT / "cpu").is_dir():
        return 1
    raise PreflightError(
        "no cgroup hierarchy found under /sys/fs/cgroup", "mount cgroup v2 or the v1 cpu controller"
    )


@dataclass(frozen=True)
class Cgroup:
    name: str
    dirs: tuple[Path, ...]  # one per v1 controller, or the single v2 directory

    @classmethod
    def paths_for(cls, name: str) -> tuple[Path, ...]:
        if version() == 2:
            return (ROOT / name,)
        return tuple(ROOT / c / name for c in V1_CONTROLLERS if (ROOT / c).is_dir())

    @classmethod
    def create(cls, name: str) -> Cgroup:
        dirs = cls.paths_for(name)
        for d in dirs:
            try:
                d.mkdir(exist_ok=True)
            except OSError as exc:
                raise PreflightError(
                    f"cannot create cgroup {d}: {exc.strerror}", "run chaoslab as root"
                ) from exc
        return cls(name, dirs)

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
            except OSError:
                continue
        return out

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left inside, then remove the directories."""
        deadline = time.monotonic() + timeout
        sig = signal.SIGTERM
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.1)
            if time.monotonic() > deadline - timeout / 2:
                sig = signal.SIGKILL
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise TargetError(f"cannot remove cgroup {d}", "a process is still inside: see cgroup.procs")
