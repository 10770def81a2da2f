"""The layer matrix: one short scenario per fault kind and a control, on this machine's real
targets and probes. Each fault must be absorbed by the layer it declares, at its target, and
the report's table must give the added median and p99 of every layer at every target."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaoslab.analysis.attribution import MIN_ADDED_S
from chaoslab.layers import Layer
from tests.conftest import ScenarioRun

pytestmark = [pytest.mark.privileged, pytest.mark.e2e, pytest.mark.usefixtures("clean_machine")]

# scenario (scenarios/NAME: the library's, in its short variant, a run shared with
# tests/test_library.py), fault phase, expected layer, expected target
MATRIX = [
    ("short_entropy", "starve", "entropy", "api"),
    ("scenarios/net_delay", "slow", "network", "api"),
    ("scenarios/cpu_limit", "starved", "cpu", "api"),
    ("scenarios/syscall_delay", "slow-write", "syscall", "api"),
    ("scenarios/pause", "paused", "cpu", "api"),
]


@pytest.mark.parametrize(("scenario", "phase", "layer", "target"), MATRIX, ids=[m[0] for m in MATRIX])
def test_fault_is_absorbed_by_its_declared_layer(
    scenario_run: Callable[[str], ScenarioRun], scenario: str, phase: str, layer: str, target: str
) -> None:
    res = scenario_run(scenario)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    r = res.report
    [fault] = next(p for p in r["phases"] if p["name"] == phase)["faults"]
    assert (fault["layer"], fault["target"]) == (layer, target)  # what the fault declares
    [v] = [v for v in r["verdicts"] if v["phase"] == phase]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", layer, target), v["reason"]
    assert 0.5 <= v["explained"] <= 1.0
    assert v["unexplained_ms"] >= 0
    contributions = {(c["layer"], c["target"]): c for c in v["contributions"]}
    named = contributions[(layer, target)]
    assert named["significant"] and named["p_value"] < 0.001
    assert named["added_ms"] > 0
    # the per-layer table of the phase: every measured layer at every target, added p50 and p99
    measured = {(row["layer"], row["target"]) for row in r["layers"] if row["phase"] == phase}
    assert {k for k in measured if k[0] != "proxy" or k in contributions} <= set(contributions)
    for c in v["contributions"]:
        assert {"added_p50_ms", "added_p99_ms", "p_value", "significant"} <= set(c)
    assert f"absorbed by {layer} at {target}" in res.stdout


def test_control_names_no_layer(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("short_control")
    assert res.returncode == 0, res.stderr[-3000:]
    [v] = res.report["verdicts"]
    assert (v["status"], v["layer"]) == ("no-change", None), v["reason"]
    # With thousands of samples a layer can drift by a fraction of a millisecond significantly,
    # and that can be a large share of a client drift that is itself below the threshold: no
    # layer may move by as much as a verdict counts as a change.
    floor_ms = MIN_ADDED_S * 1000
    assert not any(c["significant"] and c["added_ms"] >= floor_ms for c in v["contributions"]), v
    assert abs(v["client_added_p50_ms"]) < floor_ms


def test_matrix_covers_every_fault_kind_but_kill_and_every_probed_layer_of_them() -> None:
    from chaoslab.faults import FAULT_KINDS

    kinds = {"short_entropy": "entropy", "net_delay": "network", "cpu_limit": "cpu"}
    kinds |= {"syscall_delay": "syscall", "pause": "process"}
    # the memory fault's run is tests/test_memory.py's (on a cgroup of the test's own, whose
    # limit it reads before and after)
    kinds |= {"test_memory": "memory"}
    assert set(kinds.values()) == set(FAULT_KINDS)
    assert {m[2] for m in MATRIX} <= {str(layer) for layer in Layer}
