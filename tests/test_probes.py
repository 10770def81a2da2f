"""Probes on this machine: every layer's program loads and finds what it needs, a stripped
Go binary is refused with a clear message, the cpu layer's stall state settles when its
target sleeps, and the overhead benchmark runs."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, ClassVar, cast

import pytest

from chaoslab import build
from chaoslab.errors import PreflightError
from chaoslab.gobinary import emulated, emulated_entry, find_function, has_function, read_elf
from chaoslab.layers import Layer
from chaoslab.probes import PROBES
from chaoslab.probes.gofunc import APP_FUNCTION, ENDS, AppProbe, GoFunctionProbe
from chaoslab.probes.network import FROM_TARGET, NetworkProbe
from chaoslab.probes.proxy import SocketAppProbe, accepted_sockets, seed
from chaoslab.probes.sched import CpuProbe
from chaoslab.probes.syscalls import HOLD, WAITS, SyscallProbe, syscall_table
from tests.conftest import REPO, chaoslab

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("clean_machine")]


def test_probes_command_lists_every_layer_attachable_here() -> None:
    res = chaoslab("probes")
    assert res.returncode == 0, res.stdout + res.stderr
    for layer in Layer:
        assert f"│ {layer}" in res.stdout, layer
    assert "no:" not in res.stdout


def test_probes_programs_flag_prints_the_programs() -> None:
    res = chaoslab("probes", "--programs")
    assert res.returncode == 0
    assert "raw_tp/sched_switch" in res.stdout and "raw_tp/sk_data_ready" in res.stdout
    assert f"# {REPO / 'bpf' / 'syscalls.bpf.c'}" in res.stdout


def test_stripped_go_binary_gets_a_clear_preflight_message(tmp_path: Path) -> None:
    stripped = tmp_path / "go-api"
    shutil.copy(build.go_service("go-api"), stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    read_elf.cache_clear()

    for cls in PROBES:
        if issubclass(cls, GoFunctionProbe):
            with pytest.raises(PreflightError, match="stripped binary") as exc:
                cls.requirements(stripped)
            assert "-ldflags=-s" in exc.value.render()


def test_syscall_names_and_waits() -> None:
    table = syscall_table()
    assert (table[0], table[1], table[202]) == ("read", "write", "futex")
    probe = SyscallProbe()
    assert probe.metric_name(2) == "write" and probe.in_layer(2)
    assert not probe.in_layer(203)  # futex: a thread waiting for work is not on a request's path
    assert {"epoll_pwait", "futex"} <= WAITS
    # a hold that joined no syscall of the layer is still the layer's time
    assert probe.metric_name(HOLD) == "tracer hold" and probe.in_layer(HOLD)


def test_a_turn_between_targets_counts_once_at_its_sender() -> None:
    probe = NetworkProbe()
    assert probe.in_layer(2) and probe.in_layer(1)  # outbound; inbound from outside the run's targets
    assert not probe.in_layer(FROM_TARGET) and probe.metric_name(FROM_TARGET) == "inbound from a target"


def test_only_what_every_kernel_emulates_counts_as_emulated() -> None:
    emulated_here = [
        "jbe    6d6d40 <f+0x100>",
        "jmp    6d6d40 <f>",
        "call   6c0b60 <g>",
        "push   %rbp",
        "nop",
    ]
    stepped = [
        "call   *%rsi",
        "jmp    *%rax",
        "push   0x8(%rax)",
        "nopw   0x0(%rax,%rax,1)",
        "jrcxz  6d6d40 <f>",
        "ret",
        "cmp    0x10(%r14),%rsp",
        "mov    %rsp,%rbp",
    ]
    assert all(emulated(t) for t in emulated_here) and not any(emulated(t) for t in stepped)
    # the entry probe: the first emulated instruction on the straight line from the entry
    prologue = [(0x10, "cmp    0x10(%r14),%rsp"), (0x14, "jbe    0x40 <f+0x30>"), (0x16, "push   %rbp")]
    assert emulated_entry(prologue) == 0x14
    # past a jump the kernel steps, control may not come back: no entry probe there
    assert emulated_entry([(0x10, "jmp    *%rax"), (0x12, "jbe    0x40 <f+0x30>")]) == 0


Ends = dict[str, tuple[tuple[str, str], ...]]


def test_a_call_ends_at_the_emulated_entry_of_what_its_callers_run_next() -> None:
    exe = build.go_service("go-api")
    ends = AppProbe.end_markers(exe, APP_FUNCTION)
    # go-api serves HTTP/1.1 and HTTP/2 (TLS): net/http's loop and its HTTP/2 handler runner
    # (golang.org/x/net/http2's server is not linked in: that caller is not in the binary)
    following = [find_function(exe, f) for caller, f in ENDS[APP_FUNCTION] if has_function(exe, caller)]
    assert len(following) == 2
    assert ends == [fn.entry_offset for fn in following] and all(fn.entry_emulated for fn in following)

    class Missing(AppProbe):
        ends: ClassVar[Ends] = {APP_FUNCTION: (("net/http.(*conn).serve", "net/http.noSuchFunction"),)}

    class NoCaller(AppProbe):
        ends: ClassVar[Ends] = {
            APP_FUNCTION: (("net/http.noSuchCaller", "net/http.(*response).finishRequest"),)
        }

    # a caller without the function it runs next, or no caller at all: the RETs end the call
    assert Missing.end_markers(exe, APP_FUNCTION) == [] and NoCaller.end_markers(exe, APP_FUNCTION) == []


def test_overhead_benchmark_runs_and_prints_its_ratios() -> None:
    res = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "probe_overhead.py"),
            "--rounds",
            "1",
            "--seconds",
            "2",
            "--accuracy",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ratios = [line for line in res.stdout.splitlines() if ": ratio " in line]
    # per workload: the probe set of every shipped scenario (those with the same set share a
    # line), then every probe
    for workload in ("keep-alive", "new-conn"):
        lines = [line for line in ratios if line.startswith(workload)]
        assert "all probes" in lines[-1], lines
        named = {name.strip(",") for line in lines[:-1] for name in line.split()[1:] if not name[0].isdigit()}
        assert {p.stem for p in (REPO / "scenarios").glob("*.yaml")} <= named, (named, lines)
    for line in ratios:
        # the rate's ratio, then the one from the machine's CPU time per request
        figures = [float(part.split()[0]) for part in line.split(": ratio ")[1:]]
        assert len(figures) == 2 and all(0 < f < 2 for f in figures), line
    # the control attaches nothing: its line is there, as the machine's noise floor
    assert sum("no probes (control)" in line for line in ratios) == 2, ratios
    # at the scenarios' own load: the target's CPU time per request, with and without, per set
    at_load = [line for line in res.stdout.splitlines() if line.startswith("at-load") and "change" in line]
    assert len(at_load) == len([line for line in ratios if line.startswith("keep-alive")]), at_load
    for line in at_load:
        with_us, without_us = (float(x) for x in re.findall(r"([\d.]+) us with(?:out)?", line))
        assert with_us > 0 and without_us > 0, line
    # the report's figure for the probes' own cost (kernel statistics sampled in windows, scaled
    # to the round) against the target CPU time per request they were measured to add: summed
    # over the sets, so that one noisy round does not decide, they agree within a factor of 3
    for workload in ("keep-alive", "new-conn", "at-load"):
        found = re.findall(
            rf"^{workload} .* observer cost: the report's ([\d.]+) us per request, measured ([-+][\d.]+) us",
            res.stdout,
            re.M,
        )
        assert len(found) == len(at_load) - 1, res.stdout  # every set but the control
        report, measured = (sum(float(f[i]) for f in found) for i in (0, 1))
        assert report > 0 and measured / 3 <= report <= 3 * measured, (workload, found)
    # the app layer's uprobes that end where net/http goes on after the handler time the same
    # calls as those on the handler call's RETs (one after the other, on one connection)
    app = {
        m.group(1): (int(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"app layer by (.+?)\s*: (\d+) requests, mean ([\d.]+) us", res.stdout)
    }
    (ends, ends_us), (rets, rets_us) = app["uprobes"], app["RET uprobes"]
    assert ends > 50 and rets > 50, res.stdout
    assert abs(ends_us - rets_us) <= max(10.0, 0.5 * rets_us), res.stdout


# Many 1 ns sleeps (a timer slack of 1 ns): the timer often fires before the thread got off
# its CPU, and the kernel traces a wakeup of a thread that still runs (ttwu_runnable); then
# the thread sleeps for good.
SLEEPER = """
import ctypes, threading, time
ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
for _ in range(100_000):
    time.sleep(1e-9)
print("asleep", flush=True)
threading.Event().wait()
"""


def test_a_target_asleep_is_not_starved_whatever_woke_it_while_it_ran() -> None:
    """A wakeup traced while the thread still ran, then a sleep: the thread is not waiting for a
    CPU. Counted as waiting, its target was "starved" for as long as it slept (every request
    in flight weighed by it), which put the cpu layer above an entropy fault's own layer."""
    probe = CpuProbe()
    with subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True) as sleeper:
        try:
            obj = probe.load()
            obj.add_target(sleeper.pid, 0)
            probe.index[0] = "sleeper"
            probe.attach(obj, [])
            assert sleeper.stdout is not None
            assert sleeper.stdout.readline() == "asleep\n"
            time.sleep(0.3)
            before = probe.stalled_seconds()["sleeper"]
            time.sleep(1.0)
            raw = obj.lookup_bytes("stalled", 0, 32)
            assert raw is not None
            waiting, _running, since, _stalled = struct.unpack("<qqQQ", raw)
            assert (waiting, since) == (0, 0), "a sleeping target counted as waiting for a CPU"
            assert probe.stalled_seconds()["sleeper"] == before
        finally:
            sleeper.kill()
            probe.close()


# A server that answers each read on its one connection with a write; it takes the connection
# with accept(2) when asked (glibc's accept() on x86-64 is the accept syscall), else accept4.
ACCEPTER = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
if sys.argv[1] == "accept":
    fd = libc.accept(listener.fileno(), None, None)
    assert fd >= 0, ctypes.get_errno()
else:
    fd = listener.accept()[0].detach()
print("accepted", flush=True)
while data := os.read(fd, 100):
    os.write(fd, b"ok:" + data)
"""


@pytest.mark.parametrize(
    ("call", "connect_first"),
    [("accept", False), ("accept4", True)],
    ids=["accept-syscall", "accepted-before-attach"],
)
def test_a_servers_requests_count_on_every_accepted_connection(call: str, connect_first: bool) -> None:
    """A connection the server took with accept(2), or one it held before the probe attached
    (a keep-alive client or a pool opened at start-up, /proc read at attach), has its requests
    in the app layer, as one accepted with accept4 afterwards has."""
    probe = SocketAppProbe()
    argv = [sys.executable, "-c", ACCEPTER, call]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as server:
        client = None
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            if connect_first:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                assert server.stdout.readline() == "accepted\n"
            obj = probe.load()
            obj.add_target(server.pid, 0)
            probe.index[0] = "server"
            probe.attach(obj, [cast("RunningTarget", SimpleNamespace(name="server", pid=server.pid))])
            if connect_first:
                assert len(accepted_sockets(server.pid)) == 1
                assert seed(obj, server.pid) == 0, "the attach registered it already"
            if client is None:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
            for i in range(5):
                client.sendall(b"%d" % i)
                assert client.recv(100) == b"ok:%d" % i
            # a read already waiting when the probe attached is not seen: the first request of a
            # connection held before the attach is not counted, the next ones are
            assert probe.snapshot()[("server", "")].count == (4 if connect_first else 5)
        finally:
            if client is not None:
                client.close()
            server.kill()
            probe.close()
