"""The probes a run attaches (what the scenario needs), their own cost in the report, the kill switch."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab import build
from chaoslab.layers import Layer
from chaoslab.probes.choose import needs
from chaoslab.probes.cost import NO_TRAPS, Usage
from chaoslab.probes.libbpf import BpfObject
from chaoslab.probes.stats import StatsGate
from chaoslab.scenario import parse_scenario
from tests.conftest import SCENARIOS, ScenarioRun, chaoslab

BASE = """
name: choose
targets:
  api: {service: go-api}
load: {protocol: https, target: api, path: /healthz, rate: 10/s}
phases:
  - {name: baseline, duration: 5s}
  - {name: slow, duration: 5s, compare: true}
"""


def test_what_a_scenario_needs_comes_from_its_expectations_stop_conditions_and_grpc_load() -> None:
    plain = parse_scenario(BASE)
    assert plain is not None and needs(plain, (), {}) == {}
    expecting = parse_scenario(
        BASE + "expect:\n  - {phase: slow, absorbed_by: [{layer: app, target: api}, gc]}\n"
    )
    assert expecting is not None
    assert set(needs(expecting, (), {})) == {(Layer.APP, "api"), (Layer.GC, None)}
    assert "expect[0]" in needs(expecting, (), {})[(Layer.APP, "api")]
    grpc = parse_scenario(
        BASE.replace("protocol: https, target: api, path: /healthz", "protocol: grpc, target: api")
    )
    assert grpc is not None and set(needs(grpc, (), {})) == {(Layer.APP, "api")}


def test_a_budget_under_its_limit_is_refused_at_its_path(tmp_path: Path) -> None:
    path = tmp_path / "budget.yaml"
    path.write_text(BASE + "probes: {budget: 20%, limit: 10%}\n")
    res = chaoslab("validate", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "probes.limit" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_targets_pay_a_tracepoint_probes_time_but_its_runs_for_other_processes() -> None:
    use = Usage(runs=1000, bpf_ns=100_000, traps=0, at=(("a", 150), ("b", 50)), emulated=0)
    # 800 runs for other processes at 50 ns: the targets pay the other 60 µs, split by their runs
    assert use.paid_ns(NO_TRAPS, 50.0) == {"a": 45_000.0, "b": 15_000.0}
    # never less than their share of the runs, never more than the whole
    assert sum(use.paid_ns(NO_TRAPS, 1000.0).values()) == pytest.approx(20_000)
    assert sum(use.paid_ns(NO_TRAPS, 0.0).values()) == pytest.approx(100_000)
    # no run counted in a target's threads: nothing to split by, the whole cost is each one's
    assert Usage(10, 500, 0, (("a", 0), ("b", 0)), 0).paid_ns(NO_TRAPS, 50.0) == {"a": 500, "b": 500}


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_the_report_says_what_each_probe_cost_and_why_it_was_attached(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("short_entropy")
    assert res.returncode == 0, res.stderr[-3000:]
    r = res.report
    costs = {c["layer"]: c for c in r["observer"]}
    # the entropy fault needs its layer; the app and gc uprobes (a trap per request) nothing needs
    assert "entropy fault" in costs["entropy"]["why"]
    assert {"proxy", "network", "syscall", "cpu", "entropy"} <= set(costs)
    assert {(u["layer"], u["target"]) for u in r["left_out"]} >= {("app", "api"), ("gc", "api")}
    assert "app" not in costs and "gc" not in costs
    assert r["observer_budget"] == 0.05
    for c in costs.values():
        if c["layer"] == "memory":  # reclaim: no event without memory pressure, and no cost
            assert c["events"] >= 0 and c["per_request_us"] < 5000, c
            continue
        assert c["events"] > 0 and c["bpf_ms"] > 0, c
        assert 0 < c["per_request_us"] < 5000, c
        assert 0 < c["latency_share"] < 1, c
    # each uprobe hit is a trap: two per randomness read (entry and return), and the report's
    # trap time is those hits at the trap cost timed at start-up; the reads are counted apart,
    # in the entropy layer's own histograms
    entropy = costs["entropy"]
    reads = sum(row["count"] for row in r["layers"] if row["layer"] == "entropy" and row["metric"] == "")
    assert reads > 0
    assert 1.5 * reads <= entropy["traps"] <= 2.5 * reads + 50, (reads, entropy["traps"])
    # half the hits (the entries) are on an instruction the kernel emulates, half (the RETs) not
    assert 0 < r["trap_emulated_us"] < r["trap_us"]
    mixed = entropy["traps"] * (r["trap_us"] + r["trap_emulated_us"]) / 2 / 1000
    assert entropy["trap_ms"] == pytest.approx(mixed, rel=0.1)
    # tracepoint programs run for every process: the target pays only for the runs in its threads
    assert costs["syscall"]["paid_ms"]["api"] < costs["syscall"]["bpf_ms"]
    assert "probes' own cost per request" in res.stdout


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_probe_over_its_hard_limit_is_detached_and_no_verdict_is_drawn_from_its_layer(
    tmp_path: Path,
) -> None:
    text = (SCENARIOS / "short_entropy.yaml").read_text() + "probes: {budget: 0.1%, limit: 0.2%}\n"
    path = tmp_path / "tiny_budget.yaml"
    path.write_text(text)
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))

    r = json.loads((tmp_path / "out" / "report.json").read_text())
    costs = {c["layer"]: c for c in r["observer"]}
    assert costs["entropy"]["lost"] and costs["entropy"]["lost_at"] is not None, costs["entropy"]
    assert "DETACHED" in res.stdout + res.stderr
    lost = {(u["layer"], u["target"]): u["reason"] for u in r["unmeasured"]}
    assert "kill switch" in lost[("entropy", "api")]
    assert not any(row["layer"] == "entropy" for row in r["layers"])
    [v] = r["verdicts"]
    assert (v["phase"], v["status"], v["layer"]) == ("starve", "inconclusive", "entropy")
    # the run finished: every phase ran, the expectation on the lost layer did not hold
    assert [p["name"] for p in r["phases"]] == ["baseline", "starve", "recovery"]
    assert res.returncode == 1, res.stderr[-2000:]


@pytest.mark.privileged
def test_the_kernels_statistics_run_in_windows_and_a_hold_keeps_them_on() -> None:
    # a program on every syscall of the machine: its run count grows only while they are on
    obj = BpfObject(build.bpf_object("syscalls"))
    obj.attach_all()
    gate = StatsGate(window=0.2, period=0.6, first=0.3)
    edges: list[tuple[bool, float]] = []
    gate.listen(lambda on: edges.append((on, time.monotonic())))

    def counting(seconds: float, gate: StatsGate = gate) -> set[tuple[bool, bool]]:
        """(gate on, the kernel counted runs) over short spans the gate did not change in."""
        seen, until = set(), time.monotonic() + seconds
        while time.monotonic() < until:
            # read under the gate's lock: the kernel's switch flips a moment before `on` does
            # (the gate's thread lets go of the interpreter in the system call between them)
            with gate._lock:
                on, runs = gate.on, obj.run_stats("sys_exit")[1]
            time.sleep(0.02)
            with gate._lock:
                if gate.on == on:
                    seen.add((on, obj.run_stats("sys_exit")[1] > runs))
        return seen

    start = time.monotonic()
    try:
        gate.sample()
        assert not gate.on  # the first window opens later
        assert counting(2.0) == {(True, True), (False, False)}
        ons = [at - start for on, at in edges if on]
        offs = [at - start for on, at in edges if not on]
        assert [on for on, _ in edges] == [True, False] * (len(edges) // 2) + [True] * (len(edges) % 2)
        assert 0.25 <= ons[0] <= 0.6 and len(ons) >= 3, edges
        windows = [off - on for on, off in zip(ons, offs, strict=False)]
        assert all(0.15 <= w <= 0.45 for w in windows), windows
        # a fault that reads its selector's time holds them on across the windows' ends
        gate.hold()
        assert counting(1.0) == {(True, True)}
        gate.release()
        gate.unsample()
        assert not gate.on and edges[-1][0] is False
        # where flipping the kernel's switch is unwelcome (an emulated machine): on throughout
        always = StatsGate(window=0.2, period=0.6, first=0.3, always=True)
        always.sample()
        assert counting(1.0, always) == {(True, True)}
        always.unsample()
        assert not always.on
    finally:
        gate.unsample()
        obj.close()
