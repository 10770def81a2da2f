"""The syscall layer: per-syscall latency of the target's threads, tracer holds included."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from chaoslab.layers import Layer
from chaoslab.probes.base import Probe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")

# Syscalls in which a thread waits for work rather than doing it: an idle server spends
# its life in them, so they are reported per syscall but left out of the layer's time.
WAITS = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "futex",
        "futex_wait",
        "futex_waitv",
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "nanosleep",
        "clock_nanosleep",
        "pause",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "wait4",
        "waitid",
        "io_getevents",
        "io_pgetevents",
        "io_uring_enter",
        "accept",
        "accept4",
    }
)


# A tracer hold that joined no syscall of the layer (bpf/syscalls.bpf.c M_HOLD): the held
# goroutine was preempted by its runtime's signal and the thread went on to wait, or to run
# other code first. It is still time a syscall fault held the thread: in the layer.
HOLD = 1100


# The waits' x86-64 numbers (the syscall ABI does not change them): the layer leaves them out
# even where the libc headers are not installed (a minimal host, chaoslab's helper image).
WAIT_NUMBERS = {
    "accept": 43,
    "accept4": 288,
    "clock_nanosleep": 230,
    "epoll_pwait": 281,
    "epoll_pwait2": 441,
    "epoll_wait": 232,
    "futex": 202,
    "futex_waitv": 449,
    "io_getevents": 208,
    "io_pgetevents": 333,
    "io_uring_enter": 426,
    "nanosleep": 35,
    "pause": 34,
    "poll": 7,
    "ppoll": 271,
    "pselect6": 270,
    "rt_sigsuspend": 130,
    "rt_sigtimedwait": 128,
    "select": 23,
    "wait4": 61,
    "waitid": 247,
}


@lru_cache(maxsize=1)
def syscall_table() -> dict[int, str]:
    """x86-64 syscall numbers from the libc headers (Debian linux-libc-dev); without them, the
    waits' numbers alone (the others are named by number)."""
    if not UNISTD.exists():
        return {nr: name for name, nr in WAIT_NUMBERS.items()}
    table = {}
    for m in re.finditer(r"^#define __NR_(\w+) (\d+)$", UNISTD.read_text(), re.M):
        table[int(m.group(2))] = m.group(1)
    return table


class SyscallProbe(Probe):
    layer = Layer.SYSCALL
    program = "syscalls"
    mechanism = (
        "raw tracepoints sys_enter/sys_exit filtered by tgid, plus tracer stops next to a "
        "syscall (raw tracepoint sched_switch, TASK_TRACED)"
    )

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return True

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        for nr, name in syscall_table().items():
            if name in WAITS:
                obj.update_u32("waits", nr, 1)
        obj.attach_all()

    def metric_name(self, metric: int) -> str:
        if metric == HOLD:
            return "tracer hold"
        return syscall_table().get(metric - 1, f"syscall {metric - 1}")

    def in_layer(self, metric: int) -> bool:
        return self.metric_name(metric) not in WAITS
