"""cpu: a CFS bandwidth limit on a target's cgroup (`cpus: 0.2` = 20 ms of CPU per 100 ms).

cgroup v1 (cpu.cfs_quota_us / cpu.cfs_period_us) and v2 (cpu.max) alike; the limit that
was there before is journaled and put back on revert, so a container's own limit survives.
Verified by the cgroup's throttling counters (periods in which it ran out of quota) and by
the run-queue wait of the target's threads (/proc/PID/task/TID/schedstat), both compared
with their values when the fault was applied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chaoslab import proc
from chaoslab.errors import FaultError, PreflightError
from chaoslab.faults.base import Fault, Verification, own_cgroup
from chaoslab.layers import Layer
from chaoslab.quote import show
from chaoslab.scenario.fields import Fields
from chaoslab.scenario.model import FaultSpec
from chaoslab.targets.cgroup import (
    CpuLimit,
    check_cpu_files,
    cpu_dir,
    cpu_stat,
    read_cpu_limit,
    version,
    write_cpu_limit,
)

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

MECHANISM = "cgroup CFS bandwidth (cpu.max / cpu.cfs_quota_us)"


@dataclass(frozen=True)
class CpuSpec(FaultSpec):
    cpus: float = 0.0
    period: float = 0.1


class CpuFault(Fault):
    kind = "cpu"
    layer = Layer.CPU
    spec: CpuSpec

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        cores = os.cpu_count() or 1

        def cpus(v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.01 <= v <= 1024:
                raise ValueError(f"expected a number of CPUs from 0.01 to 1024, e.g. 0.2, got {show(v)}")
            if v >= cores:
                raise ValueError(
                    f"this machine has {cores} CPUs: a limit of {v:g} takes nothing away "
                    f"(give less than {cores}, e.g. {cores / 4:g})"
                )
            return float(v)

        period = fields.duration("period", 0.1)
        if not 0.001 <= period <= 1.0:
            fields.problems.add(fields.at("period"), f"must be between 1ms and 1s, got {period:g}s")
        return CpuSpec(
            kind=kind,
            target=target,
            path=fields.path,
            cpus=fields.get("cpus", cpus, 0.0, required=True),
            period=period,
        )

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        return ("CPU limit",)

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self.dir = cpu_dir(target.cgroup.dirs)
        self.previous: CpuLimit | None = None
        self.applied = False
        self.stat_before: dict[str, int] = {}
        self.sched_before = (0, 0, 0)

    @property
    def limit(self) -> CpuLimit:
        period_us = round(self.spec.period * 1e6)
        return CpuLimit(max(1000, round(self.spec.cpus * period_us)), period_us)

    def locks(self) -> dict[str, str]:
        return super().locks() | {f"cgroup:{self.dir}": f"the cgroup of {self.target.name} ({self.dir})"}

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("the cpu fault needs root (cgroup files)", "run chaoslab with sudo")
        own_cgroup(self.target, "a CPU limit")
        check_cpu_files(self.dir)
        self.previous = read_cpu_limit(self.dir)

    def plan(self) -> list[str]:
        d, lim = self.dir, self.limit
        if version() == 2:
            writes = [f"echo '{lim.quota_us} {lim.period_us}' > {d}/cpu.max"]
        else:
            writes = [
                f"echo {lim.period_us} > {d}/cpu.cfs_period_us",
                f"echo {lim.quota_us} > {d}/cpu.cfs_quota_us",
            ]
        prev = self.previous.render() if self.previous else "the limit read at preflight"
        return [f"mechanism: {MECHANISM}", *writes, f"revert: write back {prev}"]

    def journal_record(self) -> dict[str, object]:
        assert self.previous is not None
        return {
            "dir": str(self.dir),
            "quota_us": self.previous.quota_us,
            "period_us": self.previous.period_us,
        }

    def apply(self, note: Callable[..., None]) -> None:
        self.stat_before = cpu_stat(self.dir)
        self.sched_before = proc.schedstat(self.target.cgroup.pids())
        self.applied = True
        write_cpu_limit(self.dir, self.limit)
        if read_cpu_limit(self.dir) != self.limit:
            raise FaultError(f"{self.dir}: the CPU limit did not take ({read_cpu_limit(self.dir).render()})")

    def verify(self) -> Verification:
        st = cpu_stat(self.dir)
        cpu, wait, slices = proc.schedstat(self.target.cgroup.pids())
        b = self.stat_before
        throttled = st["nr_throttled"] - b.get("nr_throttled", 0)
        periods = st["nr_periods"] - b.get("nr_periods", 0)
        throttled_ms = (st["throttled_us"] - b.get("throttled_us", 0)) / 1000
        wait_ms = (wait - self.sched_before[1]) / 1e6
        n = max(1, slices - self.sched_before[2])
        measured = {
            "nr_periods": float(periods),
            "nr_throttled": float(throttled),
            "throttled_ms": round(throttled_ms, 3),
            "cpu_ms": round((cpu - self.sched_before[0]) / 1e6, 3),
            "runqueue_wait_ms": round(wait_ms, 3),
            "runqueue_wait_per_slice_ms": round(wait_ms / n, 3),
        }
        detail = (
            f"limit {self.limit.render()}: throttled in {throttled} of {periods} periods "
            f"({throttled_ms:.0f} ms), threads used {measured['cpu_ms']:.0f} ms CPU and waited "
            f"{wait_ms:.0f} ms on the run queue ({wait_ms / n:.2f} ms per timeslice)"
        )
        return Verification(throttled > 0, detail, MECHANISM, measured)

    def revert(self) -> None:
        if not self.applied or self.previous is None:
            return
        if self.dir.exists():
            write_cpu_limit(self.dir, self.previous)
            if read_cpu_limit(self.dir) != self.previous:
                raise FaultError(f"{self.dir}: could not restore {self.previous.render()}")
        self.applied = False

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        d, quota, period = record.get("dir"), record.get("quota_us"), record.get("period_us")
        if not (isinstance(d, str) and isinstance(quota, int) and isinstance(period, int)):
            return []
        path, previous = Path(d), CpuLimit(quota, period)
        if not path.exists() or read_cpu_limit(path) == previous:
            return []
        write_cpu_limit(path, previous)
        return [f"restored {previous.render()} on {path}"]
