"""Attach every applicable probe to a run's targets; snapshot them all at phase boundaries."""

from __future__ import annotations

import time
from collections.abc import Iterable

from chaoslab.errors import ChaoslabError, PreflightError
from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.base import Probe, Stall
from chaoslab.targets.base import RunningTarget

# (layer, target, metric) -> cumulative histogram; metric "" is the layer as a whole
Snapshot = dict[tuple[Layer, str, str], Histogram]


class ProbeSet:
    def __init__(self, probe_types: Iterable[type[Probe]], targets: dict[str, RunningTarget]) -> None:
        self.probes: list[Probe] = []
        # (epoch seconds, {(layer, target): cumulative stalled seconds}), one entry per `sample`
        self.samples: list[tuple[float, dict[tuple[Layer, str], float]]] = []
        self._plan = [(cls, [t for t in targets.values() if cls.applies_to(t)]) for cls in probe_types]
        # (layer, target) -> why that layer is not measured there (it could not attach)
        self.unavailable: dict[tuple[Layer, str], str] = {
            (cls.layer, t.name): why
            for cls in probe_types
            for t in targets.values()
            if (why := cls.unavailable_for(t)) is not None
        }

    def attach(self, required: Iterable[str] = ()) -> list[str]:
        """Attach every probe that can; returns one line per probe for the run log.

        A probe that cannot attach on this kernel does not stop the run: its layer is left
        out and listed in `unavailable`, so the verdicts that need it say why they cannot be
        drawn. A layer in `required` that cannot attach stops the run before any load.
        """
        lines = []
        for cls, targets in self._plan:
            if not targets:
                continue
            probe = cls()
            try:
                obj = probe.load()
                for i, t in enumerate(targets):
                    obj.update_u32("targets", t.pid, i)
                    probe.index[i] = t.name
                probe.attach(obj, targets)
            except ChaoslabError as exc:
                probe.close()
                for t in targets:
                    self.unavailable[(cls.layer, t.name)] = exc.message
                lines.append(f"probe {cls.layer}: NOT attached, the run goes on without it: {exc.message}")
                continue
            self.probes.append(probe)
            lines.append(f"probe {cls.layer}: {', '.join(t.name for t in targets)} ({probe.describe()})")
        missing = sorted({str(layer) for layer, _ in self.unavailable} & set(required))
        if missing:
            why = "; ".join(
                f"{lay} at {t}: {r}" for (lay, t), r in self.unavailable.items() if lay in missing
            )
            raise PreflightError(
                f"required layer{'s' if len(missing) > 1 else ''} {', '.join(missing)} cannot attach: {why}",
                "remove it from probes.required to run without it, or run on a kernel that has it "
                "(README: supported kernels)",
            )
        return lines

    def retarget(self, target: RunningTarget) -> None:
        """A target was restarted: follow its new process (its old one is gone)."""
        for probe in self.probes:
            index = next((i for i, name in probe.index.items() if name == target.name), None)
            if index is None or probe.obj is None:
                continue
            probe.obj.update_u32("targets", target.pid, index)
            if probe.per_process:
                probe.attach(probe.obj, [target])

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for probe in self.probes:
            for (target, metric), hist in probe.snapshot().items():
                out[(probe.layer, target, metric)] = hist
        return out

    def sample(self) -> None:
        """Read the stall counters: called on every tick of the run."""
        now = time.time()
        values = {(p.layer, t): s for p in self.probes for t, s in p.stalled_seconds().items()}
        if values:
            self.samples.append((now, values))

    def stalls(self) -> list[tuple[Layer, Stall]]:
        return [(p.layer, s) for p in self.probes for s in p.stalls()]

    def close(self) -> None:
        for probe in self.probes:
            probe.close()
        self.probes.clear()
