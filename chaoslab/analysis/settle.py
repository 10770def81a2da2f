"""The run's analysis, filled while the run goes on: each request goes into the client's tallies
(tally.RunTally) and the request-seconds in flight (attribution.InFlight) as it arrives, so that
the end of a run has only the last moment's requests left to count, whatever its length.

A request's place depends on bounds the run sets as it goes: a phase begins once its faults are
in place and ends at its revert or at a trip; a stall's tick runs from one sample of the probes'
counters to the next; a freeze runs from its first thread frozen to its first thawed. A request
is therefore counted only once every bound before its end is known: the run loop publishes a
horizon on each tick (`advance`), and a request that ends after it is held until it passes.

Why that is exact:
- the run loop advances the horizon to the time its tick began, after that tick's checks (a
  trip seen in the tick is later than the horizon, and so is a trip of the watchdog, which
  follows a silence after the tick's heartbeat), and only inside a phase, up to the phase's
  scheduled end: a phase's start and end are never before a request already counted;
- a sample, a freeze begun or a freeze ended before the horizon was read before it was
  published (the tick samples, then reads the freezes in progress, then those ended);
- an interval whose end is not known yet is counted up to each request's end (the request
  ends before the interval does), and keeps its count when its end becomes known.

`finish` takes the final bounds and counts what is left. Should a span the analysis needs be
missing (a freeze the live reads never saw, with the probe's 64 slots overrun), `complete` says
so and the orchestrator counts the run again, in one pass over its records on disk.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoslab.analysis.attribution import InFlight, Stalls
from chaoslab.analysis.tally import RunTally, Tally
from chaoslab.layers import Layer
from chaoslab.load.records import Request
from chaoslab.probes.base import Stall

StallKey = tuple[Layer, str, float]  # layer, target, start
Sample = tuple[float, object]  # a sample of the probes' stall counters: its time, its values


@dataclass
class _Freeze:
    layer: Layer
    stall: Stall | None  # None while in progress
    start: float
    seen: float  # in progress at least until then (the last read that found it so)

    @property
    def end(self) -> float | None:
        return self.stall.end if self.stall is not None else None


class Settler:
    def __init__(self, names: Sequence[str], t0: float = 0.0) -> None:
        self.tally = RunTally([], t0, names)
        self.flight = InFlight()
        self.horizon = -math.inf
        self.held_most = 0  # the most requests held back at once
        self.at_end = 0  # the requests held when the run ended: what `finish` counts
        self._lock = threading.Lock()
        self._held: list[Request] = []
        self._until: float | None = None  # the open phase's scheduled end; None: no phase open
        self._window = -1  # the open phase's window in `flight`
        self._samples = 0  # sample times taken in so far
        self._ticks: list[tuple[float, float]] = []
        self._ends: list[float] = []  # the ticks' ends, for bisect
        self._tick_end: dict[float, float] = {}
        self._last: float | None = None  # the open tick's start: the newest sample
        self._freezes: dict[StallKey, _Freeze] = {}
        # the frozen part of a tick (tick start, freeze) being counted while its end is unknown
        self._parts: dict[tuple[float, StallKey], str] = {}

    # -- requests (the load's tail threads)
    def add(self, batch: Iterable[Request]) -> None:
        with self._lock:
            h = self.horizon
            for r in batch:
                if r.end <= h:
                    self.tally.add(r)
                    self.flight.add(r)
                else:
                    self._held.append(r)
            self.held_most = max(self.held_most, len(self._held))

    # -- bounds (the run loop)
    def open_phase(self, name: str, start: float, until: float) -> None:
        with self._lock:
            self.tally.open(name, start)
            self._window = self.flight.window(start)
            self._until = until

    def close_phase(self, name: str, start: float, end: float) -> None:
        with self._lock:
            if self._until is None:  # aborted before its faults were in place: never opened
                self._window = self.flight.window(start)
            self.tally.close(name, start, end)
            self.flight.close_window(self._window, end)
            self._until = None

    def advance(
        self,
        now: float,
        samples: Sequence[Sample],
        ongoing: Iterable[tuple[Layer, str, float]],
        ended: Iterable[tuple[Layer, Stall]],
        read: float,
    ) -> None:
        """A tick that began at `now` passed its checks: `samples` are every sample so far
        (ProbeSet.samples), `ongoing` and `ended` the freezes read after `now` (at `read`)."""
        with self._lock:
            self._learn(samples, ongoing, ended, read)
            if self._until is None:
                return
            h = min(now, self._until)
            if h > self.horizon:
                self.horizon = h
                self._release()

    def finish(self, samples: Sequence[Sample], ended: Iterable[tuple[Layer, Stall]], read: float) -> None:
        """The run is over: every bound is known; count what was held."""
        with self._lock:
            self._learn(samples, [], ended, read)
            self._until = None
            self.horizon = math.inf
            self.at_end = len(self._held)
            self._release()

    def complete(self, stalls: Stalls, windows: Iterable[tuple[float, float]]) -> bool:
        """Whether the phases counted are these windows, and every span their stalls are
        weighed over was counted."""
        windows = list(windows)
        if self.flight.windows != windows or [(a, b) for _, a, b in self.tally.phases] != windows:
            return False
        return all(self.flight.has_span(a, b) for start, end in windows for a, b in stalls.spans(start, end))

    def stalls(self) -> list[tuple[Layer, Stall]]:
        """Every freeze that ended, as the live reads found them (the probe's own slots keep the
        last 64 only)."""
        return sorted(
            ((f.layer, f.stall) for f in self._freezes.values() if f.stall is not None),
            key=lambda ls: ls[1].start,
        )

    # -- inside the lock
    def _release(self) -> None:
        h, keep = self.horizon, []
        for r in self._held:
            if r.end <= h:
                self.tally.add(r)
                self.flight.add(r)
            else:
                keep.append(r)
        self._held = keep

    def _learn(
        self,
        samples: Sequence[Sample],
        ongoing: Iterable[tuple[Layer, str, float]],
        ended: Iterable[tuple[Layer, Stall]],
        read: float,
    ) -> None:
        fresh: list[StallKey] = []
        for layer, s in ended:
            key = (layer, s.target, s.start)
            f = self._freezes.get(key)
            if f is None:
                f = self._freezes[key] = _Freeze(layer, s, s.start, read)
                fresh.append(key)
            f.stall = s
        for layer, target, start in ongoing:
            key = (layer, target, start)
            f = self._freezes.get(key)
            if f is None:
                self._freezes[key] = _Freeze(layer, None, start, read)
                fresh.append(key)
            elif f.stall is None:
                f.seen = read
        new_ticks = []
        for t, _ in samples[self._samples :]:
            if self._last is not None and t > self._last:
                self.flight.close_span(("tick", self._last), t)
                self._ticks.append((self._last, t))
                self._ends.append(t)
                self._tick_end[self._last] = t
                new_ticks.append((self._last, t))
            if self._last is None or t > self._last:
                self._last = t
                self.flight.open_span(("tick", t), t)
        self._samples = len(samples)
        # the frozen parts: of the new ticks with every freeze, of the new freezes with every
        # tick they overlap, and those still being counted
        pairs = {(a, key) for a, _ in new_ticks for key in self._freezes}
        for key in fresh:
            start = self._freezes[key].start
            i = bisect.bisect_right(self._ends, start)
            pairs.update((a, key) for a, _ in self._ticks[i:])
        if self._last is not None:
            pairs.update((self._last, key) for key in self._freezes)
        pairs.update(k for k, state in self._parts.items() if state == "open")
        for a, key in pairs:
            self._part(a, self._tick_end.get(a), key)

    def _part(self, a: float, b: float | None, key: StallKey) -> None:
        """The part of tick (a, b) that freeze `key` held (b None: the open tick), counted as
        soon as its start is known and closed once its end is."""
        state = self._parts.get((a, key))
        if state == "closed":
            return
        f = self._freezes[key]
        end = f.end
        if (b is not None and f.start >= b) or (end is not None and end <= a):
            return  # no overlap
        if end is None and f.seen < a:
            return  # a freeze no longer read (its target gone): whether it reached a is unknown
        lo = max(a, f.start)
        if b is not None and end is not None:
            hi: float | None = min(b, end)
        elif b is not None:
            hi = b if f.seen >= b else None
        elif end is not None:
            hi = end  # the open tick ends at a sample taken after this read, after the freeze's end
        else:
            hi = None
        if hi is None:
            if state is None:
                self.flight.open_span(("part", a, key), lo)
                self._parts[(a, key)] = "open"
            return
        if state == "open":
            self.flight.close_span(("part", a, key), hi)
        elif hi > lo:
            self.flight.add_span((lo, hi))
        self._parts[(a, key)] = "closed"


def differences(
    live: tuple[RunTally, InFlight], after: tuple[RunTally, InFlight], spans: Iterable[tuple[float, float]]
) -> list[str]:
    """Where the counts made as the run went differ from one pass over the records after it
    (CHAOSLAB_RECOUNT, chaoslab/diag.py): none, or each group and span that differs. Sums of
    seconds may differ in their last bits (added in another order): within 1e-9."""
    (got, got_flight), (want, want_flight) = live, after
    out = []
    if got.phases != want.phases:
        out.append(f"phases {got.phases} != {want.phases}")
    out += _tallies("name", got.by_name, want.by_name)
    out += _tallies("second", got.by_second, want.by_second)
    for i, (a_s, b_s) in enumerate(zip(got_flight.window_s, want_flight.window_s, strict=False)):
        if not math.isclose(a_s, b_s, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"window {i}: {a_s} live, {b_s} after")
    for a, b in spans:
        x = got_flight.span_s(a, b) if got_flight.has_span(a, b) else None
        y = want_flight.span_s(a, b)
        if x is None or not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"span ({a}, {b}): {x} live, {y} after")
    return out


def _tallies(label: str, mine: Mapping[Any, Tally], theirs: Mapping[Any, Tally]) -> list[str]:
    out = []
    for key in sorted(set(mine) | set(theirs), key=str):
        a, b = mine.get(key), theirs.get(key)
        if a is None or b is None:
            out.append(f"{label} {key}: only {'after' if a is None else 'live'}")
            continue
        counts = (a.requests, a.late, a.generator_late, a.errors, a.latency.buckets, a.max_s)
        if counts != (b.requests, b.late, b.generator_late, b.errors, b.latency.buckets, b.max_s) or not (
            math.isclose(a.ok_s, b.ok_s, rel_tol=1e-9, abs_tol=1e-12)
        ):
            out.append(f"{label} {key}: {a.requests} requests live, {b.requests} after")
    return out
