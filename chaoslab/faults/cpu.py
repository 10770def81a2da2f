"""cpu: a CFS bandwidth limit on a target's cgroup (`cpus: 0.2` = 20 ms of CPU per 100 ms).

cgroup v1 (cpu.cfs_quota_us / cpu.cfs_period_us) and v2 (cpu.max) alike; the limit that
was there before is journaled and put back on revert, so a container's own limit survives.
Verified by the cgroup's throttling counters (periods in which it ran out of quota) and by
the run-queue wait of the target's threads (/proc/PID/task/TID/schedstat), both compared
with their values when the fault was applied.

On a remote Docker engine the engine writes the same limit on its host (`docker update
--cpu-quota --cpu-period`) and reads the same throttling counters back (its stats); the
engine's own limit is journaled and put back (none: `--cpu-quota -1`).
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
    from chaoslab.targets.containers import EngineContainer

MECHANISM = "cgroup CFS bandwidth (cpu.max / cpu.cfs_quota_us)"
ENGINE_MECHANISM = "the engine's CPU limit (docker update: CFS bandwidth on its host)"
DEFAULT_PERIOD_US = 100_000  # the kernel's, and the engine's when a container has none


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

    through_engine = True

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self.container = target.container  # on a remote engine: limited through its API
        self.dir = Path() if self.container is not None else cpu_dir(target.cgroup.dirs)
        self.previous: CpuLimit | None = None
        self.applied = False
        self.stat_before: dict[str, int] = {}
        self.sched_before = (0, 0, 0)
        self.cpu_before = 0

    @property
    def limit(self) -> CpuLimit:
        period_us = round(self.spec.period * 1e6)
        return CpuLimit(max(1000, round(self.spec.cpus * period_us)), period_us)

    def locks(self) -> dict[str, str]:
        if self.container is not None:
            return super().locks()
        return super().locks() | {f"cgroup:{self.dir}": f"the cgroup of {self.target.name} ({self.dir})"}

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("the cpu fault needs root (cgroup files)", "run chaoslab with sudo")
        if self.container is not None:
            quota, period, nano = self.container.cpu_limit()
            if nano:
                raise PreflightError(
                    f"{self.spec.path}: container {self.container.name} has a limit in CPUs (--cpus "
                    f"{nano / 1e9:g}), which the engine does not let a quota change",
                    "start it without --cpus (a quota and period instead), or leave this fault out",
                )
            self.previous = CpuLimit(quota, period)
            return
        own_cgroup(self.target, "a CPU limit")
        check_cpu_files(self.dir)
        self.previous = read_cpu_limit(self.dir)

    def plan(self) -> list[str]:
        if self.container is not None:
            name, lim = self.container.name, self.limit
            return [
                f"mechanism: {ENGINE_MECHANISM}, through the {self.target.remote}'s API",
                f"docker update --cpu-period {lim.period_us} --cpu-quota {lim.quota_us} {name}",
                "revert: docker update back to the limit read at preflight (none: --cpu-quota -1)",
            ]
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
        if self.container is not None:
            return {
                **self.container.record,
                "quota_us": self.previous.quota_us,
                "period_us": self.previous.period_us,
            }
        return {
            "dir": str(self.dir),
            "quota_us": self.previous.quota_us,
            "period_us": self.previous.period_us,
        }

    def apply(self, note: Callable[..., None]) -> None:
        if self.container is not None:
            self.stat_before = self.container.throttling()
            self.cpu_before = self.container.cpu_ns()
            self.applied = True
            self.container.set_cpu_limit(self.limit.quota_us, self.limit.period_us)
            if self.container.cpu_limit()[:2] != (self.limit.quota_us, self.limit.period_us):
                raise FaultError(f"container {self.container.name}: the engine did not take the CPU limit")
            return
        self.stat_before = cpu_stat(self.dir)
        self.sched_before = proc.schedstat(self.target.cgroup.pids())
        self.applied = True
        write_cpu_limit(self.dir, self.limit)
        if read_cpu_limit(self.dir) != self.limit:
            raise FaultError(f"{self.dir}: the CPU limit did not take ({read_cpu_limit(self.dir).render()})")

    def verify(self) -> Verification:
        if self.container is not None:
            return self._verify_there(self.container)
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

    def _verify_there(self, c: EngineContainer) -> Verification:
        st, b = c.throttling(), self.stat_before
        throttled = st["throttled_periods"] - b.get("throttled_periods", 0)
        periods = st["periods"] - b.get("periods", 0)
        throttled_ms = (st["throttled_time"] - b.get("throttled_time", 0)) / 1e6
        cpu_ms = (c.cpu_ns() - self.cpu_before) / 1e6
        measured = {
            "nr_periods": float(periods),
            "nr_throttled": float(throttled),
            "throttled_ms": round(throttled_ms, 3),
            "cpu_ms": round(cpu_ms, 3),
        }
        detail = (
            f"limit {self.limit.render()} (the engine's): throttled in {throttled} of {periods} periods "
            f"({throttled_ms:.0f} ms), the container used {cpu_ms:.0f} ms CPU"
        )
        return Verification(throttled > 0, detail, ENGINE_MECHANISM, measured)

    def revert(self) -> None:
        if not self.applied or self.previous is None:
            return
        if self.container is not None:
            back = engine_limit(self.previous)
            self.container.set_cpu_limit(*back)
            if self.container.cpu_limit()[:2] != back:
                raise FaultError(
                    f"container {self.container.name}: the engine did not put back its CPU limit"
                )
            self.applied = False
            return
        if self.dir.exists():
            write_cpu_limit(self.dir, self.previous)
            if read_cpu_limit(self.dir) != self.previous:
                raise FaultError(f"{self.dir}: could not restore {self.previous.render()}")
        self.applied = False

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        if record.get("engine"):
            return _recover_there(record)
        d, quota, period = record.get("dir"), record.get("quota_us"), record.get("period_us")
        if not (isinstance(d, str) and isinstance(quota, int) and isinstance(period, int)):
            return []
        path, previous = Path(d), CpuLimit(quota, period)
        if not path.exists() or read_cpu_limit(path) == previous:
            return []
        write_cpu_limit(path, previous)
        return [f"restored {previous.render()} on {path}"]


def engine_limit(limit: CpuLimit) -> tuple[int, int]:
    """What the engine is given to put a limit back: an unset quota is -1 (no limit), an unset
    period the default."""
    return (limit.quota_us if limit.quota_us > 0 else -1, limit.period_us or DEFAULT_PERIOD_US)


def _recover_there(record: Mapping[str, object]) -> list[str]:
    """A CPU limit a dead run left on a remote engine's container: the engine's own put back."""
    import docker.errors

    from chaoslab.targets.containers import EngineContainer

    quota, period = record.get("quota_us"), record.get("period_us")
    if not (isinstance(quota, int) and isinstance(period, int)):
        return []
    back = engine_limit(CpuLimit(quota, period))
    with EngineContainer.of_record(record) as c:
        name = record.get("container_name")
        try:
            now = c.cpu_limit()[:2]
            if now == back or (back[0] == -1 and now[0] in (0, -1)):
                return []
            c.set_cpu_limit(*back)
        except docker.errors.NotFound:
            return []
        return [f"restored the CPU limit of container {name} on the {c.engine}"]
