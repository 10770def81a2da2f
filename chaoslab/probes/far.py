"""The probes at a remote Docker engine's targets: attached on the engine's host by chaoslab's
helper there (chaoslab/agent.py), with the same probe code as on this machine, and read at the
same moments: `snapshot` at phase boundaries and for the stop conditions, the stall layers'
state on every tick.

The helper picks them from what the scenario wants measured (`choose.needs`, computed here)
with `choose.pick` on the targets as its host sees them. What comes back is histograms and
stalls; the kernel's run-time statistics of the programs, and so the probes' cost budget, stay
on the engine's host (the README says so).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from chaoslab import wire
from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.base import Stall

if TYPE_CHECKING:
    from chaoslab.probes.set import Snapshot
    from chaoslab.targets.base import RunningTarget
    from chaoslab.targets.hosthelper import HostHelper

StallState = tuple[list[tuple[Layer, str, float]], list[tuple[Layer, Stall]], dict[tuple[Layer, str], float]]
SAME_TICK = 0.05  # seconds within which two reads of the stalls are one tick's
ATTACH_TIMEOUT = 120.0  # BPF objects loaded and verified, uprobes placed, on a slow host
READ_TIMEOUT = 30.0


class FarProbes:
    def __init__(self, helper: HostHelper, targets: Iterable[RunningTarget]) -> None:
        self.helper = helper
        self.targets = list(targets)
        self.lines: list[str] = []  # one per probe ("entropy: ..."), as the run lists its own
        self.measured: set[tuple[Layer, str]] = set()
        self.unmeasured: dict[tuple[Layer, str], str] = {}
        self._last: Snapshot = {}
        self._stalls: tuple[float, StallState] | None = None

    def attach(
        self,
        wanted: Mapping[tuple[Layer, str | None], str],
        listed: Iterable[str] | None,
        required: Iterable[str],
    ) -> list[str]:
        from chaoslab.targets.hosthelper import described

        reply = self.helper.call(
            "probes",
            ATTACH_TIMEOUT,
            targets=[described(t) for t in self.targets],
            wanted=[[str(layer), t, why] for (layer, t), why in wanted.items()],
            listed=None if listed is None else list(listed),
            required=list(required),
        )
        where = self.helper.engine.host
        seen: dict[str, None] = {}
        for layer, t, line in reply.get("measured", []):
            self.measured.add((Layer(layer), t))
            seen[f"{line} (on {where})"] = None
        self.lines = list(seen)
        self.unmeasured = {
            (Layer(layer), t): f"on {where}: {why}" for layer, t, why in reply.get("unmeasured", [])
        }
        return [f"{line} (on {where}, from chaoslab's helper)" for line in reply.get("lines", [])]

    def stall_state(self) -> StallState:
        """The stall layers there: stalls in progress (layer, target, start), those ended, and
        each target's stalled seconds so far; their times moved onto this machine's clock."""
        if not self.measured:
            return [], [], {}
        now = time.monotonic()
        if self._stalls is not None and now - self._stalls[0] < SAME_TICK:
            return self._stalls[1]  # one round trip a tick: `sample` and `stall_state` share it
        reply = self.helper.call("stalls", READ_TIMEOUT)
        off = self.helper.offset  # its clock, on this one's
        ongoing = [(Layer(layer), t, float(start) - off) for layer, t, start in reply.get("ongoing", [])]
        ended = [
            (Layer(layer), replace(s, start=s.start - off, end=s.end - off))
            for layer, s in ((layer, wire.load(Stall, x)) for layer, x in reply.get("stalls", []))
        ]
        stalled = {(Layer(layer), t): float(secs) for layer, t, secs in reply.get("stalled", [])}
        self._stalls = (now, (ongoing, ended, stalled))
        return ongoing, ended, stalled

    def retarget(self, target: RunningTarget) -> None:
        """One of its targets was restarted: its probes follow the new process there."""
        from chaoslab.targets.hosthelper import described

        if any(t.name == target.name for t in self.targets) and self.measured:
            self.helper.call("retarget", ATTACH_TIMEOUT, target=described(target))

    def snapshot(self) -> Snapshot:
        if not self.measured:
            return {}
        reply = self.helper.call("snapshot", READ_TIMEOUT)
        self._last = _snapshot(reply.get("snapshot", []))
        return self._last


def _snapshot(rows: list[Any]) -> Snapshot:
    return {(Layer(layer), t, metric): Histogram.from_json(h) for layer, t, metric, h in rows}
