"""Two runs of a scenario compared, phase by phase: did the client get worse, and in which layer?

Phases are paired by name, and those left over in order (a control run's `control` phase
against a fault run's first fault phase). For each pair:
- the client's p50 and p99 (exact, from the report's client rows) and their significance:
  Mann-Whitney on the two runs' client histograms for the p50 (1024 sub-buckets per power
  of two: values in one bucket are ties), and for the p99 the share of requests beyond the
  other run's p99 (a two-proportion test, as the attribution's tail test);
- every layer at every target: its time per client request in both runs, the change, and
  which share of the client's change in mean latency that explains.
A change counts when it is significant (p < 0.001, as in the verdicts) and at least the
threshold (default max(2 ms, 10% of the base run's value), as in the verdicts). A phase is
`worse` when its p50 or p99 rose by a counted change, `better` when one fell and none rose,
else `same`. A changed phase names the deepest layer whose change explains at least half of
the client's, as a verdict does.
"""

from __future__ import annotations

from collections.abc import Mapping

from chaoslab.analysis.attribution import EXPLAINS, MIN_ADDED_FRACTION, MIN_ADDED_S, P_SIGNIFICANT
from chaoslab.analysis.stats import mann_whitney_hist, tail_shift_p
from chaoslab.errors import ReportError, UsageError
from chaoslab.hist import FineHistogram
from chaoslab.layers import DEPTH, Layer
from chaoslab.report.comparison import (
    Change,
    Comparison,
    LayerChange,
    MetricChange,
    PhaseComparison,
    RunRef,
    Threshold,
)
from chaoslab.report.model import ClientRow, Report
from chaoslab.units import parse_duration

DEFAULT_THRESHOLD = Threshold(ms=MIN_ADDED_S * 1000, fraction=MIN_ADDED_FRACTION)


def compare(
    base: Report, current: Report, threshold: Threshold, base_path: str, current_path: str
) -> Comparison:
    notes = []
    if base.scenario != current.scenario:
        notes.append(f"different scenarios: {base.scenario} (base) and {current.scenario}")
    pairs, unpaired = pair_phases([p.name for p in base.phases], [p.name for p in current.phases])
    for name in unpaired:
        notes.append(f"phase {name} has no counterpart in the other run")
    for b, c in pairs:
        if b != c:
            notes.append(f"phase {c} is compared with the base run's {b} (same position)")
    base_h, cur_h = _histograms(base, base_path), _histograms(current, current_path)
    if not base_h or not cur_h:
        notes.append("a run has no client histograms (an older report): significance is not tested")
    phases = [_phase(base, current, b, c, base_h.get(b), cur_h.get(c), threshold) for b, c in pairs]
    return Comparison(
        RunRef(base_path, base.scenario, base.run_id, base.started),
        RunRef(current_path, current.scenario, current.run_id, current.started),
        threshold,
        phases,
        notes,
    )


def pair_phases(base: list[str], current: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(base phase, current phase) pairs in the current run's order, and the phases left alone."""
    by_name = {c: c for c in current if c in base}
    rest_b = [b for b in base if b not in by_name]
    rest_c = [c for c in current if c not in by_name]
    by_pos = dict(zip(rest_c, rest_b, strict=False))
    pairs = [(by_name.get(c) or by_pos[c], c) for c in current if c in by_name or c in by_pos]
    unpaired = rest_b[len(by_pos) :] + rest_c[len(by_pos) :]
    return pairs, unpaired


def _histograms(report: Report, where: str) -> dict[str, FineHistogram]:
    phases = report.histograms.get("phases", {})
    if not isinstance(phases, Mapping):
        raise ReportError(f"{where}: histograms.phases is not an object")
    out = {}
    for name, data in phases.items():
        try:
            out[str(name)] = FineHistogram.from_json(data)
        except ValueError as exc:
            raise ReportError(f"{where}: histograms.phases.{name}: {exc}") from None
    return out


def _phase(
    base: Report,
    current: Report,
    b: str,
    c: str,
    hb: FineHistogram | None,
    hc: FineHistogram | None,
    threshold: Threshold,
) -> PhaseComparison:
    rb, rc = _client(base, b), _client(current, c)
    metrics = []
    for metric, vb, vc in (("p50", rb.p50_ms, rc.p50_ms), ("p99", rb.p99_ms, rc.p99_ms)):
        p = _p_value(metric, hb, hc, vc >= vb)
        significant = p < P_SIGNIFICANT
        change = round(vc - vb, 3)
        counted = significant and abs(change) >= threshold.floor_ms(vb)
        metrics.append(MetricChange(metric, vb, vc, change, p, significant, counted))
    mean_change = (hc.mean_ns - hb.mean_ns) / 1e6 if hb and hc and hb.count and hc.count else 0.0
    layers = _layers(base, current, b, c, mean_change)
    worse = [m for m in metrics if m.counted and m.change_ms > 0]
    better = [m for m in metrics if m.counted and m.change_ms < 0]
    status = Change.WORSE if worse else Change.BETTER if better else Change.SAME
    layer = target = None
    if status is Change.SAME:
        reason = f"no significant change beyond {threshold.describe()}"
    else:
        sign = 1 if status is Change.WORSE else -1
        explaining = [lc for lc in layers if sign * lc.change_ms > 0 and lc.explained >= EXPLAINS]
        if explaining:
            best = max(explaining, key=lambda lc: (DEPTH[Layer(lc.layer)], lc.explained))
            layer, target = best.layer, best.target
            reason = (
                f"{best.layer} at {best.target} {best.change_ms:+.2f} ms per request, "
                f"{best.explained:.0%} of the client's {mean_change:+.2f} ms mean"
            )
        else:
            reason = f"no measured layer explains half of the client's {mean_change:+.2f} ms mean"
    return PhaseComparison(
        c,
        b,
        status,
        layer,
        target,
        reason,
        rb.requests,
        rc.requests,
        round(mean_change, 3),
        metrics,
        layers,
    )


def _client(report: Report, phase: str) -> ClientRow:
    row = next((r for r in report.client if r.phase == phase), None)
    return row or ClientRow(phase, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


def _p_value(metric: str, hb: FineHistogram | None, hc: FineHistogram | None, up: bool) -> float:
    if hb is None or hc is None:
        return 1.0
    if metric == "p50":
        return mann_whitney_hist(hb.buckets, hc.buckets)
    # more of the slower run's requests beyond the faster run's p99
    return tail_shift_p(hb.buckets, hc.buckets) if up else tail_shift_p(hc.buckets, hb.buckets)


def _layers(base: Report, current: Report, b: str, c: str, mean_change: float) -> list[LayerChange]:
    def shares(report: Report, phase: str) -> dict[tuple[str, str], float]:
        return {
            (r.layer, r.target): r.per_request_ms for r in report.layers if r.phase == phase and not r.metric
        }

    def added(report: Report, phase: str) -> dict[tuple[str, str], float]:
        v = next((v for v in report.verdicts if v.phase == phase), None)
        return {(x.layer, x.target): x.added_ms for x in v.contributions} if v else {}

    sb, sc = shares(base, b), shares(current, c)
    ab, ac = added(base, b), added(current, c)
    out = []
    keys = sorted(set(sb) | set(sc), key=lambda k: (DEPTH.get(Layer(k[0]), 9), k[1], k[0]))
    for key in keys:
        vb, vc = sb.get(key, 0.0), sc.get(key, 0.0)
        change = round(vc - vb, 3)
        added_change = round(ac[key] - ab[key], 3) if key in ab and key in ac else None
        explained = round(change / mean_change, 3) if abs(mean_change) > 1e-9 else 0.0
        out.append(LayerChange(key[0], key[1], vb, vc, change, explained, added_change))
    return out


def parse_threshold(values: list[str]) -> Threshold:
    """`5ms`, `10%`, `5ms,10%` (repeatable): a part not given is 0; nothing given is the default."""
    if not values:
        return DEFAULT_THRESHOLD
    ms, fraction = 0.0, 0.0
    for part in (p.strip() for v in values for p in v.split(",")):
        try:
            if part.endswith("%"):
                fraction = float(part[:-1]) / 100
                if not 0 <= fraction < 100:
                    raise ValueError("a percentage from 0 on")
            else:
                ms = parse_duration(part) * 1000
                if ms < 0:
                    raise ValueError("a duration from 0 on")
        except ValueError as exc:
            raise UsageError(
                f"--threshold {part!r}: {exc}", "give a duration (5ms), a percentage (10%) or both (5ms,10%)"
            ) from None
    return Threshold(ms=round(ms, 6), fraction=fraction)
