"""What the syscall and entropy faults cost the calls they do not act on, beside strace.

The workload is a small Go program built here into .build/bench (Go, because the entropy fault holds Go's
randomness reads and needs a Go target): one thread spins on getppid, a 64-byte read of
/dev/zero and a 64-byte write to /dev/null, counting its iterations in a shared page that
this bench reads. The faults are applied to it through their own classes, as a run applies
them (preflight, apply, revert), and reverted after each round. Conditions:
  none                no fault;
  openat, uprobe      syscall fault on openat, delay 1 ms: on a Go target the selector is a
                      uprobe on syscall.openat, which the loop never calls (untargeted);
  openat, exit        the same with errno EACCES, which acts as the call returns: fexit on
                      the kernel's __x64_sys_openat, or where the kernel refuses fexit, the
                      syscalls/sys_exit_openat tracepoint; the loop never calls openat
                      (untargeted);
  read filter, exit   syscall fault on read, errno EIO with probability 1e-6: the selector
                      runs as every read of the loop returns and acts on almost none
                      (targeted, filter only);
  read filter, uprobe the same with a 1 ms delay instead: the selector is a uprobe on
                      syscall.read, a trap on every read (targeted, filter only);
  entropy             entropy fault, delay 1 ms: a breakpoint in crypto/internal/sysrand.Read,
                      which the loop never calls (untargeted);
  strace              the reference: strace -f -p PID -e trace=openat
                      -e inject=openat:delay_exit=1000 (ChaosBlade's mechanism), which stops
                      the target on every syscall whatever it traces.
Every round measures each condition right after a measurement without a fault (the ratio
of the two), in an order rotated (and reversed every other round), so a noisy machine's drift hits both sides
alike. Prints each round, the medians, the selector's own run time per call (kernel BPF
stats) and a PASS/FAIL line: the untargeted conditions must keep 95% of the rate without a
fault. Finally checks with chaoslab.residue that nothing was left behind.

    sudo .venv/bin/python bench/fault_overhead.py [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from chaoslab.faults.base import Fault
from chaoslab.faults.entropy import EntropyFault, EntropySpec
from chaoslab.faults.syscall import SyscallFault, SyscallSpec
from chaoslab.scenario.model import TargetSpec
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.services import Service

REPO = Path(__file__).resolve().parent.parent
WORKLOAD_DIR = REPO / ".build" / "bench" / "fault_overhead"
GOAL = 0.95  # an untargeted condition keeps at least this share of the rate without a fault
SYSCALLS_PER_ITERATION = 3
SETTLE = 0.3  # seconds between applying a condition and measuring
MAX_SECONDS = 600  # the workload stops by itself after this long

WORKLOAD = r"""
package main

import (
	"crypto/rand"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// usage: workload COUNTER_FILE MAX_SECONDS
func main() {
	f, err := os.OpenFile(os.Args[1], os.O_RDWR, 0)
	if err != nil {
		panic(err)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		panic(err)
	}
	count := (*uint64)(unsafe.Pointer(&mem[0]))
	var seed [16]byte
	if _, err := rand.Read(seed[:]); err != nil { // links crypto/internal/sysrand.Read
		panic(err)
	}
	zero, err := syscall.Open("/dev/zero", syscall.O_RDONLY, 0)
	if err != nil {
		panic(err)
	}
	null, err := syscall.Open("/dev/null", syscall.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	limit, _ := strconv.Atoi(os.Args[2])
	deadline := time.Now().Add(time.Duration(limit) * time.Second)
	runtime.LockOSThread()
	buf := make([]byte, 64)
	for n := uint64(1); ; n++ {
		syscall.Getppid()
		syscall.Read(zero, buf) // an injected EIO is ignored
		syscall.Write(null, buf)
		atomic.StoreUint64(count, n)
		if n%4096 == 0 && time.Now().After(deadline) {
			return
		}
	}
}
"""


@dataclass(frozen=True)
class Condition:
    name: str
    kind: str  # none, syscall, entropy, strace
    untargeted: bool  # held to the goal
    syscall: SyscallSpec | None = None


def syscall_spec(name: str, delay: float = 0.0, errno: str = "", probability: float = 1.0) -> SyscallSpec:
    return SyscallSpec(
        kind="syscall",
        target="work",
        path="bench",
        syscalls=(name,),
        delay=delay,
        errno=errno,
        probability=probability,
    )


NONE = Condition("none", "none", False)
CONDITIONS = [
    NONE,
    Condition("openat, uprobe", "syscall", True, syscall_spec("openat", delay=0.001)),
    Condition("openat, exit", "syscall", True, syscall_spec("openat", errno="EACCES")),
    Condition("read filter, exit", "syscall", False, syscall_spec("read", errno="EIO", probability=1e-6)),
    Condition("read filter, uprobe", "syscall", False, syscall_spec("read", delay=0.001, probability=1e-6)),
    Condition("entropy", "entropy", True),
    Condition("strace", "strace", False),
]


def go_tool() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        sys.exit("go is missing: the workload is a Go program (see scripts/setup.sh)")
    return go


def build_workload() -> Path:
    """The workload's binary, built once into .build/bench (the kernel lane's guests reuse it)."""
    out = WORKLOAD_DIR / "workload"
    src = WORKLOAD_DIR / "main.go"
    if out.exists() and src.exists() and src.read_text() == WORKLOAD:
        return out
    WORKLOAD_DIR.mkdir(parents=True, exist_ok=True)
    (WORKLOAD_DIR / "go.mod").write_text("module workload\n\ngo 1.22\n")
    src.write_text(WORKLOAD)
    env = {**os.environ, "CGO_ENABLED": "0", "GOCACHE": str(WORKLOAD_DIR / "gocache")}
    subprocess.run([go_tool(), "build", "-o", str(out), "."], cwd=WORKLOAD_DIR, env=env, check=True)
    return out


def tracer_of(pid: int, tid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def traced_by(pid: int, tracer: int) -> bool:
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    return all(tracer_of(pid, t) == tracer for t in tids)


def untraced(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not traced_by(pid, 0):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Bench:
    def __init__(self, exe: Path, counter: Path) -> None:
        counter.write_bytes(bytes(4096))
        self.counter = os.open(counter, os.O_RDONLY)
        self.proc = subprocess.Popen([str(exe), str(counter), str(MAX_SECONDS)], stdin=subprocess.DEVNULL)
        spec = TargetSpec(name="work", kind="program", argv=(str(exe),))
        self.target = RunningTarget(spec, Service(spec), self.proc, "127.0.0.1", "", Cgroup("bench", ()))
        deadline = time.monotonic() + 10
        while self.count() == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the workload did not start")
            time.sleep(0.05)

    def count(self) -> int:
        return int.from_bytes(os.pread(self.counter, 8, 0), "little")

    def rate(self, seconds: float) -> float:
        """Syscalls per second over `seconds`."""
        c0, t0 = self.count(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = self.count(), time.monotonic()
        if self.proc.poll() is not None:
            sys.exit(f"the workload exited ({self.proc.returncode})")
        return (c1 - c0) * SYSCALLS_PER_ITERATION / (t1 - t0)

    def with_fault(self, fault: Fault, seconds: float) -> tuple[float, dict[str, float], str]:
        fault.preflight()
        try:
            fault.apply(lambda **_: None)
            time.sleep(SETTLE)
            rate = self.rate(seconds)
        finally:
            fault.revert()
        if not untraced(self.proc.pid):
            sys.exit(f"{fault.describe()} left the workload traced")
        where = fault.where() if isinstance(fault, SyscallFault) else "breakpoint"
        last = fault.last if isinstance(fault, SyscallFault) else {}
        return rate, dict(last), where

    def with_strace(self, seconds: float) -> float:
        strace = shutil.which("strace")
        if strace is None:
            sys.exit("strace is missing: apt-get install strace")
        argv = [strace, "-f", "-qq", "-o", "/dev/null", "-p", str(self.proc.pid)]
        argv += ["-e", "trace=openat", "-e", "inject=openat:delay_exit=1000"]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while not traced_by(self.proc.pid, p.pid):
                if p.poll() is not None or time.monotonic() > deadline:
                    sys.exit("strace did not attach")
                time.sleep(0.02)
            time.sleep(SETTLE)
            return self.rate(seconds)
        finally:
            p.send_signal(signal.SIGINT)  # detaches
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if not untraced(self.proc.pid):
                sys.exit("strace left the workload traced")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.counter)


def measure(bench: Bench, c: Condition, seconds: float) -> tuple[float, dict[str, float], str]:
    """The workload's rate under `c`; the selector's statistics and where it acts (faults)."""
    if c.kind == "none":
        time.sleep(SETTLE)
        return bench.rate(seconds), {}, ""
    if c.kind == "strace":
        return bench.with_strace(seconds), {}, "ptrace syscall stops (every syscall)"
    fault: Fault
    if c.syscall is not None:
        fault = SyscallFault(c.syscall, bench.target)
    else:
        spec = EntropySpec(kind="entropy", target="work", path="bench", delay=0.001)
        fault = EntropyFault(spec, bench.target)
    return bench.with_fault(fault, seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each runs every condition once)")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run it as root (BPF, ptrace): sudo .venv/bin/python bench/fault_overhead.py")
    faulted = [c for c in CONDITIONS if c.kind != "none"]
    rates: dict[str, list[float]] = {c.name: [] for c in CONDITIONS}
    ratios: dict[str, list[float]] = {c.name: [] for c in faulted}
    stats: dict[str, list[dict[str, float]]] = {c.name: [] for c in faulted}
    wheres: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp:
        exe = build_workload()
        bench = Bench(exe, Path(tmp) / "counter")
        try:
            for r in range(args.rounds):
                order = faulted[r % len(faulted) :] + faulted[: r % len(faulted)]
                for c in order[::-1] if r % 2 else order:
                    # each condition right after a measurement without a fault: drift hits both
                    base, _, _ = measure(bench, NONE, args.seconds)
                    rate, last, wheres[c.name] = measure(bench, c, args.seconds)
                    rates["none"].append(base)
                    rates[c.name].append(rate)
                    ratios[c.name].append(rate / base)
                    stats[c.name].append(last)
                    print(
                        f"round {r + 1} {c.name:20} {rate / 1e6:7.3f} M syscalls/s, "
                        f"no fault just before {base / 1e6:7.3f}: ratio {rate / base:.3f}",
                        flush=True,
                    )
        finally:
            bench.close()
    print()
    base = statistics.median(rates["none"])
    failed = []
    print(f"{'condition':20} {'median rate':>13} {'ratio':>6} {'added per syscall':>18}  where it acts")
    print(f"{'none':20} {base / 1e6:9.3f} M/s {1:6.3f} {0:15.1f} ns")
    for c in faulted:
        med = statistics.median(rates[c.name])
        ratio = statistics.median(ratios[c.name])
        added = (1 / (ratio * base) - 1 / base) * 1e9
        extra = wheres[c.name]
        runs = [s for s in stats[c.name] if s.get("filter_runs")]
        if runs:
            ns = statistics.median(s["filter_ns_per_call"] for s in runs)
            extra += f"; the BPF selector ran {runs[-1]['filter_runs']:.0f} times, {ns:.0f} ns per run"
        print(f"{c.name:20} {med / 1e6:9.3f} M/s {ratio:6.3f} {added:15.1f} ns  {extra}")
        if c.untargeted and ratio < GOAL:
            why = " (at a syscall tracepoint: this kernel refused fexit)" if "fexit:" in extra else ""
            failed.append(c.name + why)
    print("(ratio: median over the rounds of the rate over the rate without a fault just before it)")
    goal = f"untargeted conditions within {(1 - GOAL) * 100:.0f}% of no fault"
    print(f"\n{'FAIL' if failed else 'PASS'}: {goal}" + (f" (not: {', '.join(failed)})" if failed else ""))
    residue = subprocess.run(
        [sys.executable, "-m", "chaoslab.residue"], cwd=REPO, capture_output=True, text=True
    )
    print(residue.stdout.strip() or "residue: nothing left")
    return 1 if failed or residue.returncode else 0


if __name__ == "__main__":
    raise SystemExit(main())
