"""What the probes cost the targets they watch, measured during the run, and the budget they keep.

A probe's cost is the time its BPF programs ran (the kernel's run-time statistics, sampled
in windows while probes are attached, `chaoslab.probes.stats`, and scaled to the whole run),
plus, for uprobes, the trap itself: each uprobe hit stops the thread, enters the kernel and
returns, which the BPF statistics do not count.
That trap is timed once per chaoslab process on this machine (`trap_cost`): a C function
called in a loop, without and with a uprobe on it (probes/native/trapcost.c). There are two
kinds of hit: on an instruction the kernel emulates (a jump, call, push), one trap; on any
other (a Go function's RET), the trap and a single step out of line. Under this machine's
hypervisor the second kind costs about 15 times the first. The Go probes put their entry
uprobe on an emulated instruction of the prologue (`gobinary.emulated_entry`).
A tracepoint has no trap: the kernel calls its program inline.

Each probe's cost is divided by the requests the load completed: the time per request the
act of measuring took from the targets. A tracepoint's programs also run, and return at
once, for every other process: the targets are charged all but those runs, each at the
cost of such a run (`other_run_cost`); a probe that counted no run in a target's threads
(nothing to split by) charges its whole cost to each of its targets.
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from chaoslab import build
from chaoslab.errors import ChaoslabError
from chaoslab.gobinary import read_elf
from chaoslab.probes.libbpf import BpfObject
from chaoslab.probes.stats import STATS

TRAP_FUNCTIONS = ("chaoslab_tick_stepped", "chaoslab_tick_emulated")
TRAP_CALLS = 4000  # calls per round
TRAP_ROUNDS = 3
# A calibration that cannot run (no compiler, no uprobes) falls back to these, and says so:
# a single-stepped hit costs a few µs on bare metal, 10-15 µs under a hypervisor.
TRAP_FALLBACK_NS = (5000.0, 1000.0)
ENTRY_PROGRAMS = ("func_entry", "span_begin", "gstatus")  # the Go probes' entry uprobes
END_PROGRAM = "func_end"  # a call's end on the emulated entry of the function run next
# the Go probes' programs in the order of their `hits` counters (bpf/gofunc.bpf.c H_*)
HIT_PROGRAMS = ("func_entry", "func_ret", "func_end", "span_begin", "span_end", "gstatus")


@dataclass(frozen=True)
class Usage:
    """A probe's use of its targets' time since it attached (cumulative)."""

    runs: int = 0  # runs of its BPF programs (events seen, its targets' or not)
    bpf_ns: int = 0  # their run time
    traps: int = 0  # of those, uprobe hits: each one a trap of the probed thread
    at: tuple[tuple[str, int], ...] = ()  # (target, runs in that target's own threads)
    emulated: int = 0  # of the hits, those on an emulated instruction (one trap, no step)
    dropped: int = 0  # events a full map refused (bpf/chaoslab.bpf.h `drops`)

    def trap_ns(self, trap: TrapCost) -> float:
        return self.emulated * trap.emulated_ns + (self.traps - self.emulated) * trap.stepped_ns

    def cost_ns(self, trap: TrapCost) -> float:
        """All its programs' time: an upper bound of what its targets paid."""
        return self.bpf_ns + self.trap_ns(trap)

    def paid_ns(self, trap: TrapCost, other_run_ns: float = 0.0) -> dict[str, float]:
        """What each target paid. A probe whose programs run outside any target's threads (the
        network path) cannot be split: its whole cost is each target's. Else the targets pay
        all but the runs for other processes, each at `other_run_ns` (a run that tests the
        process's bit and returns: `other_run_cost`), and at least their share of the runs;
        split between them by their runs."""
        runs = dict(self.at)
        total = self.cost_ns(trap)
        mine = sum(runs.values())
        if not self.runs or not mine:
            return {t: total for t in runs}
        others = max(0, self.runs - mine)
        charged = min(total, max(total - others * other_run_ns, total * mine / self.runs))
        return {t: charged * n / mine for t, n in runs.items()}

    def __sub__(self, other: Usage) -> Usage:
        before = dict(other.at)
        return Usage(
            self.runs - other.runs,
            self.bpf_ns - other.bpf_ns,
            self.traps - other.traps,
            tuple((t, n - before.get(t, 0)) for t, n in self.at),
            self.emulated - other.emulated,
            self.dropped - other.dropped,
        )


def target_runs(obj: BpfObject, index: Mapping[int, str]) -> tuple[tuple[str, int], ...]:
    """(target, runs of the object's programs in that target's threads), always counted."""
    return tuple((name, obj.percpu_sum_u64("target_runs", i)) for i, name in sorted(index.items()))


def usage(
    obj: BpfObject, index: Mapping[int, str], emulated_entries: bool = False, scale: float = 1.0
) -> Usage:
    """`index`: the target index in the object's maps -> target name. `emulated_entries`: the
    entry uprobes sit on emulated instructions. `scale`: from the kernel's statistics, which
    ran part of the time, to the whole time (`chaoslab.probes.set`). The uprobe hits are not
    scaled: the Go probes count them in their own map (`hits`, bpf/gofunc.bpf.c)."""
    runs = bpf_ns = traps = emulated = 0
    for name, section, run_time, run_cnt in obj.stats():
        runs += run_cnt
        bpf_ns += run_time
        if section.startswith("uprobe"):
            traps += run_cnt
            if name == END_PROGRAM or (emulated_entries and name in ENTRY_PROGRAMS):
                emulated += run_cnt
    runs, bpf_ns, traps, emulated = (round(n * scale) for n in (runs, bpf_ns, traps, emulated))
    if obj.has_map("hits"):
        counted = {name: obj.percpu_sum_u64("hits", i) for i, name in enumerate(HIT_PROGRAMS)}
        uprobe_runs, traps = traps, sum(counted.values())
        runs += traps - uprobe_runs
        emulated = counted[END_PROGRAM] + (
            sum(counted[name] for name in ENTRY_PROGRAMS) if emulated_entries else 0
        )
    dropped = sum(obj.percpu_sum_u64("drops", k) for k in DROP_KINDS) if obj.has_map("drops") else 0
    return Usage(runs, bpf_ns, traps, target_runs(obj, index), emulated, dropped)


# the keys of the `drops` map: a histogram bucket, an in-flight entry (bpf/chaoslab.bpf.h)
DROP_KINDS = (0, 1)

OTHER_RUN_SECONDS = 0.2


@functools.cache
def other_run_cost() -> float:
    """What a tracepoint program's run costs for a process that is no target (its bit tested,
    then return), in ns: the syscall probe's programs attached with no target at all, the
    kernel's statistics on for OTHER_RUN_SECONDS. Timed once per process; 0 where it cannot
    be (the targets are then charged their share of the runs, an underestimate)."""
    try:
        obj = BpfObject(build.bpf_object("syscalls"))
    except ChaoslabError:
        return 0.0
    try:
        obj.attach_all()
        STATS.hold()
        try:
            time.sleep(OTHER_RUN_SECONDS)
        finally:
            STATS.release()
        stats = [(run_time, runs) for _, _, run_time, runs in obj.stats()]
    except ChaoslabError:
        return 0.0
    finally:
        obj.close()
    runs = sum(n for _, n in stats)
    return sum(t for t, _ in stats) / runs if runs else 0.0


@dataclass(frozen=True)
class TrapCost:
    stepped_ns: float  # a hit on an instruction stepped out of line (a RET)
    emulated_ns: float  # a hit on an instruction the kernel emulates
    how: str  # how it was found, in words


NO_TRAPS = TrapCost(0.0, 0.0, "no uprobe attached")


@functools.cache
def trap_cost() -> TrapCost:
    """What a uprobe hit costs here, of each kind, timed for real (once per process)."""
    try:
        stepped, emulated = (_calibrate(name) for name in TRAP_FUNCTIONS)
    except (ChaoslabError, OSError, ValueError) as exc:
        why = exc.message if isinstance(exc, ChaoslabError) else str(exc)
        stepped, emulated = TRAP_FALLBACK_NS
        assumed = f"assumed {stepped / 1000:g} and {emulated / 1000:g} µs: the calibration failed ({why})"
        return TrapCost(stepped, emulated, assumed)
    how = (
        f"timed at start-up: {stepped / 1000:.1f} µs a hit stepped out of line, {emulated / 1000:.1f} µs "
        "a hit on an emulated instruction"
    )
    return TrapCost(stepped, emulated, how)


def _calibrate(function: str) -> float:
    exe = build.native("trapcost")
    elf = read_elf(exe)
    if function not in elf.symbols:
        raise ValueError(f"{exe} has no {function}")
    offset = elf.file_offset(elf.symbols[function][0])
    which = f"{TRAP_FUNCTIONS.index(function)}\n"
    proc = subprocess.Popen(
        [str(exe), str(TRAP_CALLS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    stdin, stdout = proc.stdin, proc.stdout
    assert stdin is not None and stdout is not None

    def rounds(n: int) -> list[float]:
        out = []
        for _ in range(n):
            stdin.write(which)
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
