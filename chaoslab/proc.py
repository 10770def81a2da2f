"""Child processes: argv lists, own session, SIGTERM then SIGKILL; identity by start time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

KILL_WAIT = 3.0


def start(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], wait: float = KILL_WAIT) -> int | None:
    """SIGTERM, wait, SIGKILL; returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=wait)
        except ProcessLookupError:
            pass
    return proc.returncode


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def exited(pid: int) -> bool:
    """The process is gone, or a zombie: it has exited and its parent has not reaped it yet (a
    stopped parent never does, until it runs again)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def kill_if_same(pid: int, started: int | None, wait: float = KILL_WAIT) -> bool:
    """Terminate `pid` only if it is still the process that started at `started`."""
    if started is None or start_time(pid) != started or exited(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if start_time(pid) != started or exited(pid):
            return True
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


# What a failed system command usually means, and what to do: (all of these substrings of
# the command line and its error output, hint). The first match wins.
HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("type veth", "Unknown device type"),
        "the kernel has no veth driver and cannot load it: `modprobe veth` (a kernel built without "
        "CONFIG_VETH cannot run the local runtime; use runtime: docker)",
    ),
    (("Unknown device type",), "a kernel module is missing: load it with modprobe (veth, bridge, ifb...)"),
    (
        ("netem",),
        "the kernel has no sch_netem: `modprobe sch_netem` (chaoslab falls back when it cannot load)",
    ),
    (
        ("iptables", "can't initialize"),
        "netfilter is missing: `modprobe ip_tables iptable_filter`, or use iptables-nft",
    ),
    (("File exists",), "something of an earlier run is still there: run `chaoslab recover`"),
    (("Operation not permitted",), "run chaoslab as root"),
    (("Permission denied",), "run chaoslab as root"),
)


def hint_for(argv: list[str], stderr: str) -> str:
    text = " ".join(argv) + "\n" + stderr
    return next(
        (hint for needles, hint in HINTS if all(n in text for n in needles)), "see the command's error above"
    )


def run(argv: list[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a system command (`stdin`: text to feed it); with `check`, a failure is a CommandError
    naming the command, its exit code and stderr, with a hint (exit 3, never a traceback)."""
    from chaoslab.errors import CommandError

    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    try:
        res = subprocess.run(argv, check=False, capture_output=True, text=True, **feed)
    except OSError as exc:  # the tool itself is missing or not executable
        raise CommandError(
            f"`{argv[0]}` cannot be run: {exc.strerror}", "install it (scripts/setup.sh)"
        ) from exc
    if check and res.returncode != 0:
        err = res.stderr.strip() or res.stdout.strip() or "no output"
        raise CommandError(f"`{' '.join(argv)}` failed (exit {res.returncode}): {err}", hint_for(argv, err))
    return res


def must(argv: list[str], stdin: str | None = None) -> str:
    """Run a fault command; a failure raises FaultError carrying the command and its stderr."""
    from chaoslab.errors import FaultError

    res = run(argv, check=False, stdin=stdin)
    if res.returncode != 0:
        err = res.stderr.strip() or f"exit {res.returncode}"
        raise FaultError(f"`{' '.join(argv)}` failed: {err}", hint_for(argv, err))
    return res.stdout


def schedstat(pids: set[int] | list[int]) -> tuple[int, int, int]:
    """Summed over every thread of `pids`: (ns on CPU, ns waiting on a run queue, timeslices),
    from /proc/PID/task/TID/schedstat. Threads that exited are not counted."""
    cpu = wait = slices = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                a, b, c = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:3]
            except (OSError, ValueError):
                continue
            cpu, wait, slices = cpu + int(a), wait + int(b), slices + int(c)
    return cpu, wait, slices


def descendants(pid: int) -> set[int]:
    """Every process below `pid` in the process tree (children, their children...)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out |= frontier
    return out


LISTEN, ESTABLISHED = "0A", "01"  # TCP states in /proc/net/tcp


def tcp_sockets(pid: int) -> Iterator[tuple[str, int, str]]:
    """(inode, local port, state) of every TCP socket, IPv4 and IPv6, in the network namespace
    of `pid` (its /proc/PID/net/tcp and tcp6); a table it cannot read is skipped."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9:
                yield f[9], int(f[1].rsplit(":", 1)[1], 16), f[3]
