"""What the probes cost the targets they watch, measured during the run, and the budget they keep.

A probe's cost is the time its BPF programs ran (the kernel's run-time statistics, on while
probes are attached: `bpf_enable_stats`), plus, for uprobes, the trap itself: each uprobe
hit stops the thread, enters the kernel and returns, which the BPF statistics do not count.
That trap is timed once per chaoslab process on this machine (`trap_ns`): an empty C
function called in a loop, without and with a uprobe on it (probes/native/trapcost.c).
A tracepoint has no trap: the kernel calls its program inline.

Each probe's cost is divided by the requests the load completed: the time per request the
act of measuring took from the targets (an upper bound where a tracepoint's program also
ran, and returned at once, for processes that are no target).
"""

from __future__ import annotations

import functools
import statistics
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from chaoslab import build
from chaoslab.errors import ChaoslabError
from chaoslab.gobinary import read_elf
from chaoslab.probes.libbpf import BpfObject

TRAP_FUNCTION = "chaoslab_tick"
TRAP_CALLS = 4000  # calls per round
TRAP_ROUNDS = 3
# A uprobe trap costs a few µs on bare metal, 10-15 µs under a hypervisor; a calibration
# that cannot run (no compiler, no uprobes) falls back to this, and says so.
TRAP_FALLBACK_NS = 5000.0


@dataclass(frozen=True)
class Usage:
    """A probe's use of its targets' time since it attached (cumulative)."""

    runs: int = 0  # runs of its BPF programs (events seen, its targets' or not)
    bpf_ns: int = 0  # their run time
    traps: int = 0  # of those, uprobe hits: each one a trap of the probed thread
    at: tuple[tuple[str, int], ...] = ()  # (target, runs in that target's own threads)

    def cost_ns(self, trap: float) -> float:
        """All its programs' time: an upper bound of what its targets paid."""
        return self.bpf_ns + self.traps * trap

    def paid_ns(self, trap: float) -> dict[str, float]:
        """What each target paid: the cost in proportion to the runs in its own threads. A
        probe whose programs run outside any target's threads (the network path) cannot be
        split: its whole cost is each target's."""
        runs = dict(self.at)
        total = self.cost_ns(trap)
        if not self.runs or not sum(runs.values()):
            return {t: total for t in runs}
        return {t: total * min(n, self.runs) / self.runs for t, n in runs.items()}

    def __sub__(self, other: Usage) -> Usage:
        before = dict(other.at)
        return Usage(
            self.runs - other.runs,
            self.bpf_ns - other.bpf_ns,
            self.traps - other.traps,
            tuple((t, n - before.get(t, 0)) for t, n in self.at),
        )


def usage(obj: BpfObject, index: Mapping[int, str]) -> Usage:
    """`index`: the target index in the object's maps -> target name."""
    runs = bpf_ns = traps = 0
    for _, section, run_time, run_cnt in obj.stats():
        runs += run_cnt
        bpf_ns += run_time
        if section.startswith("uprobe"):
            traps += run_cnt
    at = tuple((name, obj.percpu_sum_u64("target_runs", i)) for i, name in sorted(index.items()))
    return Usage(runs, bpf_ns, traps, at)


@dataclass(frozen=True)
class TrapCost:
    ns: float  # one uprobe trap's cost to the probed thread
    how: str  # how it was found, in words


@functools.cache
def trap_cost() -> TrapCost:
    """One uprobe trap's cost here, timed for real (once per process)."""
    try:
        ns = _calibrate()
    except (ChaoslabError, OSError, ValueError) as exc:
        why = exc.message if isinstance(exc, ChaoslabError) else str(exc)
        assumed = f"assumed {TRAP_FALLBACK_NS / 1000:g} µs: the calibration failed ({why})"
        return TrapCost(TRAP_FALLBACK_NS, assumed)
    return TrapCost(ns, f"timed at start-up: {ns / 1000:.1f} µs per uprobe hit")


def _calibrate() -> float:
    exe = build.native("trapcost")
    elf = read_elf(exe)
    if TRAP_FUNCTION not in elf.symbols:
        raise ValueError(f"{exe} has no {TRAP_FUNCTION}")
    offset = elf.file_offset(elf.symbols[TRAP_FUNCTION][0])
    proc = subprocess.Popen(
        [str(exe), str(TRAP_CALLS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None

    def rounds(n: int) -> list[float]:
        out = []
        for _ in range(n):
            stdin.write("\n")
            stdin.flush()
            out.append(float(stdout.readline()))
        return out

    try:
        plain = rounds(TRAP_ROUNDS)
        obj = BpfObject(build.bpf_object("gofunc"))
        try:
            obj.attach_uprobe("func_entry", proc.pid, exe, offset)
            trapped = rounds(TRAP_ROUNDS)
        finally:
            obj.close()
    finally:
        proc.kill()
        proc.wait()
    ns = statistics.median(trapped) - statistics.median(plain)
    if ns <= 0:
        raise ValueError(f"a uprobe added no time ({statistics.median(trapped):.0f} ns per call with it)")
    return ns
