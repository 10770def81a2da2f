"""Which layers absorbed a phase's faults: its causes, the layers whose added time holds a part
of the client's and no other cause's part (chaoslab/analysis/causes.py), each tied to the fault
it is, or listed as a side effect.

Per-request shares make layers comparable: a layer's share in a phase is the total time
its probe recorded there divided by the client requests of the phase. Shares add up along
a request path (medians do not), so `explained = added share / client added share`, the
client's share counted the same way: its request-seconds inside the phase's window (from each
request's due time) per request of the phase. A backlog the phase leaves drains after its end,
outside every probe's figures for it: that part of the client's mean is `carried`.

A stall of a whole target (frozen, or starved of CPU: threads waiting to run and none
running) is not one event's worth of time: every request in flight waits it out. Its share
is the request time it held, per tick of the run (0.2 s): the stall's time in the tick times
the requests in flight then (exact overlap for a freeze, whose start and end are known).

A phase's client latencies, and a layer's events, changed when they shifted (Mann-Whitney),
when more of them lie beyond the baseline's p99 (a change confined to a few events, like one
slow syscall among many or one request in ten waiting for a retransmission, moves no ranks),
or when their mean rose beyond its standard error (Welch's, with the pooled variance's error
when that is larger): Bonferroni over the three (stats.hist_shift_p); for stalls, when the per-tick
held time shifted (Mann-Whitney over ticks). Fewer than 5 events or ticks on a side cannot
decide (30 for the mean).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chaoslab.analysis import causes
from chaoslab.analysis.stats import hist_shift_p, mann_whitney_hist, mann_whitney_p
from chaoslab.analysis.tally import Tally
from chaoslab.hist import Histogram
from chaoslab.layers import DEPTH, Layer
from chaoslab.load.records import Request
from chaoslab.probes.base import LAYER, Stall
from chaoslab.probes.network import DEPENDENCY_METRICS
from chaoslab.probes.set import Snapshot
from chaoslab.report.model import (
    Cause,
    CauseKind,
    Contribution,
    FaultRef,
    LayerRow,
    Verdict,
)
from chaoslab.scenario.model import Status

P_SIGNIFICANT = 0.001
MIN_ADDED_S = 0.002  # a change smaller than 2 ms on the client is never "significant"
MIN_ADDED_FRACTION = 0.10  # ... nor one under 10% of the baseline
EXPLAINS = 0.5  # a layer, or the causes together, "explain" the client's added time from this fraction on
OBSERVED_FRACTION = 0.5  # a fault's layer must show at least this share of its expected shift

LayerKey = tuple[Layer, str]  # (layer, target)


@dataclass(frozen=True)
class FaultCheck:
    """What the analysis must see for a fault to count as having happened."""

    layer: Layer
    target: str
    expected_shift: float | None  # seconds added per event of that layer, if the fault says
    observed: bool  # the fault's own mechanism saw its effect
    detail: str
    kind: str = ""  # the fault's kind, for the causes that name it
    # other (layer, target) pairs where the fault's own effect shows (a network fault: the far end
    # of the faulted link)
    also: tuple[LayerKey, ...] = ()
    # the fault's layer at its target is off the requests' path: its target is taken away
    # (killed and kept down: no events there is its effect) or serves no request (a control
    # plane, whose faults slow config, not requests), or the fault adds no time there (a syscall
    # errno: failed calls); whatever holds the client's added time, if any, absorbed it
    off_path: bool = False

    @property
    def ref(self) -> FaultRef:
        return FaultRef(self.kind, str(self.layer), self.target)


@dataclass
class PhaseData:
    """What one phase measured: the client's requests (their tally), the probes' histograms,
    the stalls."""

    name: str
    client: Tally
    snap: Snapshot
    stall_ticks: dict[LayerKey, list[float]] = field(default_factory=dict)  # request-seconds per tick
    # the client's request-seconds inside the phase's window, of every successful request in
    # flight there (InFlight.window_s); None: the phase's own latencies (its requests all ended inside it)
    window_s: float | None = None

    @functools.cached_property
    def client_s(self) -> float:
        """Seconds of client time per successful request (as the client's mean counts them),
        counted as the layers' are: inside the phase's window, per request of the phase."""
        ok = self.client.ok
        if not ok:
            return 0.0
        return (self.client.ok_s if self.window_s is None else self.window_s) / ok

    @property
    def stall_s(self) -> dict[LayerKey, float]:
        return {k: sum(v) for k, v in self.stall_ticks.items()}

    @functools.cached_property
    def layers(self) -> dict[LayerKey, Histogram]:
        """The layers as a whole (metric ""), built once per phase."""
        return {(layer, target): h for (layer, target, metric), h in self.snap.items() if metric == LAYER}

    def metric_share(self, key: LayerKey, metric: str) -> float:
        """Seconds of one metric of a layer per client request."""
        n = self.client.requests
        h = self.snap.get((key[0], key[1], metric), Histogram())
        return h.sum_ns / 1e9 / n if n else 0.0

    def share(self, key: LayerKey) -> float:
        """Seconds of this layer per client request."""
        n = self.client.requests
        h = self.layers.get(key, Histogram())
        return (h.sum_ns / 1e9 + sum(self.stall_ticks.get(key, []))) / n if n else 0.0


class Stalls:
    """Whole-target stalls of a run: freezes (start, end) and sampled starved-time counters."""

    def __init__(
        self,
        stalls: list[tuple[Layer, Stall]],
        samples: list[tuple[float, dict[tuple[Layer, str], float]]],
    ) -> None:
        self.stalls = stalls
        self.samples = samples

    def _ticks(self, start: float, end: float) -> list[tuple[float, float]]:
        times = [t for t, _ in self.samples if start - 0.05 <= t <= end + 0.05]
        return [(a, b) for a, b in itertools.pairwise(times) if b > a]

    def spans(self, start: float, end: float) -> list[tuple[float, float]]:
        """What `held` weighs by the requests in flight: each tick of [start, end], and the part
        of a tick each stall held."""
        if not self.stalls and not self.samples:
            return []
        ticks = self._ticks(start, end)
        frozen = [
            (max(a, s.start), min(b, s.end))
            for a, b in ticks
            for _, s in self.stalls
            if s.start < b and s.end > a
        ]
        return ticks + frozen

    def held(self, flight: InFlight, start: float, end: float) -> dict[LayerKey, list[float]]:
        """Request-seconds held by stalls in each tick of [start, end]; `flight` measured the
        requests in flight over this phase's `spans`."""
        ticks = self._ticks(start, end)
        if not ticks or (not self.stalls and not self.samples):
            return {}
        by_time = dict(self.samples)
        keys = {k for _, values in self.samples for k in values} | {
            (layer, s.target) for layer, s in self.stalls
        }
        out: dict[LayerKey, list[float]] = {k: [] for k in keys}
        for a, b in ticks:
            in_flight = flight.span_s(a, b) / (b - a)
            for key in keys:
                starved = by_time[b].get(key, 0.0) - by_time[a].get(key, 0.0)
                frozen = sum(
                    flight.span_s(max(a, s.start), min(b, s.end))
                    for layer, s in self.stalls
                    if (layer, s.target) == key and s.start < b and s.end > a
                )
                out[key].append(max(0.0, starved) * in_flight + frozen)
        return out


class InFlight:
    """Request-seconds in flight, counted one request at a time (the requests need not be kept),
    each request from its due time to its end: inside each phase's window, of the successful
    requests (the client's time the layers are weighed against), and inside each of `spans` (the
    stalls' ticks and their frozen parts), of every request, failed ones too.

    Windows and spans may also be opened before their end is known (`window`, `open_span`) and
    closed later: as long as every request added ends before the end they are given, the counts
    are the same as with the whole interval known from the start (settle.Settler relies on it)."""

    def __init__(
        self, windows: Iterable[tuple[float, float]] = (), spans: Iterable[tuple[float, float]] = ()
    ) -> None:
        self.windows = list(windows)
        self.window_s = [0.0] * len(self.windows)
        self._spans: list[tuple[float, float]] = []  # closed, by start
        self._starts: list[float] = []
        self._widest = 0.0
        self._span_s: dict[tuple[float, float], float] = {}
        self._open: dict[object, list[float]] = {}  # key: [start, seconds so far]
        for span in spans:
            self.add_span(span)

    def window(self, start: float) -> int:
        """A window whose end is not known yet (close_window gives it): its index."""
        self.windows.append((start, math.inf))
        self.window_s.append(0.0)
        return len(self.windows) - 1

    def close_window(self, i: int, end: float) -> None:
        self.windows[i] = (self.windows[i][0], end)

    def add_span(self, span: tuple[float, float], seconds: float = 0.0) -> None:
        if span in self._span_s:  # (two stalls of a tick may freeze the same part of it)
            return
        i = bisect.bisect(self._spans, span)
        self._spans.insert(i, span)
        self._starts.insert(i, span[0])
        self._widest = max(self._widest, span[1] - span[0])
        self._span_s[span] = seconds

    def open_span(self, key: object, start: float) -> None:
        self._open.setdefault(key, [start, 0.0])

    def close_span(self, key: object, end: float) -> None:
        start, seconds = self._open.pop(key)
        if end > start:
            self.add_span((start, end), seconds)

    def add(self, r: Request) -> None:
        due, end = r.due, r.end
        if not r.error:
            for i, (a, b) in enumerate(self.windows):
                inside = min(end, b) - max(due, a)
                if inside > 0:
                    self.window_s[i] += inside
        if self._spans:
            starts, spans, seconds = self._starts, self._spans, self._span_s
            i = bisect.bisect_left(starts, due - self._widest)
            while i < len(starts) and starts[i] < end:
                a, b = span = spans[i]
                inside = min(end, b) - max(due, a)
                if inside > 0:
                    seconds[span] += inside
                i += 1
        for held in self._open.values():
            inside = end - max(due, held[0])
            if inside > 0:
                held[1] += inside

    def add_all(self, requests: Iterable[Request]) -> None:
        for r in requests:
            self.add(r)

    def has_span(self, a: float, b: float) -> bool:
        return (a, b) in self._span_s

    def span_s(self, a: float, b: float) -> float:
        """Request-seconds in flight during [a, b], one of the spans, failed requests' too."""
        return self._span_s[(a, b)]


def layer_rows(data: PhaseData) -> list[LayerRow]:
    """The layer as a whole first, then its metrics, for every (layer, target) measured."""
    n = data.client.requests
    rows = []
    ordered = sorted(
        data.snap.items(),
        key=lambda kv: (DEPTH[kv[0][0]], kv[0][1], kv[0][0], kv[0][2] != LAYER, kv[0][2]),
    )
    for (layer, target, metric), h in ordered:
        if metric != LAYER and h.count == 0:
            continue
        stall = sum(data.stall_ticks.get((layer, target), [])) if metric == LAYER else 0.0
        rows.append(
            LayerRow(
                phase=data.name,
                target=target,
                layer=str(layer),
                count=h.count,
                p50_ms=_ms(h.quantile_ns(0.5) / 1e9),
                p90_ms=_ms(h.quantile_ns(0.9) / 1e9),
                p99_ms=_ms(h.quantile_ns(0.99) / 1e9),
                mean_ms=_ms(h.mean_ns / 1e9),
                per_request_ms=_ms((h.sum_ns / 1e9 + stall) / n) if n else 0.0,
                metric=metric,
            )
        )
    return rows


def verdict(
    base: PhaseData,
    cur: PhaseData,
    checks: list[FaultCheck],
    unmeasured: Mapping[LayerKey, str] | None = None,
    calls: Mapping[str, Iterable[str]] | None = None,
) -> Verdict:
    """The phase's verdict against the baseline. `unmeasured`: (layer, target) pairs whose
    probe could not attach in this run, with the reason; a fault whose own layer is among
    them cannot be traced, so its phase is inconclusive rather than credited to an outer layer.
    `calls`: each target's links, the targets it calls (default: a proxy calls every other
    target), for the nesting of layers across targets."""
    b, f = base.client, cur.client
    added_p50 = f.quantile_s(0.5) - b.quantile_s(0.5)
    added_mean = _client_added_mean(base, cur)
    # what the layers can hold: the client's time inside the phase's window (a backlog the phase
    # leaves drains after it, where no probe's figures for the phase reach); the rest is carried
    in_phase = cur.client_s - base.client_s
    carried = added_mean - in_phase
    p = hist_shift_p(
        b.latency, f.latency
    )  # ranks, tail or mean: packet loss moves the tail and the mean alone
    contributions = _contributions(base, cur, in_phase)

    def make(
        status: Status,
        layer: str | None,
        target: str | None,
        added: float,
        explained: float,
        reason: str,
        found: list[Cause] | None = None,
        unexplained: float | None = None,
    ) -> Verdict:
        rest = in_phase - added if unexplained is None else unexplained
        return Verdict(
            cur.name,
            status,
            layer,
            target,
            _ms(added),
            round(max(0.0, min(1.0, explained)), 3),
            _ms(added_p50),
            _ms(added_mean),
            _ms(max(0.0, rest)),
            p,
            reason,
            contributions,
            found or [],
            carried_ms=_ms(carried),
            in_phase_ms=_ms(in_phase),
        )

    for check in checks:
        if not check.observed:
            return make(
                Status.INVALID,
                str(check.layer),
                check.target,
                0.0,
                0.0,
                f"the fault's mechanism saw no effect ({check.detail})",
            )
        if check.off_path:
            continue
        missing = (unmeasured or {}).get((check.layer, check.target))
        if missing is not None:
            return make(
                Status.INCONCLUSIVE,
                str(check.layer),
                check.target,
                0.0,
                0.0,
                f"the fault's layer, {check.layer} at {check.target}, was not measured: {missing}",
            )
        problem = _not_observed(check, base, cur, contributions)
        if problem:
            return make(Status.INVALID, str(check.layer), check.target, 0.0, 0.0, problem)
    if b.ok < 5 or f.ok < 5:
        return make(
            Status.INCONCLUSIVE, None, None, 0.0, 0.0, f"too few requests ({b.ok} baseline, {f.ok} here)"
        )
    floor = max(MIN_ADDED_S, MIN_ADDED_FRACTION * b.quantile_s(0.5))
    if p >= P_SIGNIFICANT or max(added_p50, added_mean) < floor:
        return make(
            Status.NO_CHANGE,
            None,
            None,
            0.0,
            0.0,
            f"p={p:.2g}, added p50 {added_p50 * 1000:+.1f} ms against a {floor * 1000:.1f} ms threshold",
        )
    found = phase_causes(base, cur, contributions, checks, calls)
    for check in checks:
        if check.off_path:
            continue
        if _measured(check.layer, base, cur) and not any(c.faults and check.ref in c.faults for c in found):
            listed = ", ".join(f"{c.name} {c.share:.0%}" for c in found) or "none"
            return make(
                Status.INVALID,
                str(check.layer),
                check.target,
                0.0,
                0.0,
                f"the {check.kind or 'declared'} fault on {check.target} matches no cause: {check.layer} at "
                f"{check.target} holds no part of the client's added time that other causes do not "
                f"(causes: {listed})",
                found,
            )
    total_ms = sum(c.added_ms for c in found)
    explained = total_ms / (in_phase * 1000) if in_phase > 0 else 0.0
    if found and explained >= EXPLAINS:
        main = _main_cause(found, contributions, base, cur)
        first = next(x for x in contributions if (x.layer, x.target) == (main.layer, main.target))
        ordered = [main, *(c for c in found if c is not main)]
        if len(found) == 1:
            reason = (
                f"deepest layer whose significant added time explains at least {EXPLAINS:.0%} of the client's"
            )
        else:
            reason = (
                f"{len(found)} causes, the significant layers that hold no other cause's time, explain "
                f"{explained:.0%} of the client's added time together"
            )
        return make(
            Status.ABSORBED,
            main.layer,
            main.target,
            first.added_ms / 1000,
            explained,
            reason,
            ordered,
            in_phase - total_ms / 1000,
        )
    reason = "the client slowed down but no measured layer significantly explains half of it"
    if found:
        reason = (
            f"the client slowed down but its causes ({', '.join(f'{c.name} {c.share:.0%}' for c in found)}) "
            f"explain {explained:.0%} of it, under half"
        )
    return make(Status.INCONCLUSIVE, str(Layer.CLIENT), None, in_phase, 1.0, reason, found)


def phase_causes(
    base: PhaseData,
    cur: PhaseData,
    contributions: list[Contribution],
    checks: list[FaultCheck],
    calls: Mapping[str, Iterable[str]] | None = None,
) -> list[Cause]:
    """The phase's causes (chaoslab/analysis/causes.py), each tied to the faults it matches,
    faults' causes first, by share."""
    client_ms = (cur.client_s - base.client_s) * 1000
    nodes = {
        (Layer(c.layer), c.target): causes.Node(
            Layer(c.layer),
            c.target,
            Layer(c.layer) is Layer.NETWORK and depth(c, base, cur) > DEPTH[Layer.APP],
        )
        for c in contributions
    }
    keys = [*nodes, *((check.layer, check.target) for check in checks)]
    nesting = causes.Nesting(calls if calls is not None else causes.assumed_calls(keys))
    declared = {(check.layer, check.target) for check in checks}
    anchored = declared | {k for check in checks for k in check.also}
    out = []
    for found in causes.find(contributions, nodes, nesting, declared, anchored):
        refs = []
        for check in checks:
            fault = nodes.get((check.layer, check.target)) or causes.Node(check.layer, check.target)
            if causes.matches(found.node, fault, check.also, nesting) and check.ref not in refs:
                refs.append(check.ref)
        kind = CauseKind.FAULT if refs else CauseKind.SIDE_EFFECT if checks else CauseKind.OUTSIDE
        share = found.added_ms / client_ms if client_ms > 0 else 0.0
        out.append(
            Cause(str(found.node.layer), found.node.target, found.added_ms, round(share, 3), kind, refs)
        )
    return sorted(out, key=lambda c: (c.kind is not CauseKind.FAULT, -c.share, c.layer, c.target))


def _main_cause(
    found: list[Cause], contributions: list[Contribution], base: PhaseData, cur: PhaseData
) -> Cause:
    """The verdict's `layer` and `target`: the deepest layer whose significant added time explains
    at least half of the client's (the rule of a verdict with one cause), when it is one of the
    causes and, in a phase with faults, a fault's; else the largest of the faults' causes."""
    explaining = [c for c in contributions if c.significant and c.explained >= EXPLAINS]
    if explaining:
        best = max(explaining, key=lambda c: (depth(c, base, cur), c.explained))
        cause = next((c for c in found if (c.layer, c.target) == (best.layer, best.target)), None)
        if cause is not None and (cause.kind is CauseKind.FAULT or not any(c.faults for c in found)):
            return cause
    return found[0]  # faults' causes first, by share


def _client_added_mean(base: PhaseData, cur: PhaseData) -> float:
    """Seconds the client's mean latency (successful requests) rose by."""
    return cur.client.mean_s - base.client.mean_s


def depth(c: Contribution, base: PhaseData, cur: PhaseData) -> float:
    """How deep a contribution sits on the request path. A target's network time on the
    connections it opened itself (its calls to its dependencies: a Go service's round trips to
    its cache) happens inside its own handling of the request, so when that is where a
    network layer's added time went, it nests inside the target's app layer."""
    layer = Layer(c.layer)
    if layer is Layer.NETWORK and c.added_ms > 0:
        key = (layer, c.target)
        dep = sum(cur.metric_share(key, m) - base.metric_share(key, m) for m in DEPENDENCY_METRICS.values())
        if dep * 1000 >= 0.5 * c.added_ms:
            return DEPTH[Layer.APP] + 0.5
    return DEPTH[layer]


def _contributions(base: PhaseData, cur: PhaseData, client_added: float) -> list[Contribution]:
    out = []
    lb, lf = base.layers, cur.layers
    keys = set(lb) | set(lf) | set(base.stall_ticks) | set(cur.stall_ticks)
    for key in sorted(keys, key=lambda k: (-DEPTH[k[0]], k[1])):
        hb, hf = lb.get(key, Histogram()), lf.get(key, Histogram())
        added = cur.share(key) - base.share(key)
        p = hist_shift_p(hb, hf)  # a shift of the events, of their tail alone, or of their mean
        if not hb.count and hf.count:
            # a layer whose events only the phase has (reclaim under a memory limit): no event
            # got slower, events appeared; the chance that all of them fall in this phase's
            # requests if they came at one rate across both phases
            p = appeared_p(hf.count, base.client.requests, cur.client.requests)
        if key in cur.stall_ticks or key in base.stall_ticks:
            # and a shift of the stalls' held time per tick: a layer measured both ways (the cpu
            # layer: run-queue waits as events, throttling and freezes as sampled stalls) counts
            # when either shifted, Bonferroni again (a CPU limit near a target's need throttles
            # in a few periods only, while every request queued behind them waits)
            stalls = mann_whitney_p(base.stall_ticks.get(key, []), cur.stall_ticks.get(key, []))
            p = min(1.0, 2 * min(p, stalls)) if hb.count or hf.count else stalls
        out.append(
            Contribution(
                layer=str(key[0]),
                target=key[1],
                added_ms=_ms(added),
                added_p50_ms=_ms((hf.quantile_ns(0.5) - hb.quantile_ns(0.5)) / 1e9),
                added_p99_ms=_ms((hf.quantile_ns(0.99) - hb.quantile_ns(0.99)) / 1e9),
                explained=round(added / client_added, 3) if client_added > 0 else 0.0,
                p_value=p,
                significant=added > 0 and p < P_SIGNIFICANT,
            )
        )
    return out


def appeared_p(events: int, base_requests: int, requests: int) -> float:
    """P(all `events` land in the phase) under one event rate per request for both phases."""
    total = base_requests + requests
    if not base_requests or not requests:
        return 1.0
    return float(math.exp(events * math.log(requests / total)))


def _measured(layer: Layer, base: PhaseData, cur: PhaseData) -> bool:
    """Some probe measured this layer in the run (at any target)."""
    measured = (*base.layers, *cur.layers, *base.stall_ticks, *cur.stall_ticks)
    return any(k[0] == layer for k in measured)


def _not_observed(
    check: FaultCheck, base: PhaseData, cur: PhaseData, contributions: list[Contribution]
) -> str:
    key = (check.layer, check.target)
    if not _measured(check.layer, base, cur):
        return ""  # no probe measures this layer in this run: the mechanism's own measurement stands
    hf = cur.layers.get(key)
    if (hf is None or hf.count == 0) and not cur.stall_s.get(key):
        return f"no {check.layer} events at {check.target} while the fault was active: the probe saw nothing"
    if check.expected_shift:
        hb = base.layers.get(key, Histogram())
        shift = ((hf.mean_ns if hf else 0.0) - hb.mean_ns) / 1e9
        if shift < OBSERVED_FRACTION * check.expected_shift:
            return (
                f"{check.layer} at {check.target} rose by {shift * 1000:.2f} ms per event, expected about "
                f"{check.expected_shift * 1000:.2f} ms"
            )
        return ""
    c = next((c for c in contributions if (c.layer, c.target) == (str(check.layer), check.target)), None)
    if c is None or not c.significant:
        detail = f"{c.added_ms:+.3f} ms per request, p={c.p_value:.2g}" if c else "nothing measured"
        return f"{check.layer} at {check.target} shows no significant added time ({detail})"
    return ""


def drift(first: Tally, last: Tally, first_name: str, last_name: str) -> str | None:
    """Say so when the baseline and the final fault-free phase disagree."""
    if first.ok < 5 or last.ok < 5:
        return None
    shift = last.quantile_s(0.5) - first.quantile_s(0.5)
    floor = max(MIN_ADDED_S, MIN_ADDED_FRACTION * first.quantile_s(0.5))
    if mann_whitney_hist(first.latency.buckets, last.latency.buckets) < P_SIGNIFICANT and abs(shift) >= floor:
        return f"{last_name} p50 differs from {first_name} by {shift * 1000:+.1f} ms: the baseline drifted"
    return None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
