from __future__ import annotations

import random

import pytest

from chaoslab.analysis.attribution import FaultCheck, drift, verdict
from chaoslab.analysis.stats import mann_whitney_p
from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.load.records import Request
from chaoslab.scenario.model import Status


def requests(latencies: list[float], start: float = 1000.0) -> list[Request]:
    return [
        Request(start + i * 0.02, start + i * 0.02, start + i * 0.02 + lat, 200, "work", "")
        for i, lat in enumerate(latencies)
    ]


def lat(rng: random.Random, n: int, median: float) -> list[float]:
    return [median * rng.lognormvariate(0, 0.25) for _ in range(n)]


def snapshot(n: int, entropy_each: float, reads: int, tls_extra: float, proxy_extra: float) -> dict:
    e = Histogram.of([int(entropy_each * 1e9)] * (n * reads))
    t = Histogram.of([int((entropy_each * reads + tls_extra) * 1e9)] * n)
    p = Histogram.of([int((entropy_each * reads + tls_extra + proxy_extra) * 1e9)] * n)
    return {(Layer.ENTROPY, "api"): e, (Layer.TLS, "api"): t, (Layer.PROXY, "edge"): p}


def test_mann_whitney_separates_shifted_samples_only() -> None:
    rng = random.Random(1)
    a, b = lat(rng, 400, 0.004), lat(rng, 400, 0.004)
    assert mann_whitney_p(a, b) > 0.01
    assert mann_whitney_p(a, [x + 0.003 for x in lat(rng, 400, 0.004)]) < 1e-6
    assert mann_whitney_p([1.0] * 3, [2.0] * 3) == 1.0  # too few to decide


def test_entropy_fault_is_attributed_to_the_deepest_explaining_layer() -> None:
    rng = random.Random(2)
    base = requests(lat(rng, 400, 0.004))
    fault = requests([x + 0.012 for x in lat(rng, 400, 0.004)])
    v = verdict(
        "starve",
        base,
        snapshot(400, 20e-6, 4, 0.001, 0.002),
        fault,
        snapshot(400, 3e-3, 4, 0.001, 0.002),
        [FaultCheck(Layer.ENTROPY, "api", 0.003, True, "held")],
    )
    assert v.status is Status.ABSORBED
    assert (v.layer, v.target) == ("entropy", "api")
    assert v.added_ms == pytest.approx(11.92, abs=0.05)
    assert v.explained == pytest.approx(1.0, abs=0.1)
    assert [c.layer for c in v.contributions] == ["entropy", "tls", "proxy"]
    assert "absorbed by entropy at api (inside tls at api, proxy at edge), 100% explained" in v.sentence()


def test_outer_layer_wins_when_inner_layers_do_not_explain() -> None:
    rng = random.Random(3)
    base = requests(lat(rng, 400, 0.004))
    fault = requests([x + 0.010 for x in lat(rng, 400, 0.004)])
    v = verdict(
        "slow", base, snapshot(400, 20e-6, 4, 0.001, 0.002), fault, snapshot(400, 20e-6, 4, 0.001, 0.012), []
    )
    assert v.status is Status.ABSORBED
    assert v.layer == "proxy"


def test_unchanged_phase_is_no_change() -> None:
    rng = random.Random(4)
    snap = snapshot(400, 20e-6, 4, 0.001, 0.002)
    v = verdict("control", requests(lat(rng, 400, 0.004)), snap, requests(lat(rng, 400, 0.004)), snap, [])
    assert v.status is Status.NO_CHANGE
    assert v.layer is None


def test_fault_whose_layer_shows_nothing_is_invalid() -> None:
    rng = random.Random(5)
    snap = snapshot(400, 20e-6, 4, 0.001, 0.002)
    base = requests(lat(rng, 400, 0.004))
    slow = requests([x + 0.01 for x in lat(rng, 400, 0.004)])
    v = verdict("starve", base, snap, slow, snap, [FaultCheck(Layer.ENTROPY, "api", 0.003, True, "held")])
    assert v.status is Status.INVALID
    assert "rose by 0.00 ms per event, expected about 3.00 ms" in v.reason
    v2 = verdict("starve", base, snap, slow, snap, [FaultCheck(Layer.ENTROPY, "api", None, False, "0 of 0")])
    assert v2.status is Status.INVALID
    assert "mechanism saw no effect" in v2.reason


def test_slowdown_no_layer_explains_is_inconclusive() -> None:
    rng = random.Random(6)
    snap = snapshot(400, 20e-6, 4, 0.001, 0.002)
    v = verdict(
        "x",
        requests(lat(rng, 400, 0.004)),
        snap,
        requests([x + 0.02 for x in lat(rng, 400, 0.004)]),
        snap,
        [],
    )
    assert v.status is Status.INCONCLUSIVE


def test_drift_between_baseline_and_recovery_is_reported() -> None:
    rng = random.Random(8)
    assert (
        drift(requests(lat(rng, 300, 0.004)), requests(lat(rng, 300, 0.004)), "baseline", "recovery") is None
    )
    text = drift(requests(lat(rng, 300, 0.004)), requests(lat(rng, 300, 0.009)), "baseline", "recovery")
    assert text is not None and "the baseline drifted" in text
