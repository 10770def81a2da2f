"""The client's requests, counted as they come: what the analysis needs of them, in a size
that does not grow with them.

A `Tally` holds one group's requests (a phase, a request name in a phase, a second of the
timeline) as counters and FineHistograms (three significant digits: a quantile is the value
of rank ceil(q * n), as HdrHistogram's, within 0.1%). Means and maxima are exact.
`RunTally` sorts a run's requests into their groups by due time, one request at a time, so the
requests themselves need not be kept to report on them.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from chaoslab.hist import FineHistogram, Histogram, TimelineHistogram
from chaoslab.load.records import LATE_TOLERANCE, PARTS, SPLIT_PARTS, Request

FINE = FineHistogram.sub_bits
SUB = 1 << FINE


def _record(h: Histogram, seconds: float) -> None:
    """FineHistogram.record of a time in seconds, inlined: the tally's hot path."""
    ns = int(seconds * 1e9)
    if ns < SUB:
        b = max(ns, 0)
        ns = b
    else:
        e = ns.bit_length() - 1
        b = ((e - FINE + 1) << FINE) | ((ns >> (e - FINE)) & (SUB - 1))
    buckets = h.buckets
    buckets[b] = buckets.get(b, 0) + 1
    h.sum_ns += ns


@dataclass
class Tally:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0  # sent more than LATE_TOLERANCE after its due time
    generator_late: int = 0  # ... by a user that was free (the generator's own delay)
    ok_s: float = 0.0  # the successful requests' latencies, summed
    max_s: float = 0.0  # the longest successful request
    # successful requests, from due (a second of the timeline's: a TimelineHistogram)
    latency: Histogram = field(default_factory=FineHistogram)
    # False: counts and latencies only (a second of the timeline); True: the sends, the answers
    # and the parts too (a phase's or a request name's row)
    detail: bool = True
    sent: FineHistogram = field(default_factory=FineHistogram)  # due to sent, of free users' requests
    answer: FineHistogram = field(default_factory=FineHistogram)  # sent to end, successful requests
    # the successful requests the client timed in parts: their count, each part's sum and histogram
    split_requests: int = 0
    part_s: list[float] = field(default_factory=lambda: [0.0] * len(PARTS))
    parts: list[FineHistogram] = field(default_factory=lambda: [FineHistogram() for _ in PARTS])

    @classmethod
    def second(cls) -> Tally:
        """A second of the timeline: counts and latencies only (no sends, answers or parts),
        in a TimelineHistogram: what a run holds for each second of its length."""
        return cls(latency=TimelineHistogram(), detail=False, part_s=[], parts=[])

    @classmethod
    def of(cls, requests: Iterable[Request]) -> Tally:
        t = cls()
        for r in requests:
            t.add(r)
        return t

    def add(self, r: Request) -> None:
        self.requests += 1
        late = r.sent - r.due
        if late > LATE_TOLERANCE:
            self.late += 1
            if r.idle:
                self.generator_late += 1
        if r.idle and self.detail:
            _record(self.sent, late)
        if r.error:
            self.errors[r.error] += 1
            return
        latency = r.end - r.due
        self.ok_s += latency
        if latency > self.max_s:
            self.max_s = latency
        if not self.detail:
            self.latency.record(int(latency * 1e9))
            return
        _record(self.latency, latency)
        _record(self.answer, r.end - r.sent)
        if r.split is not None:
            connect, tls, send, wait = SPLIT_PARTS.unpack(r.split)
            parts = (late, connect, tls, send, wait, r.end - r.sent - connect - tls - send - wait)
            self.split_requests += 1
            for i, v in enumerate(parts):
                self.part_s[i] += v
                _record(self.parts[i], v)

    def __iadd__(self, other: Tally) -> Tally:
        """Another group's requests added to this one's (a phase's from its request names')."""
        self.requests += other.requests
        self.errors += other.errors
        self.late += other.late
        self.generator_late += other.generator_late
        self.ok_s += other.ok_s
        self.max_s = max(self.max_s, other.max_s)
        self.latency += other.latency
        self.sent += other.sent
        self.answer += other.answer
        self.split_requests += other.split_requests
        self.part_s = [a + b for a, b in zip(self.part_s, other.part_s, strict=True)]
        self.parts = [a + b for a, b in zip(self.parts, other.parts, strict=True)]
        return self

    @property
    def ok(self) -> int:
        return self.requests - self.errors.total()

    @property
    def mean_s(self) -> float:
        """The successful requests' mean latency, exact."""
        return self.ok_s / self.ok if self.ok else 0.0

    def quantile_s(self, q: float) -> float:
        return self.latency.quantile_ns(q) / 1e9

    def split_mean_s(self) -> dict[str, float]:
        n = self.split_requests
        return {k: s / n for k, s in zip(PARTS, self.part_s, strict=True)} if n else {}


@dataclass
class RunTally:
    """A run's requests in their groups, by due time: per phase and request name (the load's mix
    in order, then any other name), per phase (its names' together), per second from t0.
    `phases`: (name, start, end) of each phase's window of due times; a request due outside
    every window is in none (but in its second)."""

    phases: list[tuple[str, float, float]]
    t0: float
    names: Sequence[str] = ()
    by_name: dict[tuple[str, str], Tally] = field(default_factory=dict)
    by_second: dict[int, Tally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.phases = list(self.phases)
        for phase, _, _ in self.phases:
            self._names(phase)

    def _names(self, phase: str) -> None:
        for name in self.names:
            self.by_name.setdefault((phase, name), Tally())

    def open(self, phase: str, start: float) -> None:
        """A phase whose end is not known yet: every request added until `close` must end
        before that end (settle.Settler holds the others back)."""
        self.phases.append((phase, start, math.inf))
        self._names(phase)

    def close(self, phase: str, start: float, end: float) -> None:
        """The phase's end; a phase never opened (aborted before it began) is added whole."""
        if self.phases and self.phases[-1] == (phase, start, math.inf):
            self.phases[-1] = (phase, start, end)
        else:
            self.phases.append((phase, start, end))
            self._names(phase)

    def add(self, r: Request) -> None:
        if r.due >= self.t0:
            sec = math.floor(r.due - self.t0)
            t = self.by_second.get(sec)
            if t is None:
                t = self.by_second[sec] = Tally.second()
            t.add(r)
        for phase, start, end in self.phases:
            if start <= r.due < end:
                t = self.by_name.get((phase, r.name))
                if t is None:
                    t = self.by_name[(phase, r.name)] = Tally()
                t.add(r)
                return

    def add_all(self, requests: Iterable[Request]) -> None:
        for r in requests:
            self.add(r)

    @functools.cached_property
    def by_phase(self) -> dict[str, Tally]:
        """Each phase's requests, all names together: once every request is in."""
        out = {phase: Tally() for phase, _, _ in self.phases}
        for (phase, _), t in self.by_name.items():
            out[phase] += t
        return out
