"""What every probe does: say where it applies, attach, snapshot its histograms, close.

A probe measures one layer. It may split the layer into named metrics (a syscall, a
connect, a stop-the-world pause); the BPF side keys them as `index | metric << 8`
(bpf/chaoslab.bpf.h). The layer as a whole is metric "" in a snapshot: the probe's
metric 0 when it records no metrics, else the sum of the metrics that `in_layer` accepts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget

HIST_SUM = 0xFFFFFFFF
LAYER = ""  # the metric name of the layer as a whole

Series = dict[tuple[str, str], Histogram]  # (target, metric) -> histogram


@dataclass(frozen=True)
class Stall:
    """A stall of a whole target (e.g. frozen): every request in flight waits it out."""

    target: str
    metric: str
    start: float  # epoch seconds
    end: float


class Probe(ABC):
    layer: ClassVar[Layer]
    program: ClassVar[str]  # bpf/<program>.bpf.c
    mechanism: ClassVar[str]
    # Attached per process (uprobes): a restarted target needs `attach` again.
    per_process: ClassVar[bool] = False
    metrics: ClassVar[dict[int, str]] = {}  # metric id -> name; empty: one metric, the layer

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.index: dict[int, str] = {}  # target index in the BPF maps -> target name

    @classmethod
    @abstractmethod
    def applies_to(cls, target: RunningTarget) -> bool: ...

    @abstractmethod
    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        """Attach `obj`'s programs for these targets (the `targets` map is already filled)."""

    def metric_name(self, metric: int) -> str:
        return self.metrics.get(metric, f"metric {metric}")

    def in_layer(self, metric: int) -> bool:
        """Whether a metric's time is part of the layer's time (counts-only metrics are not)."""
        return True

    def stalls(self) -> list[Stall]:
        """Process-wide stalls seen since attach (most probes have none)."""
        return []

    def stalled_seconds(self) -> dict[str, float]:
        """Cumulative seconds each target was stalled as a whole, sampled while the run goes on."""
        return {}

    def snapshot(self) -> Series:
        """Cumulative histograms per (target, metric) since attach."""
        raw: dict[tuple[int, int], Histogram] = {}
        if self.obj is not None:
            for key, bucket, value in self.obj.items_u32x2_u64("hist"):
                h = raw.setdefault((key & 0xFF, key >> 8), Histogram())
                if bucket == HIST_SUM:
                    h.sum_ns += value
                else:
                    h.buckets[bucket] = value
        out: Series = {(name, LAYER): Histogram() for name in self.index.values()}
        for (index, metric), h in raw.items():
            name = self.index.get(index)
            if name is None:
                continue
            if metric == 0:  # a probe without metrics records the layer itself
                out[(name, LAYER)] = h
                continue
            out[(name, self.metric_name(metric))] = h
            if self.in_layer(metric):
                out[(name, LAYER)] = out[(name, LAYER)] + h
        return out

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
