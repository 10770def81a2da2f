"""Stop conditions (`abort:`), checked on every tick of the run loop.

- client error rate, p50 and p99 over a sliding window: requests are binned by the second they
  ended in (as the load's records stream in, about 0.3 s after the fact), the window is the last
  `window` whole and partial seconds, and it decides nothing with fewer than `min_requests`
  requests in it; p50 and p99 are of the answered requests, as in the report;
- a target's own health check (its `health:`, sent from the never-faulted control ports for
  HTTP(S) and TCP) failing for `unhealthy` seconds: one checker thread per target, a check every
  0.5 s, so the run loop never waits for a target that does not answer;
- a layer's added time per request: the probes' histograms read once a second, the window's
  layer time per client request against the baseline phase's (histogram time only: the cpu
  layer's whole-target stalls are weighed when the report is made);
- a target's process exiting when no fault brought it down.

A tripped condition is a `Trip`; the run loop raises `Abort` with it, reverts every active fault
at once and writes the report with the phases so far.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chaoslab.hist import FineHistogram, Histogram
from chaoslab.load.records import Request
from chaoslab.scenario.model import AbortSpec
from chaoslab.targets.health import check

if TYPE_CHECKING:
    from chaoslab.context import RunContext
    from chaoslab.probes.set import ProbeSet, Snapshot
    from chaoslab.targets.base import RunningTarget

HEALTH_EVERY = 0.5
HEALTH_TIMEOUT = 2.0
LAYERS_EVERY = 1.0  # seconds between two reads of the probes' histograms
STOP_BOUND = 2.0  # seconds from a trip to the last fault reverted, promised and measured


@dataclass(frozen=True)
class Trip:
    """A stop condition that held, or the dead man's switch that undid the faults."""

    condition: str  # error_rate, p50, p99, unhealthy, added, target_exit; switch, deadline, exit
    reason: str  # in words, with the figures
    at: float  # epoch seconds when it was seen
    mono: float  # time.monotonic() then: the start of the trip-to-revert measurement
    by: str = "chaoslab"  # or "watchdog": the dead man's switch
    # The watchdog's own account: seconds from the last heartbeat (or the fault's deadline) to
    # its last revert, and each fault's, by fault ("network on api").
    revert_s: float | None = None
    reverts: dict[str, float] = field(default_factory=dict)
    undo_s: float | None = None  # the watchdog's: from its trip to its last revert


class Abort(Exception):
    """Raised in the run loop when a stop condition or the switch trips: the run winds down,
    reverts its faults at once and still writes its report."""

    def __init__(self, trip: Trip) -> None:
        super().__init__(trip.reason)
        self.trip = trip


@dataclass
class _Second:
    requests: int = 0
    errors: int = 0
    hist: FineHistogram = field(default_factory=FineHistogram)


class _Health(threading.Thread):
    """Checks one target's health every HEALTH_EVERY seconds; knows since when it fails."""

    def __init__(self, target: RunningTarget, stop: threading.Event) -> None:
        super().__init__(name=f"health-{target.name}", daemon=True)
        self.target = target
        self.halt = stop
        self.failing_since: float | None = None  # monotonic
        self.last = ""

    def run(self) -> None:
        t = self.target
        while not self.halt.is_set():
            started = time.monotonic()
            answer = check(t.service.health, t.ip, t.ca, HEALTH_TIMEOUT, t.reach(t.service.health.port))
            if answer:
                self.last = answer
                if self.failing_since is None:
                    self.failing_since = started
            else:
                self.failing_since = None
            self.halt.wait(max(0.0, HEALTH_EVERY - (time.monotonic() - started)))


class StopConditions:
    def __init__(self, ctx: RunContext, targets: dict[str, RunningTarget]) -> None:
        self.spec: AbortSpec = ctx.scenario.abort
        self.targets = targets
        self._seconds: dict[int, _Second] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._health: list[_Health] = []
        self._snaps: deque[tuple[float, Snapshot, int]] = deque()
        self._ended = 0  # requests ended so far (the denominator of a layer's share)
        self._baseline: dict[tuple[str, str], float] | None = None
        self._last_layers = 0.0
        if self._client_conditions or self.spec.added:
            ctx.events.subscribe("requests", self._on_requests)

    @property
    def _client_conditions(self) -> bool:
        s = self.spec
        return s.error_rate is not None or s.p50 is not None or s.p99 is not None

    @property
    def active(self) -> bool:
        return bool(self.spec.describe())

    def start(self) -> None:
        """Start the health checkers (once the targets are up)."""
        if self.spec.unhealthy is None:
            return
        names = self.spec.unhealthy_targets or tuple(self.targets)
        for name in names:
            t = self.targets[name]
            if t.service.health.protocol != "none":
                checker = _Health(t, self._halt)
                checker.start()
                self._health.append(checker)

    def close(self) -> None:
        self._halt.set()
        for checker in self._health:
            checker.join(timeout=HEALTH_TIMEOUT + 1)

    def _on_requests(self, batch: list[Request]) -> None:
        with self._lock:
            for r in batch:
                sec = self._seconds.setdefault(math.floor(r.end), _Second())
                sec.requests += 1
                self._ended += 1
                if r.ok:
                    sec.hist.record(int(r.latency * 1e9))
                else:
                    sec.errors += 1

    def _window(self, now: float) -> _Second:
        """The requests that ended in the window: the last `window` seconds, in whole seconds."""
        first = math.floor(now - self.spec.window)
        out = _Second()
        with self._lock:
            for sec in [s for s in self._seconds if s < first - 1]:
                del self._seconds[sec]
            for sec, tally in self._seconds.items():
                if sec >= first:
                    out.requests += tally.requests
                    out.errors += tally.errors
                    out.hist = out.hist + tally.hist
        return out

    def set_baseline(self, snap: Snapshot, requests: float) -> None:
        """The baseline phase's layer times: `added` compares the window with them."""
        if requests:
            self._baseline = _shares(snap, requests)

    def check(self, probes: ProbeSet) -> Trip | None:
        now, mono = time.time(), time.monotonic()
        spec = self.spec

        def trip(condition: str, reason: str) -> Trip:
            return Trip(condition, reason, now, mono)

        if self._client_conditions:
            w = self._window(now)
            if w.requests >= spec.min_requests:
                rate = w.errors / w.requests
                where = f"over the last {spec.window:g} s ({w.requests} requests)"
                if spec.error_rate is not None and rate > spec.error_rate:
                    return trip(
                        "error_rate",
                        f"client error rate {rate:.1%} {where} is above {spec.error_rate:.1%}",
                    )
                for name, limit, q in (("p50", spec.p50, 0.5), ("p99", spec.p99, 0.99)):
                    value = w.hist.quantile_ns(q) / 1e9 if w.hist.count else 0.0
                    if limit is not None and value > limit:
                        return trip(
                            name, f"client {name} {value * 1000:.0f} ms {where} is above {limit * 1000:g} ms"
                        )
        if spec.unhealthy is not None:
            for checker in self._health:
                since = checker.failing_since
                if since is not None and mono - since >= spec.unhealthy:
                    t = checker.target
                    return trip(
                        "unhealthy",
                        f"target {t.name} failed its health check ({t.service.health.describe()}) "
                        f"for {mono - since:.1f} s: {checker.last}",
                    )
        if spec.added and self._baseline is not None and mono - self._last_layers >= LAYERS_EVERY:
            self._last_layers = mono
            return self._check_added(probes, trip)
        return None

    def _check_added(self, probes: ProbeSet, trip: Callable[[str, str], Trip]) -> Trip | None:
        assert self._baseline is not None
        now = time.time()
        with self._lock:
            ended = self._ended
        self._snaps.append((now, probes.snapshot(), ended))
        while len(self._snaps) > 1 and self._snaps[1][0] <= now - self.spec.window:
            self._snaps.popleft()
        t0, first, n0 = self._snaps[0]
        requests = ended - n0
        if now - t0 < self.spec.window / 2 or requests < self.spec.min_requests:
            return None
        latest = self._snaps[-1][1]
        window = {k: h - first.get(k, Histogram()) for k, h in latest.items()}
        shares = _shares(window, requests)
        for layer, limit in self.spec.added:
            for (lay, target), share in sorted(shares.items()):
                added = share - self._baseline.get((lay, target), 0.0)
                if lay == layer and added > limit:
                    return trip(
                        "added",
                        f"layer {layer} at {target} adds {added * 1000:.1f} ms per request over the last "
                        f"{now - t0:.0f} s against the baseline, above {limit * 1000:g} ms",
                    )
        return None

    def target_exited(self, t: RunningTarget) -> Trip | None:
        """A target's process is gone and no fault brought it down: a Trip when `target_exit`
        covers it, else None (the run ends with an error, as without stop conditions)."""
        names = self.spec.target_exit
        if names is None or (names and t.name not in names):
            return None
        code = t.proc.returncode if t.proc else None
        return Trip(
            "target_exit",
            f"target {t.name} exited (code {code if code is not None else '?'}) during the run",
            time.time(),
            time.monotonic(),
        )


def _shares(snap: Snapshot, requests: float) -> dict[tuple[str, str], float]:
    """Seconds of each layer (as a whole) per client request, by (layer, target)."""
    return {
        (str(layer), target): h.sum_ns / 1e9 / requests
        for (layer, target, metric), h in snap.items()
        if metric == ""
    }
