"""Attach every applicable probe to a run's targets; snapshot them all at phase boundaries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chaoslab.errors import ChaoslabError, PreflightError
from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.base import Probe, Stall
from chaoslab.probes.cost import NO_TRAPS, TrapCost, Usage, other_run_cost, target_runs, trap_cost, usage
from chaoslab.probes.far import FarProbes
from chaoslab.probes.stats import STATS
from chaoslab.report.model import ObserverCost
from chaoslab.scenario.model import ProbeBudget as Budget
from chaoslab.targets.base import RunningTarget

# (layer, target, metric) -> cumulative histogram; metric "" is the layer as a whole
Snapshot = dict[tuple[Layer, str, str], Histogram]

POLICE_EVERY = 1.0  # seconds between two looks at the probes' cost
POLICE_MIN_REQUESTS = 50  # ... over at least this many requests


@dataclass
class Sampled:
    """What a probe's targets did while the kernel's statistics ran (`chaoslab.probes.stats`)."""

    since: float  # monotonic seconds it attached
    on_runs: int = 0  # target runs counted in closed windows
    on_seconds: float = 0.0
    opened: tuple[int, float] | None = None  # (target runs, monotonic) at the open window's start


@dataclass
class Lost:
    at: float  # epoch seconds it was detached
    reason: str


class ProbeSet:
    def __init__(
        self,
        probe_types: Iterable[type[Probe]],
        targets: dict[str, RunningTarget],
        only: Mapping[tuple[type[Probe], str], str] | None = None,
        budget: Budget | None = None,
    ) -> None:
        """Every probe of `probe_types` where it applies, or (`only`) at the targets it names,
        with why (`chaoslab.probes.choose`)."""
        self.probes: list[Probe] = []
        # (epoch seconds, {(layer, target): cumulative stalled seconds}), one entry per `sample`
        self.samples: list[tuple[float, dict[tuple[Layer, str], float]]] = []
        types = tuple(probe_types)

        def planned(cls: type[Probe], t: RunningTarget) -> bool:
            return cls.applies_to(t) if only is None else (cls, t.name) in only

        self._plan = [(cls, [t for t in targets.values() if planned(cls, t)]) for cls in types]
        self.why = dict(only or {})
        # (layer, target) -> why that layer is not measured there (it could not attach)
        self.unavailable: dict[tuple[Layer, str], str] = {
            (cls.layer, t.name): why
            for cls in types
            for t in targets.values()
            if (only is None or (cls, t.name) in only) and (why := cls.unavailable_for(t)) is not None
        }
        self.budget = budget or Budget()
        self.far: list[FarProbes] = []  # the probes at remote engines' targets (probes/far.py)
        self.lost: dict[Probe, Lost] = {}  # detached mid-run by the kill switch
        self.retired: list[tuple[Probe, Usage]] = []  # detached probes and their use until then
        self._sampling = False  # the kernel's statistics sampled for this set
        self._sampled: dict[Probe, Sampled] = {}
        self.other_run_ns = 0.0  # a tracepoint program's run for another process (cost.other_run_cost)
        # the sampler's thread reads the probes' maps at its edges: never while one closes
        self._lock = threading.RLock()
        self._warned: set[Probe] = set()
        # the last look at the cost: (epoch seconds, records seen, their latency, usage)
        self._last: tuple[float, int, float, dict[Probe, Usage]] | None = None

    def attach(self, required: Iterable[str] = ()) -> list[str]:
        """Attach every probe that can; returns one line per probe for the run log.

        A probe that cannot attach on this kernel does not stop the run: its layer is left
        out and listed in `unavailable`, so the verdicts that need it say why they cannot be
        drawn. A layer in `required` that cannot attach stops the run before any load.
        """
        lines = []
        if any(targets for _, targets in self._plan):
            if any(targets and not cls.per_process for cls, targets in self._plan):
                # timed before any window: its hold would open one on the probes' first runs
                self.other_run_ns = other_run_cost()
            try:
                STATS.sample()
                self._sampling = True
                STATS.listen(self._edge)
            except ChaoslabError as exc:
                lines.append(f"probes' own cost: not measured ({exc.message})")
        for cls, targets in self._plan:
            if not targets:
                continue
            probe = cls()
            try:
                obj = probe.load()
                for i, t in enumerate(targets):
                    obj.add_target(t.pid, i)
                    probe.index[i] = t.name
                probe.attach(obj, targets)
            except ChaoslabError as exc:
                probe.close()
                for t in targets:
                    self.unavailable[(cls.layer, t.name)] = exc.message
                lines.append(f"probe {cls.layer}: NOT attached, the run goes on without it: {exc.message}")
                continue
            with self._lock:
                self.probes.append(probe)
                now, runs = time.monotonic(), sum(n for _, n in target_runs(obj, probe.index))
                self._sampled[probe] = Sampled(now, opened=(runs, now) if STATS.on else None)
            if probe.per_process:
                trap_cost()  # timed once, at start-up, not in the middle of a tick
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
        for far in self.far:
            far.retarget(target)
        for probe in self.probes:
            index = next((i for i, name in probe.index.items() if name == target.name), None)
            if index is None or probe.obj is None:
                continue
            probe.obj.add_target(target.pid, index)
            if probe.per_process:
                probe.attach(probe.obj, [target])

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for probe in self.probes:
            for (target, metric), hist in probe.snapshot().items():
                out[(probe.layer, target, metric)] = hist
        for far in self.far:  # a remote engine's targets, read by chaoslab's helper there
            out.update(far.snapshot())
        return out

    def sample(self) -> None:
        """Read the stall counters: called on every tick of the run."""
        now = time.time()
        values = {(p.layer, t): s for p in self.probes for t, s in p.stalled_seconds().items()}
        for far in self.far:
            values.update(far.stall_state()[2])
        if values:
            self.samples.append((now, values))

    def stalls(self) -> list[tuple[Layer, Stall]]:
        return [(p.layer, s) for p in self.probes for s in p.stalls()] + [
            s for far in self.far for s in far.stall_state()[1]
        ]

    def stall_state(self) -> tuple[list[tuple[Layer, str, float]], list[tuple[Layer, Stall]]]:
        """The stalls in progress (layer, target, start), then those ended: read in that order,
        so that a stall that ends between the two reads is in the second."""
        ongoing = [(p.layer, target, start) for p in self.probes for target, start in p.ongoing()]
        ended = [(p.layer, s) for p in self.probes for s in p.stalls()]
        for far in self.far:
            there, stalls, _ = far.stall_state()
            ongoing, ended = ongoing + there, ended + stalls
        return ongoing, ended

    def _edge(self, on: bool) -> None:
        """The kernel's statistics go on or off (called by the sampler, in its thread)."""
        now = time.monotonic()
        with self._lock:
            for probe in self.probes:
                s = self._sampled.get(probe)
                if s is None or probe.obj is None:
                    continue
                runs = sum(n for _, n in target_runs(probe.obj, probe.index))
                if on:
                    s.opened = (runs, now)
                elif s.opened is not None:
                    s.on_runs += runs - s.opened[0]
                    s.on_seconds += now - s.opened[1]
                    s.opened = None

    def _scale(self, probe: Probe) -> float:
        """From the statistics' windows to the whole time since the probe attached: its targets'
        runs (always counted) over their runs in the windows, or where they ran nothing in them,
        the time over the windows' time."""
        s = self._sampled.get(probe)
        if s is None or not self._sampling or probe.obj is None:
            return 1.0
        now = time.monotonic()
        runs = sum(n for _, n in target_runs(probe.obj, probe.index))
        on_runs, on_seconds = s.on_runs, s.on_seconds
        if s.opened is not None:
            on_runs += runs - s.opened[0]
            on_seconds += now - s.opened[1]
        if on_runs > 0:
            return runs / on_runs
        return (now - s.since) / on_seconds if on_seconds > 0 else 1.0

    def _usage(self, probe: Probe) -> Usage:
        """A probe's use since it attached."""
        assert probe.obj is not None
        return usage(probe.obj, probe.index, probe.emulated_entries, self._scale(probe))

    def usage(self) -> dict[Probe, Usage]:
        """Each attached probe's use of its targets' time since it attached."""
        with self._lock:
            return {p: self._usage(p) for p in self.probes if p.obj is not None}

    def police(self, done: int, done_s: float) -> list[str]:
        """The kill switch, called on every tick with the load's requests so far and the seconds
        they took: a probe whose cost over the last second passed the budget's limit, as a share
        of the time the requests of that second took, is detached, its layer lost from now on; one
        over the warning level is reported once."""
        now = time.time()
        if self._last is None:
            self._last = (now, done, done_s, self.usage())
            return []
        then, seen, seen_s, before = self._last
        if now - then < POLICE_EVERY or done - seen < POLICE_MIN_REQUESTS:
            return []
        fresh = done - seen
        latency = done_s - seen_s
        current = self.usage()
        self._last = (now, done, done_s, current)
        trap = self.trap_cost()
        out = []
        for probe, use in current.items():
            paid = self._paid_since(probe, use, before.get(probe), trap) / 1e9
            share = paid / latency if latency > 0 else 0.0
            where = ", ".join(probe.index.values())
            said = (
                f"{paid / fresh * 1e6:.0f} µs per request over the last {now - then:.1f} s, "
                f"{share:.0%} of the requests' time"
            )
            if share > self.budget.limit:
                reason = f"its cost, {said}, passed the limit of {self.budget.limit:.0%} (probes.limit)"
                self.detach(probe, reason)
                out.append(f"probe {probe.layer} at {where} DETACHED: {reason}; its layer is lost from here")
            elif share > self.budget.warn and probe not in self._warned:
                self._warned.add(probe)
                out.append(
                    f"probe {probe.layer} at {where} costs {said}, over the budget of "
                    f"{self.budget.warn:.0%} (probes.budget): the targets are slowed by being measured"
                )
        return out

    def _other(self, probe: Probe) -> float:
        """The cost of one of the probe's runs for another process: none for uprobes, which
        run in their targets' threads only."""
        return 0.0 if probe.per_process else self.other_run_ns

    def _paid_since(self, probe: Probe, use: Usage, before: Usage | None, trap: TrapCost) -> float:
        """What the targets paid (ns) between an earlier look and this one: the runs in between
        at the cost per run so far. Not the difference of the two estimates: each is scaled from
        the windows as they were then, so a difference would re-price the whole run."""
        paid = sum(use.paid_ns(trap, self._other(probe)).values())
        runs = sum(n for _, n in use.at)
        if before is None:
            return paid
        if runs > 0:
            return paid * (runs - sum(n for _, n in before.at)) / runs
        return max(0.0, paid - sum(before.paid_ns(trap, self._other(probe)).values()))

    def costs(self, requests: int, latency_s: float) -> list[ObserverCost]:
        """Each probe's cost over the run so far, detached ones included (call before `close`):
        per request of the `requests` the load completed, and as a share of the time they took."""
        trap = self.trap_cost()
        latency_ns = latency_s * 1e9
        rows = []
        for probe, use in [*self.retired, *self.usage().items()]:
            paid = use.paid_ns(trap, self._other(probe))
            per_request = sum(paid.values()) / requests / 1000 if requests else 0.0
            share = sum(paid.values()) / latency_ns if latency_ns > 0 else 0.0
            lost = self.lost.get(probe)
            rows.append(
                ObserverCost(
                    str(probe.layer),
                    list(probe.index.values()),
                    probe.describe(),
                    self.why_attached(probe),
                    use.runs,
                    round(use.bpf_ns / 1e6, 3),
                    use.traps,
                    round(use.trap_ns(trap) / 1e6, 3),
                    {t: round(ns / 1e6, 3) for t, ns in paid.items()},
                    round(per_request, 3),
                    round(share, 4),
                    share > self.budget.warn,
                    lost.at if lost else None,
                    lost.reason if lost else "",
                    use.dropped,
                )
            )
        return rows

    def trap_cost(self) -> TrapCost:
        """The uprobe trap cost, timed when uprobes were attached; none without them."""
        return trap_cost() if any(p.per_process for p in [*self.probes, *self.lost]) else NO_TRAPS

    def why_attached(self, probe: Probe) -> str:
        reasons = dict.fromkeys(
            self.why[(type(probe), t)] for t in probe.index.values() if (type(probe), t) in self.why
        )
        return "; ".join(reasons)

    def detach(self, probe: Probe, reason: str) -> None:
        with self._lock:
            if probe.obj is not None:
                self.retired.append((probe, self._usage(probe)))
            probe.close()
            self.probes.remove(probe)
        self.lost[probe] = Lost(time.time(), reason)
        gone = {(probe.layer, t) for t in probe.index.values()}
        self.samples = [(at, {k: v for k, v in vals.items() if k not in gone}) for at, vals in self.samples]

    def close(self) -> None:
        # first the sampler (it takes the gate's lock, then this set's): then the probes
        if self._sampling:
            STATS.unlisten(self._edge)
        with self._lock:
            for probe in self.probes:
                if probe.obj is not None:
                    self.retired.append((probe, self._usage(probe)))
                probe.close()
            self.probes.clear()
        if self._sampling:
            STATS.unsample()
            self._sampling = False
