"""chaoslab's helper (chaoslab/agent.py) as the run talks to it, without a container or root:
its line protocol, its errors, and its exit when the stream closes; and the wire format that
carries every shipped scenario's targets and faults to it unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaoslab import wire
from chaoslab.faults.base import Verification
from chaoslab.scenario.loader import load_scenario
from tests.conftest import REPO, SCENARIOS

SHIPPED = sorted((REPO / "scenarios").glob("*.yaml")) + sorted(SCENARIOS.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_s_targets_and_faults_go_over_the_wire_unchanged(path: Path) -> None:
    s = load_scenario(path)
    things = [*s.targets.values(), *(f for p in s.phases for f in p.faults)]
    assert things
    for x in things:
        data = json.loads(json.dumps(wire.dump(x)))
        assert wire.load(type(x), data) == x


def test_a_verification_and_bytes_go_over_the_wire() -> None:
    v = Verification(True, "12 of 12 held", "uinject", {"held": 12.0})
    assert wire.load(Verification, json.loads(json.dumps(wire.dump(v)))) == v
    with pytest.raises(ValueError, match="unknown fields nope"):
        wire.load(Verification, {**wire.dump(v), "nope": 1})


def test_the_helper_answers_each_command_and_exits_when_its_stream_closes(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CHAOSLAB_HELPER_JOURNAL": str(tmp_path / "helper" / "journal.jsonl"),
        "CHAOSLAB_STATE_DIR": str(tmp_path / "state"),
    }
    p = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.agent", "serve", "--within", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert p.stdin and p.stdout

    def said() -> dict:
        while True:
            msg = json.loads(p.stdout.readline())
            if "watchdog" not in msg:
                return msg

    try:
        assert said()["event"] == "ready"
        p.stdin.write("not json\n[1, 2]\n")  # ignored, as any line that is not a command
        p.stdin.write(json.dumps({"op": "beat"}) + "\n")  # no reply: it goes to the watchdog
        p.stdin.write(json.dumps({"id": 1, "op": "verify", "fault": 9}) + "\n")
        p.stdin.flush()
        reply = said()
        assert reply == {
            "id": 1,
            "ok": False,
            "error": "FaultError",
            "message": "the helper holds no fault 9",
            "hint": "prepare it first",
        }
        # a PID that is not the named container's: refused before any fault touches it
        prepare = {
            "id": 2,
            "op": "prepare",
            "fault": 1,
            "kind": "entropy",
            "spec": {"kind": "entropy", "target": "api", "path": "phases[1].faults[0]", "delay": 0.003},
            "target": {
                "spec": {"name": "api", "service": "go-api"},
                "pid": os.getpid(),
                "container": "0123456789abcdef",
                "name": "chaoslab-x-api",
            },
        }
        p.stdin.write(json.dumps(prepare) + "\n")
        p.stdin.flush()
        reply = said()
        assert reply["id"] == 2 and reply["error"] == "TargetError" and not reply["ok"]
        assert f"its engine gives pid {os.getpid()}, which is not that container" in reply["message"]
        t0 = time.monotonic()
        p.stdin.close()
        assert p.wait(timeout=30) == 0 and time.monotonic() - t0 < 10
        assert not (tmp_path / "helper" / "journal.jsonl").read_text().count('"kind": "fault"')
    finally:
        if p.poll() is None:
            p.kill()
        for pipe in (p.stdin, p.stdout, p.stderr):
            if pipe and not pipe.closed:
                pipe.close()
        p.wait()
