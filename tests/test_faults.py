"""The fault catalog on real targets: each fault's effect measured, and each one reverted on
SIGTERM and recovered after SIGKILL. The machine must be clean after every test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab import journal
from chaoslab.faults import FAULT_KINDS
from chaoslab.faults.cpu import CpuFault
from chaoslab.faults.net.tc import netem_available
from chaoslab.faults.syscall import SyscallFault, SyscallSpec
from chaoslab.residue import leftovers
from chaoslab.scenario import parse_scenario
from chaoslab.scenario.model import TargetSpec
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.cgroup import Cgroup, CpuLimit, cpu_dir, read_cpu_limit, write_cpu_limit
from chaoslab.targets.services import Service
from tests.conftest import SCENARIOS, ScenarioRun, chaoslab, docker_listed
from tests.test_e2e import kill_with_watchdog, start_run, wait_for_fault

pytestmark = [pytest.mark.privileged, pytest.mark.e2e, pytest.mark.usefixtures("clean_machine")]


@pytest.fixture
def run(scenario_run: Callable[[str], ScenarioRun]) -> Callable[[str], dict]:
    """The report of a scenario run (one run per session, shared with the layer matrix)."""

    def report(name: str) -> dict:
        res = scenario_run(name)
        assert res.returncode in (0, 1), res.stderr[-3000:]
        assert journal.pending(res.out / "journal.jsonl") == []
        return res.report

    return report


def client(r: dict) -> dict[str, dict]:
    return {c["phase"]: c for c in r["client"]}


def fault(r: dict, phase: int = 1) -> dict:
    [f] = r["phases"][phase]["faults"]
    return f


def test_egress_delay_adds_40ms_to_the_round_trip_and_the_client(run: Callable[[str], dict]) -> None:
    r = run("net_delay")
    f, c = fault(r), client(r)
    assert f["observed"], f["detail"]
    m = f["measured"]
    assert m["rtt_added_ms"] == pytest.approx(40, rel=0.2)
    assert c["slow"]["p50_ms"] - c["baseline"]["p50_ms"] == pytest.approx(40, rel=0.2)
    # both back after revert: the wire, and the client
    assert m["rtt_after_revert_ms"] < m["rtt_before_ms"] + 2
    assert c["recovery"]["p50_ms"] < c["baseline"]["p50_ms"] + max(2, 0.2 * c["baseline"]["p50_ms"])
    assert f["mechanism"].startswith("tc netem" if netem_available() else "iptables NFQUEUE + nfqdelay")


def test_loss_drops_packets_and_causes_retransmissions(run: Callable[[str], dict]) -> None:
    r = run("net_loss")
    f = fault(r)
    assert f["observed"], f["detail"]
    assert f["measured"]["tcp_retransmissions"] > 0
    if not netem_available():
        share = f["measured"]["loss_packets"] / f["measured"]["packets_matched"]
        assert 0.03 < share < 0.2
    assert client(r)["lossy"]["p99_ms"] > client(r)["baseline"]["p99_ms"] + 100  # retransmission timeouts


def test_blackhole_fails_requests_which_recover_after_revert(run: Callable[[str], dict]) -> None:
    r = run("net_blackhole")
    f, c = fault(r), client(r)
    assert f["observed"], f["detail"]
    assert f["measured"]["rtt_timeouts"] == 3 and f["measured"]["blackhole_packets"] > 0
    assert c["dark"]["errors"] > 0
    assert c["recovery"]["errors"] == 0 and c["recovery"]["requests"] > 0
    assert f["measured"]["rtt_after_revert_ms"] < 5


def test_cpu_limit_throttles_and_slows_the_client(run: Callable[[str], dict]) -> None:
    r = run("cpu_limit")
    f, c = fault(r), client(r)
    assert f["observed"], f["detail"]
    assert f["measured"]["nr_throttled"] > 0.5 * f["measured"]["nr_periods"]
    assert f["measured"]["runqueue_wait_ms"] > 100
    assert c["starved"]["p50_ms"] > 2 * c["baseline"]["p50_ms"]
    assert c["recovery"]["p50_ms"] < 2 * c["baseline"]["p50_ms"]


def test_cpu_revert_restores_the_previous_limit(tmp_path: Path) -> None:
    """A limit that was there before the fault (a container's own) comes back, on v1 or v2."""
    cg = Cgroup.create(f"chaoslab-test-{os.getpid()}")
    try:
        d = cpu_dir(cg.dirs)
        before = CpuLimit(50_000, 100_000)
        write_cpu_limit(d, before)
        scenario = parse_scenario(
            "name: t\ntargets: {api: {service: go-api}}\nload: {target: api, path: /, rate: 1/s}\n"
            "phases: [{name: b, duration: 1s},\n"
            "  {name: f, duration: 1s, faults: [{kind: cpu, target: api, cpus: 0.1}]}]\n"
        )
        spec = scenario.phases[1].faults[0]
        target = RunningTarget(
            scenario.targets["api"], Service(scenario.targets["api"]), None, "127.0.0.1", "none", cg
        )
        fault = CpuFault(spec, target)
        fault.preflight()
        fault.apply(lambda **_: None)
        assert read_cpu_limit(d) == CpuLimit(10_000, 100_000)
        fault.revert()
        assert read_cpu_limit(d) == before
        fault.revert()  # safe twice
        assert read_cpu_limit(d) == before
        write_cpu_limit(d, CpuLimit(10_000, 100_000))  # as a killed run would leave it
        assert CpuFault.recover(fault.journal_record()) != []
        assert read_cpu_limit(d) == before
        assert CpuFault.recover(fault.journal_record()) == []
    finally:
        cg.remove()


def test_syscall_write_delay_shows_in_the_client_with_its_overhead(run: Callable[[str], dict]) -> None:
    r = run("syscall_write")
    f, c = fault(r), client(r)
    assert f["observed"], f["detail"]
    m = f["measured"]
    assert m["held"] > 100 and m["selected"] >= m["held"]
    assert c["slow-write"]["p50_ms"] - c["baseline"]["p50_ms"] == pytest.approx(30, rel=0.2)
    assert c["recovery"]["p50_ms"] < c["baseline"]["p50_ms"] + 2
    # the mechanism's own cost, measured and reported
    assert m["filter_ns_per_call"] > 0 and "passthrough_stops" in m
    assert "overhead:" in f["detail"]


READER = """
import os, sys, time
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):  # the fault is applied meanwhile (no read syscalls)
    time.sleep(0.01)
fd, eio, start = os.open("/dev/zero", os.O_RDONLY), 0, time.monotonic()
for _ in range(int(sys.argv[2])):
    try:
        os.read(fd, 8)
    except OSError:
        eio += 1
print(eio, time.monotonic() - start)
"""


@pytest.mark.parametrize(("errno", "delay", "reads"), [("EIO", 0.0, 10_000), ("", 0.01, 100)])
def test_syscall_fault_acts_at_the_exit_on_the_selected_calls_only(
    tmp_path: Path, errno: str, delay: float, reads: int
) -> None:
    """A program that is not Go: the fault acts as the call returns (fexit on the syscall's
    kernel function, or its sys_exit tracepoint where fexit is refused) on every 10th read."""
    go = tmp_path / "go"
    p = subprocess.Popen(
        [sys.executable, "-c", READER, str(go), str(reads)], stdout=subprocess.PIPE, text=True
    )
    spec = SyscallSpec(
        kind="syscall", target="r", path="t", syscalls=("read",), errno=errno, delay=delay, every=10
    )
    t = TargetSpec(name="r", kind="program", argv=(sys.executable,))
    fault = SyscallFault(spec, RunningTarget(t, Service(t), p, "127.0.0.1", "", Cgroup("t", ())))
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"  # done importing
        fault.preflight()
        assert "as the call returns" in fault.where()
        fault.apply(lambda **_: None)
        go.touch()
        out, _ = p.communicate(timeout=60)
    finally:
        fault.revert()
        if p.poll() is None:
            p.kill()
            p.wait()
    failed, seconds = out.split()
    m = fault.last
    assert m["selected"] == m["held"] == reads // 10
    assert m["calls"] == reads and m["filter_runs"] >= reads
    if errno:
        assert int(failed) == reads // 10
    else:
        assert int(failed) == 0 and float(seconds) >= reads // 10 * delay


def test_pause_stalls_the_target_for_the_phase(run: Callable[[str], dict]) -> None:
    r = run("pause")
    f, c = fault(r), client(r)
    assert f["observed"], f["detail"]
    assert f["measured"]["cpu_ms_while_paused"] == 0
    assert c["paused"]["max_ms"] > 1500
    assert c["recovery"]["errors"] == 0


def test_kill_restarts_the_target(run: Callable[[str], dict]) -> None:
    r = run("kill")
    f, c = fault(r), client(r)
    assert f["observed"], f["detail"]
    assert f["measured"]["exit_code"] == -9 and f["measured"]["healthy_after_ms"] < 10_000
    assert c["recovery"]["errors"] == 0 and c["recovery"]["requests"] > 100


FAULTS = {
    "entropy": "{kind: entropy, target: api, delay: 3ms}",
    "network": "{kind: network, target: api, delay: 40ms, loss: 5%}",
    "cpu": "{kind: cpu, target: api, cpus: 0.2}",
    "syscall": "{kind: syscall, target: api, syscall: write, delay: 5ms}",
    "process": "{kind: process, target: api, action: pause}",
    "memory": "{kind: memory, target: api, limit: 512MiB}",
}


def test_every_fault_kind_is_covered() -> None:
    assert set(FAULTS) == set(FAULT_KINDS)


def long_run(tmp_path: Path, kind: str) -> Path:
    text = (SCENARIOS / "long_fault.yaml").read_text()
    scenario = tmp_path / f"long_{kind}.yaml"
    scenario.write_text(text.replace("{kind: entropy, target: api, delay: 3ms}", FAULTS[kind]))
    return scenario


def running(comm: str) -> list[int]:
    """PIDs of live (not zombie) processes named `comm`."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            status = (d / "status").read_text() if d.name.isdigit() else ""
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name") == comm and not fields.get("State", "").startswith("Z"):
            out.append(int(d.name))
    return out


def target_tracer(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


RUNTIMES = ["local", "docker"]


def on_runtime(request: pytest.FixtureRequest, runtime: str) -> tuple[str, ...]:
    """The `chaoslab run` arguments for `runtime`, after checking that it can run here."""
    if runtime == "docker":
        request.getfixturevalue("docker_engine")
    return ("--runtime", runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_sigterm_mid_fault_leaves_nothing_applied(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, runtime: str
) -> None:
    out = tmp_path / "out"
    p = start_run(out, long_run(tmp_path, kind), *on_runtime(request, runtime))
    wait_for_fault(out, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-3000:]
    assert journal.pending(out / "journal.jsonl") == []
    assert f"{kind}" in (out / "journal.jsonl").read_text()
    if runtime == "docker":
        assert docker_listed(out / "journal.jsonl") == []


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_sigkill_mid_fault_then_recover_twice(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, runtime: str
) -> None:
    out = tmp_path / "out"
    p = start_run(out, long_run(tmp_path, kind), *on_runtime(request, runtime))
    record = wait_for_fault(out, p)
    kill_with_watchdog(out, p)
    p.communicate(timeout=30)
    time.sleep(1)
    assert leftovers(), "a run killed with its watchdog leaves its targets for recover to find"
    pid = int(record.get("pid", 0))
    if kind in ("entropy", "syscall") and pid:
        # the injector noticed its parent die, undid its work and let go of the target
        deadline = time.monotonic() + 10
        while target_tracer(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert target_tracer(pid) == 0
    if kind == "network":
        # the delayer is gone; the rules stay in the target's namespace for recover
        deadline = time.monotonic() + 10
        while running("nfqdelay") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running("nfqdelay")
    first = chaoslab("recover")
    assert first.returncode == 0, first.stderr
    if kind == "network":
        assert "removed iptables chain" in first.stdout
    if kind == "process":
        assert "thawed" in first.stdout
    if runtime == "docker":  # the engine kept the containers running: recover removes them
        assert "removed container" in first.stdout and "removed Docker network" in first.stdout
    assert leftovers() == []
    second = chaoslab("recover")
    assert second.returncode == 0 and "nothing to recover" in second.stdout
