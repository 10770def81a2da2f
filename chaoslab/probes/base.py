"""What every probe does: say where it applies, attach, snapshot its histograms, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget

HIST_SUM = 0xFFFFFFFF


class Probe(ABC):
    layer: ClassVar[Layer]
    program: ClassVar[str]  # bpf/<program>.bpf.c
    mechanism: ClassVar[str]
    # Attached per process (uprobes): a restarted target needs `attach` again.
    per_process: ClassVar[bool] = False

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.index: dict[int, str] = {}  # target index in the BPF maps -> target name

    @classmethod
    @abstractmethod
    def applies_to(cls, target: RunningTarget) -> bool: ...

    @abstractmethod
    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        """Attach `obj`'s programs for these targets (the `targets` map is already filled)."""

    def snapshot(self) -> dict[str, Histogram]:
        """Cumulative histograms per target name since attach."""
        out: dict[str, Histogram] = {name: Histogram() for name in self.index.values()}
        if self.obj is None:
            return out
        for target, bucket, value in self.obj.items_u32x2_u64("hist"):
            name = self.index.get(target)
            if name is None:
                continue
            if bucket == HIST_SUM:
                out[name].sum_ns += value
            else:
                out[name].buckets[bucket] = value
        return out

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
