"""memory: a lower memory limit on a target's cgroup, at once or taken away gradually.

    - {kind: memory, target: api, limit: 48MiB}             # the cgroup's limit for the phase
    - {kind: memory, target: api, limit: 60%}               # of what it uses when the phase starts
    - {kind: memory, target: api, limit: 48MiB, over: 10s}  # stepped down from its usage over 10 s

cgroup v2 (memory.max) and v1 (memory.limit_in_bytes) alike. The limit that was there is
journaled first and written back on revert, byte for byte (a container's own limit survives);
`recover` does the same after a killed run. A cgroup at its limit reclaims its page cache
(and swaps, where there is swap) in the threads that allocate: the memory layer's time.

Verified by the cgroup's own counters, compared with their values when the fault was
applied: how often usage hit the limit (v1 failcnt, v2 memory.events max), pages
reclaimed, major faults, the pressure stall time (v2 memory.pressure, where the kernel has
PSI) and OOM kills. A limit under what the target cannot give back (its anonymous memory,
without swap) makes the kernel kill it on v2, or refuse the write on v1 (an error naming
both sizes, and nothing applied).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chaoslab.errors import FaultError, PreflightError
from chaoslab.faults.base import Fault, Verification, own_cgroup
from chaoslab.layers import Layer
from chaoslab.quote import show
from chaoslab.scenario.fields import Fields
from chaoslab.scenario.model import FaultSpec, TargetSpec
from chaoslab.targets.cgroup import (
    memory_counters,
    memory_dir,
    memory_limit_file,
    memory_usage,
    read_memory_limit,
    version,
    write_memory_limit,
)
from chaoslab.units import format_size, parse_size

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

MECHANISM = "cgroup memory limit (memory.max / memory.limit_in_bytes)"
MIN_LIMIT = 4 << 20  # below this a process cannot even map its own binary
STEP = 0.2  # seconds between two steps of a gradual limit
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class MemorySpec(FaultSpec):
    limit: int = 0  # bytes; 0 with `share`
    share: float = 0.0  # of the usage when the fault is applied, 0..1
    over: float = 0.0  # seconds to step down to the limit (0: at once)

    def axis(self, param: str) -> float | None:
        """A sweep's axis for `limit`: bytes, or the share of the usage in percent."""
        if param == "limit":
            return float(self.limit) if self.limit else self.share * 100
        return None


class MemoryFault(Fault):
    kind = "memory"
    layer = Layer.MEMORY
    spec: MemorySpec

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        def limit(v: object) -> tuple[int, float]:
            if isinstance(v, str) and v.strip().endswith("%"):
                try:
                    pct = float(v.strip()[:-1])
                except ValueError:
                    pct = -1.0
                if not 0 < pct < 100:
                    raise ValueError(f"a share of the usage is above 0% and below 100%, got {show(v)}")
                return 0, pct / 100
            n = parse_size(v)
            if n < MIN_LIMIT:
                raise ValueError(f"at least {format_size(MIN_LIMIT)}, got {show(v)}")
            return n, 0.0

        size, share = fields.get("limit", limit, (0, 0.0), required=True)
        over = fields.duration("over", 0.0, positive=False, high=3600.0)
        return MemorySpec(kind=kind, target=target, path=fields.path, limit=size, share=share, over=over)

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        return ("memory limit",)

    def also_shows_in(self, targets: Mapping[str, TargetSpec]) -> tuple[tuple[Layer, str], ...]:
        """Pages reclaimed from the target's page cache are read again from disk inside its
        file reads: that I/O is the syscall layer's time at the target, and this fault's."""
        return ((Layer.SYSCALL, self.spec.target),)

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self._dir: Path | None = None
        self.previous = ""
        self.applied = False
        self.goal = 0  # the limit in bytes, once known
        self.start_usage = 0
        self.before: dict[str, int] = {}
        self.floor = 0  # the last limit written (v1: the kernel refuses what it cannot reclaim)
        self.stopped = ""  # why a gradual limit stopped stepping early
        self._stop = threading.Event()
        self._stepper: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def dir(self) -> Path:
        if self._dir is None:
            self._dir = memory_dir(self.target.cgroup.dirs)
        return self._dir

    def locks(self) -> dict[str, str]:
        return super().locks() | {
            f"cgroup:{self.dir}": f"the memory cgroup of {self.target.name} ({self.dir})"
        }

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("the memory fault needs root (cgroup files)", "run chaoslab with sudo")
        own_cgroup(self.target, "a memory limit")
        memory_limit_file(self.dir)
        self.previous = read_memory_limit(self.dir)

    def describe_limit(self) -> str:
        what = format_size(self.spec.limit) if self.spec.limit else f"{self.spec.share:.0%} of its usage"
        return what + (f", stepped down over {self.spec.over:g}s" if self.spec.over else "")

    def plan(self) -> list[str]:
        f = self.dir / ("memory.max" if version() == 2 else "memory.limit_in_bytes")
        value = str(self.spec.limit) if self.spec.limit else f"<{self.spec.share:.0%} of memory usage>"
        steps = f" (in steps every {STEP:g}s over {self.spec.over:g}s)" if self.spec.over else ""
        prev = self.previous or "the limit read at preflight"
        return [f"mechanism: {MECHANISM}", f"echo {value} > {f}{steps}", f"revert: echo {prev} > {f}"]

    def journal_record(self) -> dict[str, object]:
        return {"dir": str(self.dir), "previous": self.previous}

    def apply(self, note: Callable[..., None]) -> None:
        self.before = memory_counters(self.dir)
        self.start_usage = memory_usage(self.dir)
        self.goal = self.spec.limit or max(MIN_LIMIT, int(self.start_usage * self.spec.share))
        self.goal -= self.goal % PAGE
        self.applied = True
        if not self.spec.over:
            self._write(self.goal, strict=True)
            return
        top = max(self.start_usage, self.goal)
        top -= top % PAGE
        self._write(top, strict=True)
        steps = max(1, round(self.spec.over / STEP))

        def step_down() -> None:
            for i in range(1, steps + 1):
                if self._stop.wait(STEP):
                    return
                value = top - (top - self.goal) * i // steps
                with self._lock:
                    if self._stop.is_set():
                        return
                    try:
                        if int(read_memory_limit(self.dir)) != self.floor:
                            # someone else set it (the watchdog or `recover` put the previous
                            # limit back): the fault is over, never undo their restore
                            self.stopped = "the limit was changed from outside"
                            return
                        self._write(value - value % PAGE, strict=False)
                    except (OSError, ValueError, FaultError) as exc:
                        self.stopped = f"a step failed: {exc}"
                        return

        self._stepper = threading.Thread(target=step_down, name=f"memory-{self.target.name}", daemon=True)
        self._stepper.start()

    def _write(self, value: int, strict: bool) -> None:
        try:
            write_memory_limit(self.dir, str(value))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise FaultError(
                    f"{memory_limit_file(self.dir)}: cannot set {value}: {exc.strerror}"
                ) from exc
            usage = memory_counters(self.dir)
            anon = format_size(usage.get("anon", 0))
            if strict:
                raise FaultError(
                    f"{self.target.name}: the kernel cannot reclaim its memory down to {format_size(value)} "
                    f"(it uses {format_size(memory_usage(self.dir))}, {anon} of it anonymous, and there is "
                    "no swap for that)",
                    f"give a limit above {anon}, or a share of its usage",
                ) from exc
            return  # a step the kernel refused: the limit stays at the last one it took
        self.floor = value

    def verify(self) -> Verification:
        now = memory_counters(self.dir)
        b = self.before
        limit = read_memory_limit(self.dir)
        delta = {
            k: now.get(k, 0) - b.get(k, 0) for k in ("limit_hits", "reclaimed", "major_faults", "oom_kills")
        }
        measured = {
            "limit_bytes": float(self.floor),
            "goal_bytes": float(self.goal),
            "usage_at_apply_bytes": float(self.start_usage),
            "usage_bytes": float(memory_usage(self.dir)),
            **{k: float(v) for k, v in delta.items()},
        }
        if "stall_us" in now:
            measured["stall_ms"] = round((now["stall_us"] - b.get("stall_us", 0)) / 1000, 3)
        took = limit.isdigit() and int(limit) <= self.floor + PAGE
        stall = f", stalled {measured['stall_ms']:.0f} ms (PSI)" if "stall_ms" in measured else ""
        if self.floor == self.goal:
            goal = ""
        elif self._stepper is not None and self._stepper.is_alive():
            goal = f" (stepping down to {format_size(self.goal)})"
        else:
            goal = f" (of {format_size(self.goal)} asked: {self.stopped or 'the kernel took no lower'})"
        detail = (
            f"limit {format_size(self.floor)}{goal}, usage {format_size(self.start_usage)} -> "
            f"{format_size(measured['usage_bytes'])}: at the limit {delta['limit_hits']} times, "
            f"{delta['reclaimed']} pages reclaimed, {delta['major_faults']} major faults{stall}"
            + (f", {delta['oom_kills']} OOM kills" if delta["oom_kills"] else "")
        )
        if not took:
            detail = f"the limit reads {limit}, not {self.floor}: " + detail
        observed = took and (delta["limit_hits"] > 0 or delta["oom_kills"] > 0)
        return Verification(observed, detail, MECHANISM, measured)

    def revert(self) -> None:
        self._stop.set()
        if self._stepper is not None:
            self._stepper.join(timeout=5)
        if not self.applied or not self.previous:
            return
        with self._lock:
            if self.dir.exists():
                write_memory_limit(self.dir, self.previous)
                if read_memory_limit(self.dir) != self.previous:
                    raise FaultError(f"{self.dir}: could not restore the memory limit {self.previous}")
        self.applied = False

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        d, previous = record.get("dir"), record.get("previous")
        if not (isinstance(d, str) and isinstance(previous, str) and previous):
            return []
        path = Path(d)
        if not path.exists() or read_memory_limit(path) == previous:
            return []
        write_memory_limit(path, previous)
        return [f"restored the memory limit {previous} on {path}"]

    def describe(self) -> str:
        return f"memory limit {self.describe_limit()} on {self.spec.target}"
