"""Verdicts with several causes, for real: two and three faults in one phase, each fault's cause
against the same fault alone in the same session, the spill of a fault into another target's
CPU, single faults and the control as they always were."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import ScenarioRun, story
from tests.test_matrix import MATRIX

pytestmark = [pytest.mark.privileged, pytest.mark.e2e, pytest.mark.usefixtures("clean_machine")]

Key = tuple[str, str]  # (layer, target)


def verdict(res: ScenarioRun, phase: str) -> dict:
    assert res.returncode in (0, 1), res.stderr[-3000:]
    [v] = [v for v in res.report["verdicts"] if v["phase"] == phase]
    return v


def causes(v: dict, kind: str | None = None) -> dict[Key, dict]:
    return {(c["layer"], c["target"]): c for c in v["causes"] if kind is None or c["kind"] == kind}


def own(v: dict) -> dict[Key, dict]:
    """The faults' causes in their own layers (entropy at api for an entropy fault on api),
    after checking that every other fault-kind cause is an effect a fault of the phase declares
    (gosched at api for that entropy fault: a read held in user space keeps its thread's P)."""
    found = causes(v, "fault")
    mine = {k: c for k, c in found.items() if any((f["layer"], f["target"]) == k for f in c["faults"])}
    for k, c in found.items():
        assert c["faults"] and all((f["layer"], f["target"]) in mine for f in c["faults"]), (k, v["causes"])
    return mine


def solo(res: ScenarioRun, phase: str, key: Key) -> dict:
    v = verdict(res, phase)
    assert v["status"] == "absorbed" and (v["layer"], v["target"]) == key, v["reason"]
    return own(v)[key]


def per_request(res: ScenarioRun, phase: str, key: Key) -> float:
    """The events a request had in a layer at a target (the layer's own row)."""
    [row] = [
        r
        for r in res.report["layers"]
        if (r["phase"], r["layer"], r["target"], r["metric"]) == (phase, *key, "")
    ]
    [client] = [c for c in res.report["client"] if c["phase"] == phase and not c["name"]]
    return row["count"] / client["requests"]


def test_two_faults_on_two_targets_are_two_causes_each_adding_what_it_adds_alone(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("two_faults")
    assert res.returncode == 0, story(res)
    v = verdict(res, "both")
    assert v["status"] == "absorbed", v["reason"]
    found = own(v)
    assert set(found) == {("entropy", "api"), ("network", "edge")}, v["causes"]
    assert found[("entropy", "api")]["faults"] == [{"kind": "entropy", "layer": "entropy", "target": "api"}]
    assert found[("network", "edge")]["faults"] == [{"kind": "network", "layer": "network", "target": "edge"}]
    assert v["explained"] >= 0.8
    assert sum(c["share"] for c in found.values()) >= 0.8  # the faults' own causes, side effects apart
    assert f"absorbed by {len(causes(v, 'fault'))} causes: " in res.stdout
    # each one adds what the same fault adds in a run of its own: the same faulted events per
    # request (4 reads of randomness), each held at least as long. On two cores shared by
    # Envoy, the Go service, Locust and both faults' helpers (the tracer holding the reads, the
    # packet queue's delayer), a hold is longer by the tracer's wake-up when the other fault
    # keeps a core busy: 3.4 ms a read alone, 4.8 ms beside it, in one CI run. Beside it, the
    # entropy cause added 19.3, 23.1 and 20.6 ms in three CI runs, against 13.6, 14.4 and
    # 13.3 ms alone: up to twice is the tracer; a cause that took in the other's time (17 ms
    # of network at edge here) would be 2.5 times or more.
    entropy_alone = scenario_run("short_entropy")
    alone = {
        ("entropy", "api"): solo(entropy_alone, "starve", ("entropy", "api")),
        ("network", "edge"): solo(scenario_run("edge_listener"), "slow", ("network", "edge")),
    }
    for key, cause in found.items():
        assert 0.8 * alone[key]["added_ms"] <= cause["added_ms"] <= 2.0 * alone[key]["added_ms"], (
            key,
            cause,
            alone[key],
        )
    reads = per_request(res, "both", ("entropy", "api"))
    assert reads == pytest.approx(per_request(entropy_alone, "starve", ("entropy", "api")), rel=0.1)
    assert all(e["held"] for e in res.report["expectations"]), res.report["expectations"]


def test_three_faults_are_three_causes_that_explain_most_of_it(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("three_faults")
    assert res.returncode == 0, story(res)
    v = verdict(res, "three")
    assert v["status"] == "absorbed", v["reason"]
    found = own(v)
    assert set(found) == {("entropy", "api"), ("network", "edge"), ("syscall", "edge")}, v["causes"]
    assert {c["faults"][0]["kind"] for c in found.values()} == {"entropy", "network", "syscall"}
    assert v["explained"] >= 0.8
    assert sum(c["share"] for c in found.values()) >= 0.8
    # alone (against the same baseline), each fault is its one cause
    assert solo(res, "link", ("network", "edge"))["added_ms"] > 0
    assert solo(res, "socket", ("syscall", "edge"))["added_ms"] > 0
    assert f"absorbed by {len(causes(v, 'fault'))} causes: " in res.stdout


def test_a_fault_that_spills_into_another_targets_cpu_has_it_as_a_side_effect(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    # 5 ms on Envoy's packets to the Go service holds each request about 25 ms longer; the Go
    # service's CPU waits are weighed by the requests in flight, so its cpu layer rises with
    # them: a spill into another target's CPU that no fault declared
    v = verdict(scenario_run("three_faults"), "link")
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "network", "edge"), v["reason"]
    spill = next(c for c in v["contributions"] if (c["layer"], c["target"]) == ("cpu", "api"))
    assert spill["significant"] and spill["added_ms"] > 0, spill
    [mine] = own(v).values()
    assert (mine["layer"], mine["target"], mine["faults"][0]["kind"]) == ("network", "edge", "network")
    # listed when it is 2% of the client's added time or more, and then as a side effect
    listed = causes(v).get(("cpu", "api"))
    assert listed is None or (listed["kind"], listed["faults"]) == ("side-effect", []), v["causes"]
    # the fault's share is its own cause's, of the client's added time in the phase: the spill is
    # never added to it
    in_phase = v["client_added_mean_ms"] - v["carried_ms"]
    assert mine["share"] == pytest.approx(mine["added_ms"] / in_phase, abs=0.002)


@pytest.mark.parametrize(("scenario", "phase", "layer", "target"), MATRIX, ids=[m[0] for m in MATRIX])
def test_a_single_fault_is_still_its_one_cause(
    scenario_run: Callable[[str], ScenarioRun], scenario: str, phase: str, layer: str, target: str
) -> None:
    v = verdict(scenario_run(scenario), phase)
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", layer, target), v["reason"]
    assert list(own(v)) == [(layer, target)]
    assert v["causes"][0]["layer"] == layer  # the main cause first
    # the rest: side effects, or effects the fault declares (own() checked those)
    assert all(c["kind"] in ("side-effect", "fault") for c in v["causes"][1:]), v["causes"]


def test_the_control_has_no_causes(scenario_run: Callable[[str], ScenarioRun]) -> None:
    v = verdict(scenario_run("short_control"), "control")
    assert (v["status"], v["layer"], v["causes"]) == ("no-change", None, []), v
