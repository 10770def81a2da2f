"""Game-day safety for real: a stop condition that trips on a blackhole, the dead man's switch
undoing every fault kind of a stopped chaoslab on both runtimes, a chaoslab killed outright,
and one run per target. The machine must be clean after every test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab import journal, proc
from chaoslab.faults.entropy import INT3
from chaoslab.residue import leftovers
from chaoslab.safety.stop import STOP_BOUND
from chaoslab.targets import netns
from chaoslab.targets.cgroup import CpuLimit, frozen_state, read_cpu_limit, read_memory_limit
from tests.conftest import SCENARIOS, chaoslab, docker_listed
from tests.test_e2e import start_run, wait_for_fault
from tests.test_faults import on_runtime, target_tracer

pytestmark = [pytest.mark.privileged, pytest.mark.e2e, pytest.mark.usefixtures("clean_machine")]

SWITCH_BOUND = 5.0  # the scenarios' switch: the default


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# -- a stop condition ---------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_an_error_rate_stop_condition_trips_on_a_blackhole_and_reverts_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, runtime: str
) -> None:
    out = tmp_path / "out"
    res = chaoslab(
        "run", str(SCENARIOS / "abort_blackhole.yaml"), *on_runtime(request, runtime), "--out", str(out)
    )
    assert res.returncode == 5, res.stderr[-3000:]
    r = report(out)
    a = r["abort"]
    assert (a["condition"], a["by"], a["phase"]) == ("error_rate", "chaoslab", "dark")
    assert a["reason"].startswith("client error rate ") and "is above 20.0%" in a["reason"]
    # every fault reverted within the documented bound, timed from the trip
    assert a["bound_s"] == STOP_BOUND == 2.0
    assert 0 < a["revert_s"] < STOP_BOUND and set(a["reverts"]) == {"network on api"}
    print(f"\ntrip-to-revert, blackhole, {runtime}: {a['revert_s']:.3f} s")
    # long before the phase would have ended (30 s), with the phases so far in the report
    phases = {p["name"]: p for p in r["phases"]}
    assert list(phases) == ["baseline", "dark"] and phases["dark"]["aborted"]
    assert not phases["baseline"]["aborted"]
    assert a["at"] - phases["dark"]["start"] < 10
    assert r["passed"] is False and r["verdicts"] == []
    # the report says why, in every file
    assert "ABORTED in phase dark by the stop condition (error_rate)" in res.stdout
    assert "ABORTED" in (out / "summary.md").read_text()
    assert 'type="aborted"' in (out / "junit.xml").read_text()
    assert 'id="abort"' in (out / "report.html").read_text()
    assert journal.pending(out / "journal.jsonl") == []
    if runtime == "docker":
        assert docker_listed(out / "journal.jsonl") == []


# -- the dead man's switch: chaoslab stopped -----------------------------------------------------------

FAULTS = {
    "network": "{kind: network, target: api, delay: 40ms}",
    "cpu": "{kind: cpu, target: api, cpus: 0.2}",
    "syscall": "{kind: syscall, target: api, syscall: write, delay: 5ms}",
    "process": "{kind: process, target: api, action: pause}",
    "entropy": "{kind: entropy, target: api, delay: 3ms}",
    "memory": "{kind: memory, target: api, limit: 512MiB}",
}


def stall_run(tmp_path: Path, kind: str) -> Path:
    scenario = tmp_path / f"stall_{kind}.yaml"
    text = (SCENARIOS / "stall.yaml").read_text()
    scenario.write_text(text.replace("{kind: entropy, target: api, delay: 3ms}", FAULTS[kind]))
    return scenario


def handshake_ms(ip: str, port: int = 8443) -> float:
    """One TCP handshake to the target from an ordinary source port (faults act on it)."""
    with socket.socket() as s:
        s.settimeout(3)
        start = time.perf_counter()
        s.connect((ip, port))
        return (time.perf_counter() - start) * 1000


def target_ip(ns: str) -> str:
    res = subprocess.run(
        ["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True, text=True
    )
    return res.stdout.split()[3].split("/")[0]


def read_byte(pid: int, addr: int) -> int:
    with Path(f"/proc/{pid}/mem").open("rb") as mem:
        mem.seek(addr)
        return mem.read(1)[0]


def chain_exists(ns: str, chain: str) -> bool:
    argv = [*netns.enter_argv(ns), "iptables", "-w", "-S", chain]
    return subprocess.run(argv, capture_output=True).returncode == 0


def qdisc_ours(ns: str) -> bool:
    res = subprocess.run(["tc", "-n", ns, "qdisc", "show"], capture_output=True, text=True)
    return "htb 1:" in res.stdout


# What each fault kind leaves on the machine while it acts: `acting(record)` is True while its
# effect is there, on the wire, in the cgroup or in the kernel's tables.
def network_acting(rec: dict) -> bool:
    ns = str(rec["netns"])
    if not netns.exists(ns):  # the run is gone, its namespace with it
        return False
    slow = handshake_ms(target_ip(ns)) > 30  # the 40 ms egress delay, on the wire
    return slow or chain_exists(ns, str(rec["chain"])) or qdisc_ours(ns)


def cpu_acting(rec: dict) -> bool:
    return read_cpu_limit(Path(rec["dir"])) != CpuLimit(int(rec["quota_us"]), int(rec["period_us"]))


def process_acting(rec: dict) -> bool:
    return frozen_state(Path(rec["freezer"])) != "THAWED"


def syscall_acting(rec: dict) -> bool:
    return target_tracer(int(rec["pid"])) != 0 or not proc.exited(int(rec["uinject_pid"]))


def entropy_acting(rec: dict) -> bool:
    pid = int(rec["pid"])
    return target_tracer(pid) != 0 or read_byte(pid, int(rec["addr"])) == INT3


def memory_acting(rec: dict) -> bool:
    d = Path(rec["dir"])
    return d.exists() and read_memory_limit(d) != rec["previous"]


ACTING: dict[str, Callable[[dict], bool]] = {
    "memory": memory_acting,
    "network": network_acting,
    "cpu": cpu_acting,
    "syscall": syscall_acting,
    "process": process_acting,
    "entropy": entropy_acting,
}


def test_every_fault_kind_is_covered() -> None:
    from chaoslab.faults import FAULT_KINDS

    assert set(FAULTS) == set(ACTING) == set(FAULT_KINDS)


@pytest.mark.parametrize("runtime", ["local", "docker"])
@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_a_stopped_chaoslab_has_its_fault_undone_within_the_bound(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, runtime: str
) -> None:
    out = tmp_path / "out"
    p = start_run(out, stall_run(tmp_path, kind), *on_runtime(request, runtime))
    try:
        rec = wait_for_fault(out, p)
        assert ACTING[kind](rec), f"the {kind} fault does not act"
        p.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        while ACTING[kind](rec) and time.monotonic() - stopped < SWITCH_BOUND + 5:
            time.sleep(0.05)
        gone = time.monotonic() - stopped
        assert not ACTING[kind](rec), f"the {kind} fault still acts {gone:.1f} s after SIGSTOP"
        assert p.poll() is None  # chaoslab is still stopped
        assert gone <= SWITCH_BOUND, f"undone {gone:.2f} s after SIGSTOP, bound {SWITCH_BOUND} s"
    finally:
        p.send_signal(signal.SIGCONT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 6, err[-3000:]
    assert "ABORTED in phase stalled by the dead man's switch (switch)" in err
    r = report(out)
    a = r["abort"]
    assert (a["condition"], a["by"], a["phase"]) == ("switch", "watchdog", "stalled")
    assert 0 < a["revert_s"] <= a["bound_s"] == SWITCH_BOUND
    assert list(a["reverts"]) == [f"{kind} on api"]
    assert r["phases"][-1]["aborted"] and r["passed"] is False
    print(
        f"\nheartbeat-loss-to-revert, {kind}, {runtime}: {a['revert_s']:.3f} s (from SIGSTOP: {gone:.3f} s)"
    )
    if kind == "syscall":  # the BPF selector, held by the stopped chaoslab, selects no more
        assert "stopped selecting the calls of pid" in (out / "watchdog.log").read_text()
    assert journal.pending(out / "journal.jsonl") == []
    if runtime == "docker":
        assert docker_listed(out / "journal.jsonl") == []


# -- the dead man's switch: chaoslab killed ------------------------------------------------------------


def run_info(out: Path) -> journal.RunInfo:
    [info] = [i for _, i in journal.indexed_runs() if i.journal == (out / "journal.jsonl").resolve()]
    return info


def test_a_killed_chaoslab_has_its_whole_run_undone_by_its_watchdog(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = start_run(out, stall_run(tmp_path, "network"))
    rec = wait_for_fault(out, p)
    watchdog = run_info(out).watchdog_pid
    assert watchdog and os.getsid(watchdog) != os.getsid(p.pid)  # a session of its own
    p.kill()
    killed = time.monotonic()
    p.communicate(timeout=30)
    while network_acting(rec) and time.monotonic() - killed < SWITCH_BOUND:
        time.sleep(0.05)
    assert not network_acting(rec)
    while (left := leftovers()) and time.monotonic() - killed < 30:
        time.sleep(0.2)
    assert left == [], "the watchdog undoes the whole run of a dead chaoslab"
    done = time.monotonic()  # the last thing undone is gone; the watchdog ends right after
    while not proc.exited(watchdog) and time.monotonic() - done < 5:
        time.sleep(0.05)
    assert proc.exited(watchdog)  # and is gone with it
    assert "undid network on api" in (out / "watchdog.log").read_text()
    res = chaoslab("recover")
    assert res.returncode == 0 and "nothing to recover" in res.stdout


# -- one run per target ---------------------------------------------------------------------------------


HELD = """\
name: held
targets:
  api: {{attach: {{pid: {pid}}}, ports: {{http: {port}}}, health: {{http: /healthz}}}}
load: {{protocol: http, target: api, path: "/work?work=20", rate: 30/s, concurrency: 8}}
phases:
  - {{name: baseline, duration: 4s}}
  - {{name: slow, duration: 8s, faults: [{{kind: syscall, target: api, syscall: write, delay: 20ms}}]}}
  - {{name: recovery, duration: 2s}}
expect:
  - {{phase: slow, absorbed_by: syscall, target: api}}
"""


def held_scenario(tmp_path: Path, name: str, pid: int, port: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HELD.format(pid=pid, port=port))
    return path


def finished(p: subprocess.Popen[str], out: Path) -> dict:
    _, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-3000:]
    [v] = report(out)["verdicts"]
    assert (v["phase"], v["status"], v["layer"], v["target"]) == ("slow", "absorbed", "syscall", "api")
    return report(out)


def test_a_second_run_on_a_held_target_is_refused_and_the_first_is_unharmed(
    tmp_path: Path, go_api: Callable[[], tuple[int, int]]
) -> None:
    pid, port = go_api()
    scenario = held_scenario(tmp_path, "held", pid, port)
    first, second = tmp_path / "first", tmp_path / "second"
    p1 = start_run(first, scenario)
    wait_for_fault(first, p1)
    holder = run_info(first)
    res = chaoslab("run", str(scenario), "--out", str(second))
    assert res.returncode == 3, res.stderr[-3000:]
    err = " ".join(res.stderr.split())
    assert f"target api (pid {pid}) is held by run {holder.run_id[:12]} (chaoslab pid {p1.pid}" in err
    assert f"report directory {first.resolve()}" in err and "nothing was applied" in err
    assert not [e for e in journal.pending(second / "journal.jsonl") if e.kind == "fault"]
    assert "fault" not in (second / "journal.jsonl").read_text()
    finished(p1, first)  # unharmed: its verdict as if it had run alone


def test_two_runs_on_different_targets_both_finish_with_their_verdicts(
    tmp_path: Path, go_api: Callable[[], tuple[int, int]]
) -> None:
    runs = []
    for name in ("one", "two"):
        pid, port = go_api()
        out = tmp_path / name
        runs.append((start_run(out, held_scenario(tmp_path, name, pid, port)), out))
    reports = [finished(p, out) for p, out in runs]
    assert reports[0]["run_id"] != reports[1]["run_id"]


def test_a_verification_that_runs_past_the_phase_end_in_its_time_is_not_late(tmp_path: Path) -> None:
    """A 1 s delay's network check takes about six delayed handshakes, past the phase's end plus
    the default 5 s margin: the deadline moves on with it, and the run ends as it should."""
    path = tmp_path / "big_delay.yaml"
    path.write_text(
        "name: big-delay\n"
        "targets: {api: {service: go-api}}\n"
        "load: {protocol: https, target: api, path: /work, rate: 5/s, concurrency: 32, timeout: 30s}\n"
        "phases:\n"
        "  - {name: baseline, duration: 4s}\n"
        "  - name: slow\n"
        "    duration: 4s\n"
        "    faults: [{kind: network, target: api, delay: 1s, local_port: 8443}]\n"
        "  - {name: recovery, duration: 2s}\n"
    )
    out = tmp_path / "out"
    res = chaoslab("run", str(path), "--out", str(out), timeout=300)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    r = report(out)
    assert r["abort"] is None, r["abort"]
    [slow] = [p for p in r["phases"] if p["name"] == "slow"]
    assert all(f["observed"] for f in slow["faults"]), slow["faults"]
    assert journal.pending(out / "journal.jsonl") == []
