"""The Go scheduler layer: the time a Go target's goroutines wait runnable for a P, measured
by a uprobe on runtime.casgstatus, and found where a fault holds the Ps."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab import build, goruntime
from chaoslab.gobinary import find_function
from chaoslab.probes.gofunc import STATUS_FUNCTION
from tests.conftest import ScenarioRun


def test_the_state_changes_are_one_emulated_trap() -> None:
    """Every goroutine switch runs casgstatus several times: its entry uprobe must be one
    the kernel emulates (PUSHQ BP, no single step)."""
    fn = find_function(build.go_service("go-api"), STATUS_FUNCTION)
    assert fn.entry_emulated, fn


@pytest.mark.privileged
def test_goroutines_queued_behind_held_reads_are_the_entropy_faults_effect(
    scenario_run: Callable[..., ScenarioRun],
) -> None:
    run = scenario_run("closed_entropy")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = json.loads((run.out / "report.json").read_text())
    [v] = [v for v in report["verdicts"] if v["phase"] == "starve"]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "gosched", "api"), v["reason"]
    causes = {(c["layer"], c["target"]): c for c in v["causes"]}
    fault = [{"kind": "entropy", "layer": "entropy", "target": "api"}]
    assert causes[("gosched", "api")]["faults"] == fault and causes[("entropy", "api")]["faults"] == fault
    # the reads' own time is a few ms a request; the queue behind them, several times that
    assert causes[("gosched", "api")]["added_ms"] > 2 * causes[("entropy", "api")]["added_ms"] > 0
    rows = {(r["phase"], r["metric"]): r for r in report["layers"] if r["layer"] == "gosched"}
    # every request's connection starts a goroutine, woken again for each read it waits on
    assert rows[("baseline", "new goroutine")]["count"] > 0 and rows[("baseline", "woken")]["count"] > 0
    assert rows[("starve", "woken")]["mean_ms"] > 5 * rows[("baseline", "woken")]["mean_ms"]
    assert any(p.startswith("gosched: uprobe on runtime.casgstatus") for p in report["probes"])
    # GOMAXPROCS, read in every phase: the machine's CPUs, as no fault limited them
    cpus = len(os.sched_getaffinity(0))
    assert [p["gomaxprocs"] for p in report["phases"]] == [{"api": cpus}] * 3
    assert v["runtime"] == []


def test_the_runtimes_changes_are_said_against_the_baseline() -> None:
    base = {"api": 4, "cache": 2}
    assert goruntime.changes(base, {"api": 2, "cache": 2}, ["api"]) == [
        "GOMAXPROCS at api 4 -> 2 (the Go runtime followed the CPU limit)"
    ]
    assert goruntime.changes(base, {"api": 4, "cache": 1}) == ["GOMAXPROCS at cache 2 -> 1"]
    assert goruntime.changes(base, {"api": 4}) == []  # cache gone (killed): nothing to compare


@pytest.mark.privileged
def test_gomaxprocs_is_read_from_the_process_and_follows_its_cpus(
    go_api: Callable[[], tuple[int, int]],
) -> None:
    """Go 1.25+ follows the CPUs a process may run on: pinned to one CPU, the service's
    GOMAXPROCS, read from its memory, drops to 1 within sysmon's next look (once a second while
    the service has work: an idle one's sysmon sleeps); it comes back."""
    pid, port = go_api()
    exe = Path(f"/proc/{pid}/exe").resolve()
    cpus = len(os.sched_getaffinity(pid))
    assert goruntime.read_gomaxprocs(pid, exe) == cpus
    if cpus < 2:
        pytest.skip("one CPU: nothing to pin the service down to")

    def settles(n: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # at most 100 requests
            if goruntime.read_gomaxprocs(pid, exe) == n:
                return True
            urllib.request.urlopen(f"http://127.0.0.1:{port}/work?work=20", timeout=5).read()
            time.sleep(0.1)
        return False

    subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], check=True, capture_output=True)
    assert settles(1), goruntime.read_gomaxprocs(pid, exe)
    subprocess.run(["taskset", "-a", "-p", "-c", f"0-{cpus - 1}", str(pid)], check=True, capture_output=True)
    assert settles(cpus), goruntime.read_gomaxprocs(pid, exe)
    assert goruntime.read_gomaxprocs(999_999_999, exe) is None  # no such process


def test_a_runtime_change_is_said_with_the_verdict_in_every_format() -> None:
    from chaoslab.report import html, markdown
    from chaoslab.report.reader import read_report
    from tests.test_report_files import ENTROPY

    report = read_report(ENTROPY)
    line = "GOMAXPROCS at api 4 -> 2 (the Go runtime followed the CPU limit)"
    report.verdicts = [dataclasses.replace(v, runtime=[line]) for v in report.verdicts]
    assert report.verdicts[0].sentence().endswith(f"; Go runtime: {line}")
    assert f"Go runtime: {line}" in markdown.render(report)
    assert f"Go runtime: {html.escape(line)}." in html.render_report(report)
