"""What every probe does: say where it applies, attach, snapshot its histograms, close.

A probe measures one layer. It may split the layer into named metrics (a syscall, a
connect, a stop-the-world pause); the BPF side keys them as `index | metric << 8`
(bpf/chaoslab.bpf.h). The layer as a whole is metric "" in a snapshot: the probe's
metric 0 when it records no metrics, else the sum of the metrics that `in_layer` accepts.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from chaoslab import build
from chaoslab.errors import PreflightError
from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.libbpf import BpfObject, attachable, program_names
from chaoslab.targets.base import RunningTarget

LAYER = ""  # the metric name of the layer as a whole

Series = dict[tuple[str, str], Histogram]  # (target, metric) -> histogram


@dataclass(frozen=True)
class Stall:
    """A stall of a whole target (e.g. frozen): every request in flight waits it out."""

    target: str
    metric: str
    start: float  # epoch seconds
    end: float


@dataclass(frozen=True)
class Way:
    """One way of seeing a hook: a program of the probe's object and what it attaches to."""

    program: str  # its name in bpf/<program>.bpf.c
    mechanism: str  # for people: "raw tracepoint tcp_sendmsg_locked"


@dataclass(frozen=True)
class Hook:
    """A point in the kernel a probe must see, with the ways kernels offer to see it, best first.

    Kernels differ: a tracepoint that 6.18 has may be missing on 6.1, where fentry (BPF
    trampolines) or a kprobe on the function reaches the same point. The probe takes the
    first way that loads and attaches here, checked for real (`libbpf.attachable`).
    """

    what: str  # "send", "receive"
    ways: tuple[Way, ...]


class LayerUnavailable(PreflightError):
    """A probe cannot measure its layer on this kernel (or for this target)."""


def kernel() -> str:
    return os.uname().release


class Probe(ABC):
    layer: ClassVar[Layer]
    program: ClassVar[str]  # bpf/<program>.bpf.c
    mechanism: ClassVar[str]
    # Points the probe must see, each with its alternatives; the object's other programs
    # are attached as they are.
    hooks: ClassVar[tuple[Hook, ...]] = ()
    # Attached per process (uprobes): a restarted target needs `attach` again.
    per_process: ClassVar[bool] = False
    metrics: ClassVar[dict[int, str]] = {}  # metric id -> name; empty: one metric, the layer

    def __init__(self) -> None:
        # its entry uprobes sit on instructions the kernel emulates (chaoslab.probes.cost)
        self.emulated_entries = False
        self.obj: BpfObject | None = None
        self.index: dict[int, str] = {}  # target index in the BPF maps -> target name
        self.chosen: dict[str, Way] = {}  # hook -> the way taken on this kernel

    @classmethod
    def choose(cls) -> dict[str, Way]:
        """The first way of each hook that attaches on this kernel; LayerUnavailable if one has none."""
        path = build.bpf_object(cls.program)
        chosen: dict[str, Way] = {}
        for hook in cls.hooks:
            why = []
            for way in hook.ways:
                reason = attachable(path, way.program)
                if reason is None:
                    chosen[hook.what] = way
                    break
                why.append(f"{way.mechanism}: {reason}")
            else:
                raise LayerUnavailable(
                    f"the {cls.layer} layer cannot see {hook.what} on kernel {kernel()} ({'; '.join(why)})",
                    "see the README's supported kernels",
                )
        return chosen

    @classmethod
    def attach_check(cls, exe: Path | None = None) -> str:
        """Attach every program the probe needs on this kernel, for real, and detach again; returns
        the ways taken (`chaoslab probes`). Raises LayerUnavailable. `exe`: a binary to probe."""
        chosen = cls.choose()
        path = build.bpf_object(cls.program)
        hooked = {w.program for h in cls.hooks for w in h.ways}
        for name in program_names(path):
            reason = None if name in hooked else attachable(path, name)
            if reason is not None:
                raise LayerUnavailable(f"the {cls.layer} layer cannot attach on kernel {kernel()}: {reason}")
        return ", ".join(f"{hook}: {way.mechanism}" for hook, way in chosen.items())

    def load(self) -> BpfObject:
        """Load the object with the chosen way of each hook (the others are not loaded)."""
        self.chosen = self.choose()
        taken = {w.program for w in self.chosen.values()}
        skip = {w.program for h in self.hooks for w in h.ways} - taken
        self.obj = BpfObject(build.bpf_object(self.program), skip=skip)
        return self.obj

    def describe(self) -> str:
        """The mechanism as used in this run: the probe's, with the way taken for each hook."""
        ways = ", ".join(f"{hook}: {way.mechanism}" for hook, way in self.chosen.items())
        return f"{self.mechanism}; {ways}" if ways else self.mechanism

    @classmethod
    @abstractmethod
    def applies_to(cls, target: RunningTarget) -> bool: ...

    @classmethod
    def unavailable_for(cls, target: RunningTarget) -> str | None:
        """Why the layer should be measured on `target` but cannot be (e.g. a stripped Go
        binary), or None (it applies, or the layer has no meaning there)."""
        return None

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

    def ongoing(self) -> list[tuple[str, float]]:
        """The stalls in progress, (target, start): each is in `stalls` once it ends."""
        return []

    def stalled_seconds(self) -> dict[str, float]:
        """Cumulative seconds each target was stalled as a whole, sampled while the run goes on."""
        return {}

    def snapshot(self) -> Series:
        """Cumulative histograms per (target, metric) since attach."""
        raw: dict[tuple[int, int], Histogram] = {}
        if self.obj is not None:
            for key, bucket, count, sum_ns in self.obj.hist_items():
                h = raw.setdefault((key & 0xFF, key >> 8), Histogram())
                h.buckets[bucket] = count
                h.sum_ns += sum_ns
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
