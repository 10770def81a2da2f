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
V1_CONTROLLERS = ("cpu", "cpuacct", "freezer", "pids", "memory")
# The v2 controllers chaoslab's cgroups need: cpu (cpu.max for the CPU limit, cpu.stat's
# throttling counters for the probe and its check). Freezing (cgroup.freeze) is core.
V2_CONTROLLERS = ("cpu",)
# and those they take where the kernel offers them: memory (memory.max for the memory fault)
V2_OPTIONAL = ("memory",)


def version() -> int:
    if (ROOT / "cgroup.controllers").exists():
        return 2
    if (ROOT / "cpu").is_dir():
        return 1
    raise PreflightError(
        "no cgroup hierarchy found under /sys/fs/cgroup", "mount cgroup v2 or the v1 cpu controller"
    )


def missing_controllers(parent: Path = ROOT) -> list[str]:
    """The v2 controllers chaoslab needs that `parent` does not enable for its children.

    A minimal host (no systemd, a container host, a fresh VM) often enables nothing in the
    root's cgroup.subtree_control, so a child cgroup has no cpu.max. Raises when the kernel
    does not offer a controller at all.
    """
    offered = (parent / "cgroup.controllers").read_text().split()
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    absent = [c for c in V2_CONTROLLERS if c not in offered]
    if absent:
        raise PreflightError(
            f"the kernel offers no {', '.join(absent)} controller in {parent} (cgroup.controllers: "
            f"{' '.join(offered) or 'none'})",
            "boot with the cpu controller on cgroup v2, or give chaoslab a delegated subtree that has it",
        )
    wanted = [*V2_CONTROLLERS, *(c for c in V2_OPTIONAL if c in offered)]
    return [c for c in wanted if c not in enabled]


def set_subtree_control(parent: Path, controllers: list[str], enable: bool) -> None:
    """Enable (or disable) controllers for the children of a v2 cgroup."""
    sign = "+" if enable else "-"
    path = parent / "cgroup.subtree_control"
    try:
        path.write_text(" ".join(f"{sign}{c}" for c in controllers) + "\n")
    except OSError as exc:
        raise TargetError(
            f"cannot write {' '.join(sign + c for c in controllers)} to {path}: {exc.strerror}",
            "a v2 parent with processes of its own cannot enable controllers (no internal processes): "
            "run chaoslab as root on the host's cgroup root, or delegate it a subtree with +cpu",
        ) from exc


def children(parent: Path = ROOT, prefix: str = "chaoslab-") -> list[Path]:
    return [d for d in parent.iterdir() if d.is_dir() and d.name.startswith(prefix)]


def membership(text: str, v2: bool) -> list[Path]:
    """The directories of a /proc/<pid>/cgroup text: v2's unified one, or one per v1 controller
    chaoslab uses (in V1_CONTROLLERS order; a line may name several, as in `cpu,cpuacct`)."""
    found: dict[str, Path] = {}
    for line in text.splitlines():
        _, controllers, rel = line.split(":", 2)
        if v2 and controllers == "":
            found[""] = ROOT / rel.lstrip("/")
        elif not v2:
            found |= {c: ROOT / c / rel.lstrip("/") for c in controllers.split(",") if c in V1_CONTROLLERS}
    return [found[c] for c in ("", *V1_CONTROLLERS) if c in found]


def holds(container_id: str, pid: int) -> bool:
    """The process `pid` here is that container's: its cgroup path names the container (a PID
    an engine gives for another kernel, or a reused one, is not)."""
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


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

    @classmethod
    def of_process(cls, pid: int, name: str) -> Cgroup:
        """The cgroup a process is in (a container's, made by its engine), on either layout."""
        dirs = membership(Path(f"/proc/{pid}/cgroup").read_text(), version() == 2)
        if not dirs:
            raise TargetError(f"process {pid} is in no cgroup chaoslab can use", f"see /proc/{pid}/cgroup")
        return cls(name, tuple(d for d in dirs if d.is_dir()))

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


@dataclass(frozen=True)
class CpuLimit:
    """A CFS bandwidth limit: `quota_us` of CPU time per `period_us` (quota -1: unlimited)."""

    quota_us: int
    period_us: int

    def render(self) -> str:
        if self.quota_us < 0:
            return "unlimited"
        return f"{self.quota_us / self.period_us:g} CPU ({self.quota_us}us per {self.period_us}us)"


def _controller(d: Path) -> str:
    """The v1 hierarchy a cgroup directory is in (cpu, freezer, ...)."""
    return d.relative_to(ROOT).parts[0]


def controller_dir(dirs: tuple[Path, ...], controller: str, hint: str = "") -> Path:
    """The directory that holds (or will hold) a controller's files: v2's one, or v1's own."""
    if version() == 2:
        return dirs[0]
    for d in dirs:
        if _controller(d) == controller:
            return d
    raise PreflightError(
        f"no {controller} controller among {', '.join(map(str, dirs)) or 'its cgroups'}",
        hint or f"mount the v1 {controller} controller",
    )


def cpu_dir(dirs: tuple[Path, ...]) -> Path:
    return controller_dir(dirs, "cpu")


def _counters(path: Path) -> dict[str, int]:
    """A flat keyed file (`cpu.stat`, `memory.stat`, `memory.events`): key -> integer value."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def check_cpu_files(d: Path) -> None:
    if not ((d / "cpu.max").exists() or (d / "cpu.cfs_quota_us").exists()):
        raise PreflightError(
            f"no CPU bandwidth files in {d}",
            "enable the cpu controller (cgroup v2: add +cpu to the parent's cgroup.subtree_control)",
        )


def read_cpu_limit(d: Path) -> CpuLimit:
    if (d / "cpu.max").exists():
        quota, period = (d / "cpu.max").read_text().split()
        return CpuLimit(-1 if quota == "max" else int(quota), int(period))
    return CpuLimit(int((d / "cpu.cfs_quota_us").read_text()), int((d / "cpu.cfs_period_us").read_text()))


def write_cpu_limit(d: Path, limit: CpuLimit) -> None:
    if (d / "cpu.max").exists():
        quota = "max" if limit.quota_us < 0 else str(limit.quota_us)
        (d / "cpu.max").write_text(f"{quota} {limit.period_us}\n")
        return
    # v1 checks quota against the current period: lift the quota, set the period, then the quota.
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    (d / "cpu.cfs_period_us").write_text(f"{limit.period_us}\n")
    (d / "cpu.cfs_quota_us").write_text(f"{limit.quota_us}\n")


def cpu_stat(d: Path) -> dict[str, int]:
    """nr_periods, nr_throttled and throttled_us, on either layout."""
    raw = _counters(d / "cpu.stat")
    throttled_us = raw.get("throttled_usec", raw.get("throttled_time", 0) // 1000)
    return {
        "nr_periods": raw.get("nr_periods", 0),
        "nr_throttled": raw.get("nr_throttled", 0),
        "throttled_us": throttled_us,
    }


def cpu_usage_ns(dirs: tuple[Path, ...]) -> int:
    """The CPU time the cgroup's tasks have used: v2 cpu.stat's usage_usec, v1 cpuacct.usage."""
    if version() == 2:
        for line in (dirs[0] / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
        raise PreflightError(
            f"no usage_usec in {dirs[0] / 'cpu.stat'}", "a v2 cgroup always has it: check the path"
        )
    for d in dirs:
        if (d / "cpuacct.usage").exists():
            return int((d / "cpuacct.usage").read_text())
    raise PreflightError(
        f"no cpuacct controller among {', '.join(map(str, dirs))}", "mount the v1 cpuacct controller"
    )


def freezer_file(dirs: tuple[Path, ...]) -> Path:
    """v2: cgroup.freeze (1/0); v1: the freezer hierarchy's freezer.state (FROZEN/THAWED)."""
    if version() == 2:
        return dirs[0] / "cgroup.freeze"
    for d in dirs:
        if _controller(d) == "freezer":
            return d / "freezer.state"
    raise PreflightError("no freezer controller for this target's cgroup", "mount the v1 freezer controller")


def set_frozen(path: Path, frozen: bool) -> None:
    if path.name == "cgroup.freeze":
        path.write_text("1\n" if frozen else "0\n")
    else:
        path.write_text("FROZEN\n" if frozen else "THAWED\n")


def frozen_state(path: Path) -> str:
    """FROZEN, FREEZING or THAWED, on either layout."""
    if path.name == "cgroup.freeze":
        events = (path.parent / "cgroup.events").read_text()
        if "frozen 1" in events:
            return "FROZEN"
        return "FREEZING" if path.read_text().strip() == "1" else "THAWED"
    return path.read_text().strip()


def memory_dir(dirs: tuple[Path, ...]) -> Path:
    """The directory that holds the memory controller's files."""
    return controller_dir(
        dirs,
        "memory",
        "mount the v1 memory controller (cgroup v2: enable +memory in the parent's cgroup.subtree_control)",
    )


def memory_limit_file(d: Path) -> Path:
    """v2 memory.max, v1 memory.limit_in_bytes; PreflightError when neither is there."""
    for name in ("memory.max", "memory.limit_in_bytes"):
        if (d / name).exists():
            return d / name
    raise PreflightError(
        f"no memory limit file in {d}",
        "enable the memory controller (cgroup v2: add +memory to the parent's cgroup.subtree_control)",
    )


def read_memory_limit(d: Path) -> str:
    """The limit as the file gives it: bytes, or v2's 'max' (v1 shows no limit as a huge number)."""
    return memory_limit_file(d).read_text().strip()


def write_memory_limit(d: Path, value: str) -> None:
    memory_limit_file(d).write_text(f"{value}\n")


def memory_usage(d: Path) -> int:
    name = "memory.current" if (d / "memory.current").exists() else "memory.usage_in_bytes"
    return int((d / name).read_text())


def memory_counters(d: Path) -> dict[str, int]:
    """What the cgroup's memory went through, on either layout: `limit_hits` (v1 failcnt, v2
    events max), `oom_kills`, `reclaimed` pages (v2 pgsteal; v1 pgpgout), `major_faults`,
    `anon` and `file` bytes, and v2's pressure stall time `stall_us` (PSI 'some', when the
    kernel has it)."""
    stat = _counters(d / "memory.stat")
    out = {"major_faults": stat.get("pgmajfault", 0)}
    if (d / "memory.events").exists():
        events = _counters(d / "memory.events")
        out |= {
            "limit_hits": events.get("max", 0),
            "oom_kills": events.get("oom_kill", 0),
            "reclaimed": stat.get("pgsteal", 0),
            "anon": stat.get("anon", 0),
            "file": stat.get("file", 0),
        }
        pressure = d / "memory.pressure"
        try:
            some = pressure.read_text().splitlines()[0]
            out["stall_us"] = int(some.rsplit("total=", 1)[1])
        except (OSError, IndexError, ValueError):
            pass
        return out
    oom = d / "memory.oom_control"
    kills = 0
    if oom.exists():
        for line in oom.read_text().splitlines():
            if line.startswith("oom_kill "):
                kills = int(line.split()[1])
    return out | {
        "limit_hits": int((d / "memory.failcnt").read_text()),
        "oom_kills": kills,
        "reclaimed": stat.get("pgpgout", 0),
        "anon": stat.get("rss", 0),
        "file": stat.get("cache", 0),
    }
