"""Game-day safety without a real run: the watchdog process against a journal whose fault is a
CPU limit written to files of a scratch directory (cpu.max, as cgroup v2 keeps it), the stop
conditions fed requests by hand, the target locks, and recover's respect for live runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoslab import journal, recover
from chaoslab.context import RunContext
from chaoslab.errors import UsageError
from chaoslab.journal import Journal, RunInfo
from chaoslab.load.records import Request
from chaoslab.safety import locks
from chaoslab.safety.locks import TargetLocked
from chaoslab.safety.stop import StopConditions
from chaoslab.scenario import parse_scenario
from chaoslab.targets.cgroup import CpuLimit, read_cpu_limit
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setattr(journal, "INDEX_DIR", state / "runs")
    monkeypatch.setattr(locks, "LOCK_DIR", state / "locks")
    monkeypatch.setenv("CHAOSLAB_STATE_DIR", str(state))
    return state


# -- the watchdog -----------------------------------------------------------------------------------


class FakeRun:
    """A journal with one CPU-limit fault applied to a scratch directory, and its watchdog."""

    def __init__(self, tmp: Path, within: float = 2.0, deadline: float = 0.0) -> None:
        self.cg = tmp / "cg"
        self.cg.mkdir()
        (self.cg / "cpu.max").write_text("20000 100000\n")  # the fault's limit, in place
        self.journal = Journal(tmp / "out" / "journal.jsonl", "f" * 32)
        self.seq = self.journal.intent("fault", **self.record(), deadline=deadline)
        self.journal.update(self.seq, applied=True)
        argv = [sys.executable, "-m", "chaoslab.safety.watchdog", "--journal", str(self.journal.path)]
        argv += ["--within", f"{within:g}", "--chaoslab", str(os.getpid())]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
        )
        assert self.event()["event"] == "armed"

    def record(self) -> dict[str, object]:
        """The fault's journal record: the limit to write back is 'unlimited'."""
        return {"kind": "cpu", "target": "api", "dir": str(self.cg), "quota_us": -1, "period_us": 100000}

    def event(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read().decode() if self.proc.stderr else "no output"
        return json.loads(line)

    def events_until(self, kind: str) -> list[dict]:
        out = [self.event()]
        while out[-1]["event"] != kind:
            out.append(self.event())
        return out

    def beat(self, data: bytes = b".") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    @property
    def limit(self) -> CpuLimit:
        return read_cpu_limit(self.cg)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        self.journal.close(clean=False)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeRun]:
    run = FakeRun(tmp_path)
    yield run
    run.close()


def test_the_watchdog_undoes_a_fault_when_the_heartbeat_stops(fake: FakeRun) -> None:
    for _ in range(10):  # a second of heartbeats: nothing happens
        fake.beat()
        stopped = time.monotonic()  # the silence runs from the last beat
        time.sleep(0.1)
    assert fake.limit == CpuLimit(20000, 100000)
    tripped, *_, done = fake.events_until("done")
    took = time.monotonic() - stopped
    assert tripped["event"] == "tripped" and tripped["condition"] == "switch"
    assert "no heartbeat from chaoslab" in tripped["reason"]
    assert fake.limit == CpuLimit(-1, 100000)
    assert 0.95 <= took < 3.0  # 1 s of silence, then the undo (2 s bound; the undo's own time below)
    assert done["revert_s"] < 2.0 and set(done["reverts"]) == {"cpu on api"}
    assert journal.pending(fake.journal.path) == []  # marked undone in the journal
    # chaoslab runs again and ends the run: the watchdog exits
    fake.beat(b"E")
    assert fake.proc.stdin is not None
    fake.proc.stdin.close()
    assert fake.proc.wait(timeout=10) == 0


def test_a_fault_applied_after_the_trip_is_undone_at_once(fake: FakeRun) -> None:
    fake.events_until("done")
    seq = fake.journal.intent("fault", **fake.record())
    (fake.cg / "cpu.max").write_text("10000 100000\n")
    fake.journal.update(seq, applied=True)
    reverted = fake.events_until("reverted")[-1]
    assert reverted["seq"] == seq and fake.limit == CpuLimit(-1, 100000)


def test_no_trip_without_an_applied_fault(tmp_path: Path) -> None:
    run = FakeRun(tmp_path)
    try:
        run.journal.undone(run.seq)
        time.sleep(2.0)  # silence, but nothing to undo
        assert run.limit == CpuLimit(20000, 100000)
        run.beat(b"E")
        assert run.proc.stdin is not None
        run.proc.stdin.close()
        assert run.proc.wait(timeout=10) == 0
        assert run.proc.stdout is not None and b"tripped" not in run.proc.stdout.read()
    finally:
        run.close()


def test_a_fault_past_its_deadline_is_undone_while_heartbeats_come(tmp_path: Path) -> None:
    run = FakeRun(tmp_path, within=30.0, deadline=time.time() + 0.5)
    try:
        start = time.monotonic()
        while run.limit != CpuLimit(-1, 100000) and time.monotonic() - start < 5:
            run.beat()
            time.sleep(0.1)
        assert run.limit == CpuLimit(-1, 100000)
        tripped = run.events_until("tripped")[-1]
        assert tripped["condition"] == "deadline" and "past its phase's end" in tripped["reason"]
    finally:
        run.close()


def test_a_dead_chaoslab_has_its_whole_run_undone(fake: FakeRun) -> None:
    """The pipe closes without an end: faults first, then everything else, index entry and locks."""
    ns = fake.journal.intent("netns", name="chaoslab-ffffff-gone")  # nothing to delete: a no-op
    assert ns
    me = fake.journal.info
    locks.acquire({"process:1@0": "target api"}, me)
    assert fake.proc.stdin is not None
    fake.proc.stdin.close()  # as the kernel does when chaoslab dies
    tripped, *_ = fake.events_until("done")
    assert tripped["condition"] == "exit"
    assert fake.proc.wait(timeout=10) == 0
    assert fake.limit == CpuLimit(-1, 100000)
    assert journal.pending(fake.journal.path) == []
    assert not list(journal.indexed_runs())
    assert locks.held() == [] and not list(locks.LOCK_DIR.glob("*.json"))


def test_a_terminated_watchdog_undoes_the_faults_and_leaves_the_run(fake: FakeRun) -> None:
    fake.proc.terminate()
    tripped = fake.events_until("done")[0]
    assert tripped["condition"] == "terminated"
    assert fake.proc.wait(timeout=10) == 0
    assert fake.limit == CpuLimit(-1, 100000)
    assert list(journal.indexed_runs())  # chaoslab's run goes on: recover leaves it alone


# -- stop conditions --------------------------------------------------------------------------------

SCENARIO = """
name: t
targets: {api: {service: go-api}}
load: {protocol: https, target: api, path: /work, rate: 10/s}
phases:
  - {name: baseline, duration: 5s}
  - {name: f, duration: 5s, faults: [{kind: cpu, target: api, cpus: 0.5}]}
"""


JOURNALS: list[Journal] = []


@pytest.fixture(autouse=True)
def close_journals() -> Iterator[None]:
    yield
    while JOURNALS:
        JOURNALS.pop().close(clean=True)


def stops(abort: str, tmp_path: Path) -> tuple[StopConditions, RunContext]:
    scenario = parse_scenario(SCENARIO + f"abort: {abort}\n")
    JOURNALS.append(Journal(tmp_path / f"j{len(JOURNALS)}.jsonl", "r" * 32))
    ctx = RunContext(scenario, "r" * 32, tmp_path, JOURNALS[-1], print)
    return StopConditions(ctx, {}), ctx


def feed(ctx: RunContext, n: int, errors: int = 0, latency: float = 0.005, ago: float = 0.5) -> None:
    """`n` requests that ended `ago` seconds ago, the first `errors` of them failed."""
    end = time.time() - ago
    batch = [Request(end - latency, end - latency, end, 200, "r", "") for _ in range(n)]
    for i in range(errors):
        batch[i] = Request(end - latency, end - latency, end, 0, "r", "boom")
    ctx.events.fire("requests", batch=batch)


class NoProbes:
    def snapshot(self) -> dict:
        return {}


def test_the_error_rate_trips_above_its_share_and_with_enough_requests(tmp_path: Path) -> None:
    s, ctx = stops("{error_rate: 20%, window: 3s, min_requests: 10}", tmp_path)
    feed(ctx, 8, errors=8)
    assert s.check(NoProbes()) is None  # 8 requests: too few to decide
    feed(ctx, 32, errors=0)
    assert s.check(NoProbes()) is None  # 8 of 40: exactly 20%
    feed(ctx, 2, errors=2)
    trip = s.check(NoProbes())
    assert trip is not None and trip.condition == "error_rate"
    assert trip.reason == "client error rate 23.8% over the last 3 s (42 requests) is above 20.0%"


def test_requests_that_ended_before_the_window_are_forgotten(tmp_path: Path) -> None:
    s, ctx = stops("{error_rate: 20%, window: 2s}", tmp_path)
    feed(ctx, 50, errors=50, ago=10)
    feed(ctx, 20)
    assert s.check(NoProbes()) is None


def test_the_p99_trips_on_the_answered_requests(tmp_path: Path) -> None:
    s, ctx = stops("{p99: 100ms, p50: 1s}", tmp_path)
    feed(ctx, 95, latency=0.010)
    feed(ctx, 5, latency=0.400)
    trip = s.check(NoProbes())
    assert trip is not None and trip.condition == "p99" and "above 100 ms" in trip.reason


def test_target_exit_is_a_stop_condition_only_when_asked(tmp_path: Path) -> None:
    class Gone:
        name, proc = "api", None

    assert stops("{p99: 1s}", tmp_path)[0].target_exited(Gone()) is None  # type: ignore[arg-type]
    trip = stops("{target_exit: true}", tmp_path)[0].target_exited(Gone())  # type: ignore[arg-type]
    assert trip is not None and trip.condition == "target_exit" and "target api exited" in trip.reason


# -- locks ------------------------------------------------------------------------------------------


def holder(run_id: str, pid: int, out: str = "/reports/x") -> RunInfo:
    from chaoslab import proc

    return RunInfo(run_id, pid, Path(out) / "journal.jsonl", proc.start_time(pid), out)


def test_a_second_run_on_a_held_target_is_refused_with_the_holder_named() -> None:
    first = holder("a" * 32, os.getpid(), "/reports/first")
    locks.acquire({"process:7@1": "target api (pid 7)", "cgroup:/x": "the cgroup of api"}, first)
    second = holder("b" * 32, os.getpid(), "/reports/second")
    with pytest.raises(TargetLocked) as info:
        locks.acquire({"netns:9": "its namespace", "process:7@1": "target api (pid 7)"}, second)
    msg = info.value.message
    assert f"target api (pid 7) is held by run {'a' * 12} (chaoslab pid {os.getpid()}" in msg
    assert "report directory /reports/first" in msg and "nothing was applied" in msg
    assert info.value.exit_code == 3
    assert {lock.holder.run_id for lock in locks.held()} == {"a" * 32}  # all or nothing
    locks.acquire({"netns:9": "its namespace"}, second)  # another target: fine
    assert locks.release("a" * 32) == 2


def test_the_lock_of_a_run_that_is_gone_is_taken_over() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    locks.acquire({"process:7@1": "target api"}, holder("a" * 32, os.getpid()))
    stale = RunInfo("c" * 32, dead.pid, Path("/r/journal.jsonl"), 12345)
    locks._write(locks._file("process:8@1"), "process:8@1", "target db", stale)
    locks.acquire({"process:8@1": "target db"}, holder("b" * 32, os.getpid()))
    assert locks.sweep() == []  # nothing stale left: the stale one was taken over


# -- recover and live runs --------------------------------------------------------------------------


def test_recover_leaves_a_live_run_alone_and_force_needs_its_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path / "live" / "journal.jsonl", "d" * 32)
    JOURNALS.append(j)
    j.intent("netns", name="chaoslab-dddddd-api")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        j.set_watchdog(sleeper.pid)  # its chaoslab is this process: make the run someone else's
        index = journal.INDEX_DIR / f"{'d' * 32}.json"
        data = json.loads(index.read_text()) | {"pid": sleeper.pid, "pid_start": None}
        index.write_text(json.dumps(data))
        done = recover.recover_all()
        assert any("is live: left alone" in line for line in done)
        assert index.exists()
        with pytest.raises(UsageError, match="needs the journals"):
            recover.recover_all(force=True)
        named = recover.recover_all([j.path])
        assert any("add --force to recover it anyway" in line for line in named) and index.exists()
        recover.recover_all([j.path], force=True)
        assert not index.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
