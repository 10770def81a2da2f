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


@pytest.mark.parametrize("peer", ["", "host", "edge"])
def test_a_remote_target_s_host_side_is_the_gateway_and_every_address_off_the_run_s_network(
    tmp_path: Path, peer: str
) -> None:
    """On a remote engine the load reaches a target through a published port with its source
    kept: a network fault on the host's side matches the gateway and every address off the run's
    network, after the peers' own matches (iptables: one more jump; tc: the network unshaped at
    a later priority, then the rest shaped)."""
    from chaoslab.faults.network import NetworkFault
    from chaoslab.scenario.loader import parse_scenario
    from chaoslab.targets.containers import plan_targets

    text = (SCENARIOS / "short_entropy.yaml").read_text().split("expect:")[0]
    fault = "{kind: network, target: api, delay: 20ms" + (f", peer: {peer}" if peer else "") + "}"
    text = text.replace("{kind: entropy, target: api, delay: 3ms}", fault)
    s = parse_scenario("runtime: docker\nengine: tcp://192.0.2.7:2375\n" + text)
    [spec] = s.phases[1].faults
    f = NetworkFault(spec, plan_targets(s, tmp_path)["api"])
    f.netem = True  # the tree a kernel with sch_netem gets (this one has none: NFQUEUE's jumps)
    jumps = [argv[argv.index("OUTPUT") :] for argv in f.chain().commands([]) if "OUTPUT" in argv]
    filters = [
        " ".join(argv[argv.index("prio") :]) for t in f.trees() for argv in t.commands() if "prio" in argv
    ]
    off = ["OUTPUT", "1", "-o", "eth0", "!", "-d", "10.233.1.0/24", "-j", "CHAOSLAB-1-0"]
    gateway = ["OUTPUT", "1", "-o", "eth0", "-d", "10.233.1.1", "-j", "CHAOSLAB-1-0"]
    to_edge = ["OUTPUT", "1", "-o", "eth0", "-d", "10.233.1.3", "-j", "CHAOSLAB-1-0"]
    if peer == "edge":
        assert jumps == [to_edge] and not any("10.233.1.0/24" in x for x in filters), filters
        return
    assert off in jumps and gateway in jumps and (to_edge in jumps) == (peer == ""), jumps
    # tc: the peers' and the gateway's matches first, then the run's network unshaped, then the rest
    prios = [(x.split()[1], x) for x in filters if not x.startswith("prio 1 ")]
    assert [p for p, _ in prios][-2:] == ["3", "4"], prios
    assert "match ip dst 10.233.1.0/24" in prios[-2][1] and prios[-2][1].endswith("flowid 1:1")
    assert prios[-1][1].endswith("flowid 1:4") and "10.233.1" not in prios[-1][1]
    assert any("match ip dst 10.233.1.1/32" in x for _, x in prios if x.startswith("prio 2 "))


def test_the_syscall_layer_knows_its_waits_without_the_libc_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without linux-libc-dev (or chaoslab's helper image without the header) still
    leaves the waits out of the layer: their numbers are the ABI's, and match the header's."""
    from chaoslab.probes import syscalls

    with_headers = {name: nr for nr, name in syscalls.syscall_table().items()}
    assert with_headers, "this machine has the libc headers (the set-up installs them)"
    for name, nr in syscalls.WAIT_NUMBERS.items():
        assert with_headers[name] == nr, name
    syscalls.syscall_table.cache_clear()
    monkeypatch.setattr(syscalls, "UNISTD", Path("/nonexistent/unistd_64.h"))
    try:
        probe = syscalls.SyscallProbe()
        assert not probe.in_layer(202 + 1) and not probe.in_layer(281 + 1)  # futex, epoll_pwait
        assert probe.in_layer(1 + 1) and probe.metric_name(1 + 1) == "syscall 1"  # write, by number
        assert set(syscalls.WAITS) - {"futex_wait"} == set(syscalls.WAIT_NUMBERS)
    finally:
        syscalls.syscall_table.cache_clear()
