"""End to end through the real CLI: real Go service, real Envoy, real Locust, real BPF probes,
the real entropy fault; after each run, nothing of it may be left on the machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab import journal
from chaoslab.residue import leftovers
from tests.conftest import REPO, SCENARIOS, ScenarioRun, chaoslab

pytestmark = [pytest.mark.privileged, pytest.mark.e2e, pytest.mark.usefixtures("clean_machine")]


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_entropy_fault_is_absorbed_by_entropy_at_the_go_service(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("short_entropy")
    assert res.returncode == 0, res.stderr[-3000:]
    r = res.report
    assert r["schema"] == "chaoslab.report/2"
    [v] = r["verdicts"]
    assert (v["phase"], v["status"], v["layer"], v["target"]) == ("starve", "absorbed", "entropy", "api")
    assert 0.5 <= v["explained"] <= 1.0
    assert v["client_added_p50_ms"] > 5
    rows = {(row["phase"], row["layer"]): row for row in r["layers"] if row["metric"] == ""}
    # every randomness read was held 3 ms: the probe sees it, the baseline does not
    assert rows[("starve", "entropy")]["p50_ms"] == pytest.approx(3.0, rel=0.2)
    assert rows[("baseline", "entropy")]["p50_ms"] < 0.5
    # the tls layer is not attached: nothing in the scenario needs it, and its uprobes trap every
    # handshake (`chaoslab.probes.choose`); the verdict does not need it either
    assert ("starve", "tls") not in rows
    assert {(u["layer"], u["target"]) for u in r["left_out"]} >= {("tls", "api"), ("app", "api")}
    assert rows[("starve", "proxy")]["count"] > 100
    [fault] = r["phases"][1]["faults"]
    assert fault["observed"] and fault["kind"] == "entropy"
    assert {c["phase"] for c in r["client"]} == {"baseline", "starve", "recovery"}
    assert all(c["errors"] == 0 for c in r["client"])
    assert "absorbed by entropy at api" in res.stdout
    # the journal shows every change undone
    assert journal.pending(res.out / "journal.jsonl") == []


def test_control_without_fault_is_no_change(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("short_control")
    assert res.returncode == 0, res.stderr[-3000:]
    [v] = res.report["verdicts"]
    assert v["status"] == "no-change", v


def test_bad_scenario_exits_2_and_touches_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (SCENARIOS / "short_entropy.yaml").read_text().replace("target: api, delay", "target: db, delay")
    )
    res = chaoslab("run", str(bad), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert "phases[1].faults[0].target: unknown target 'db'" in res.stderr
    assert not (tmp_path / "out").exists()


def start_run(
    tmp_path: Path, scenario: Path = SCENARIOS / "long_fault.yaml", *args: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaoslab", "run", str(scenario), *args, "--out", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_fault(tmp_path: Path, p: subprocess.Popen[str], timeout: float = 90) -> dict:
    """Wait until the fault is applied (journaled as applied) and has acted for a while."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()[1][-3000:]
        j = tmp_path / "journal.jsonl"
        if j.exists():
            faults = [e for e in journal.pending(j) if e.kind == "fault" and e.data.get("applied")]
            if faults:
                time.sleep(2)
                return faults[0].data
        time.sleep(0.2)
    p.kill()
    raise AssertionError("the fault was never applied")


def kill_with_watchdog(out: Path, p: subprocess.Popen[str]) -> None:
    """SIGKILL chaoslab and its watchdog (first, so it cannot react): nothing undoes the run but
    `chaoslab recover` (tests/test_safety.py kills chaoslab alone: its watchdog undoes the run)."""
    [info] = [i for _, i in journal.indexed_runs() if i.journal == (out / "journal.jsonl").resolve()]
    assert info.watchdog_pid
    os.kill(info.watchdog_pid, signal.SIGKILL)
    p.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_fault_reverts_and_tears_down(tmp_path: Path, sig: signal.Signals) -> None:
    p = start_run(tmp_path)
    fault = wait_for_fault(tmp_path, p)
    assert Path(f"/proc/{fault['pid']}").exists()
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-3000:]
    assert f"interrupted by {sig.name}" in err
    assert journal.pending(tmp_path / "journal.jsonl") == []


def test_crashed_target_ends_the_run_and_reverts(tmp_path: Path) -> None:
    p = start_run(tmp_path)
    fault = wait_for_fault(tmp_path, p)
    os.kill(int(fault["pid"]), signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 3, err[-3000:]
    assert "target api exited" in err
    assert journal.pending(tmp_path / "journal.jsonl") == []


def test_sigkill_mid_fault_then_recover_leaves_nothing(tmp_path: Path) -> None:
    p = start_run(tmp_path)
    fault = wait_for_fault(tmp_path, p)
    target_pid, addr, orig = int(fault["pid"]), int(fault["addr"]), int(fault["orig_byte"])
    kill_with_watchdog(tmp_path, p)
    p.communicate(timeout=30)
    time.sleep(1)
    assert leftovers(), "a killed run should leave its targets for recover to find"
    # the injector saw its parent die and restored the target's instruction by itself
    deadline = time.monotonic() + 10
    while True:
        with Path(f"/proc/{target_pid}/mem").open("rb") as mem:
            mem.seek(addr)
            now = mem.read(1)[0]
        if now == orig or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert now == orig
    first = chaoslab("recover")
    assert first.returncode == 0, first.stderr
    assert "deleted network namespace" in first.stdout
    assert leftovers() == []
    second = chaoslab("recover")
    assert second.returncode == 0
    assert "nothing to recover" in second.stdout
