"""The cpu layer: run-queue time of the target's threads, freezer stops, CFS throttling."""

from __future__ import annotations

import struct
import time
from typing import ClassVar

from chaoslab.hist import Histogram, bucket_of
from chaoslab.layers import Layer
from chaoslab.probes.base import Probe, Series, Stall
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.cgroup import cpu_dir, cpu_stat

THROTTLED = "cfs throttled"
FROZEN = 2
STALLED = "starved"  # the name of the sampled stall series
STALL_SLOTS = 64  # STALLS in bpf/sched.bpf.c


class CpuProbe(Probe):
    layer = Layer.CPU
    program = "sched"
    mechanism = (
        "raw tracepoints sched_wakeup/sched_switch (CO-RE task fields), filtered by tgid; "
        "CFS throttling from the cgroup's cpu.stat"
    )
    metrics: ClassVar[dict[int, str]] = {1: "run-queue", 2: "frozen"}

    def __init__(self) -> None:
        super().__init__()
        self.targets: dict[str, RunningTarget] = {}
        # throttling counters per target: the last reading, and what earlier cgroups counted
        # (a restarted container has a new cgroup whose counters start at 0)
        self._last: dict[str, tuple[int, int]] = {}
        self._earlier: dict[str, tuple[int, int]] = {}
        # epoch seconds at CLOCK_MONOTONIC 0 (bpf_ktime_get_ns), taken once: a freeze read in
        # progress and read again once it ended has the same start to the last bit
        self._wall = time.time() - time.monotonic()

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return True

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        self.targets.update({t.name: t for t in targets})
        obj.attach_all()

    def in_layer(self, metric: int) -> bool:
        """None: the layer's time is its stalls (frozen, starved), weighed by the requests they held.

        Per-thread run-queue waits stay a metric: adding them would count a starved target twice.
        """
        return False

    def stalled_seconds(self) -> dict[str, float]:
        """Cumulative seconds each target had threads waiting to run and none running."""
        out: dict[str, float] = {}
        if self.obj is None:
            return out
        now_ns = time.monotonic_ns()
        for index, name in self.index.items():
            raw = self.obj.lookup_bytes("stalled", index, 32)
            if raw is None:
                continue
            _waiting, _running, since, stalled = struct.unpack("<qqQQ", raw)
            out[name] = (stalled + (max(0, now_ns - since) if since else 0)) / 1e9
        return out

    def ongoing(self) -> list[tuple[str, float]]:
        """The freezes in progress: (target, start), started and not yet ended (`stalls` has
        them once they end)."""
        if self.obj is None:
            return []
        out = []
        for index, name in self.index.items():
            raw = self.obj.lookup_bytes("freezes", index, 24)
            if raw is None:
                continue
            since, threads, recorded = struct.unpack("<QqQ", raw)
            if since and threads > 0 and not recorded:
                out.append((name, since / 1e9 + self._wall))
        return out

    def stalls(self) -> list[Stall]:
        if self.obj is None:
            return []
        wall = self._wall  # bpf_ktime_get_ns is CLOCK_MONOTONIC
        out = []
        for slot in range(STALL_SLOTS):
            raw = self.obj.lookup_bytes("stalls", slot, 24)
            if raw is None:
                continue
            index, start, end = struct.unpack("<QQQ", raw)
            name = self.index.get(index - 1)
            if index and name is not None:
                out.append(Stall(name, self.metrics[FROZEN], start / 1e9 + wall, end / 1e9 + wall))
        return sorted(out, key=lambda s: s.start)

    def _throttled(self, name: str, t: RunningTarget) -> tuple[int, int]:
        """Throttled periods and microseconds of the target's cgroups so far, counting on across a
        restart (a new cgroup) and holding still while it has none (a container killed and kept
        down: its cgroup is gone)."""
        last, earlier = self._last.get(name, (0, 0)), self._earlier.get(name, (0, 0))
        try:
            stat = cpu_stat(cpu_dir(t.cgroup.dirs))
        except OSError:
            return earlier[0] + last[0], earlier[1] + last[1]
        now = (stat["nr_throttled"], stat["throttled_us"])
        if now[0] < last[0] or now[1] < last[1]:
            earlier = self._earlier[name] = (earlier[0] + last[0], earlier[1] + last[1])
        self._last[name] = now
        return earlier[0] + now[0], earlier[1] + now[1]

    def snapshot(self) -> Series:
        """Adds the cgroup's throttled periods (count) and throttled time (sum); not part of the layer
        total, since throttled threads already wait in the run-queue metric."""
        out = super().snapshot()
        for name, t in self.targets.items():
            n, us = self._throttled(name, t)
            total_ns = us * 1000
            h = Histogram({bucket_of(total_ns // n): n} if n else {}, total_ns)
            out[(name, THROTTLED)] = h
        return out
