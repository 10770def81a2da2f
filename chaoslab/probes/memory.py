"""The memory layer: time the target's threads spend reclaiming memory (their cgroup at its
limit, or the machine short of it) before they can go on."""

from __future__ import annotations

from typing import ClassVar

from chaoslab.layers import Layer
from chaoslab.probes.base import Probe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget


class MemoryProbe(Probe):
    layer = Layer.MEMORY
    program = "mm"
    mechanism = (
        "raw tracepoints mm_vmscan_memcg_reclaim_begin/end and mm_vmscan_direct_reclaim_begin/end, "
        "filtered by tgid"
    )
    metrics: ClassVar[dict[int, str]] = {1: "memcg reclaim", 2: "direct reclaim"}

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return True

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        obj.attach_all()
