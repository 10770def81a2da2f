"""What a running Go target's runtime decided: read from its memory, nothing asked of it.

GOMAXPROCS is the number of Ps, the goroutines that run at once. Since Go 1.25 the runtime sets
it from the CPU limit of its cgroup (the quota rounded up, at least 2) and from its CPU affinity,
and follows both as they change (sysmon looks about once a second), unless the program or its
GOMAXPROCS variable fixed it. A CPU fault can so change how many goroutines a service runs at
once: the report says when it did. The value is `runtime.gomaxprocs`, a 32-bit global of every
Go program, read through /proc/PID/mem at the address its symbol table gives.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from chaoslab.errors import PreflightError
from chaoslab.gobinary import variable_address
from chaoslab.targets.base import RunningTarget

GOMAXPROCS = "runtime.gomaxprocs"


def gomaxprocs(target: RunningTarget) -> int | None:
    """The target's GOMAXPROCS now; None when it is no Go program with symbols, or is gone."""
    if target.go is None or not target.go.symbols:
        return None
    return read_gomaxprocs(target.pid, target.exe)


def read_gomaxprocs(pid: int, exe: Path) -> int | None:
    """GOMAXPROCS of Go process `pid` running `exe`; None when it cannot be read."""
    try:
        address = variable_address(pid, exe, GOMAXPROCS)
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(address)
            raw = mem.read(4)
    except (OSError, PreflightError, ValueError):
        return None
    if len(raw) != 4:
        return None
    n = int(struct.unpack("<i", raw)[0])
    return n if 0 < n <= 1 << 16 else None


def read_all(targets: Iterable[RunningTarget]) -> dict[str, int]:
    """GOMAXPROCS of every Go target that has one to read."""
    out = {}
    for t in targets:
        n = gomaxprocs(t)
        if n is not None:
            out[t.name] = n
    return out


def changes(base: Mapping[str, int], phase: Mapping[str, int], cpu_faulted: Iterable[str] = ()) -> list[str]:
    """What the Go runtime did in a phase, against the baseline: one sentence per target whose
    GOMAXPROCS moved. `cpu_faulted`: the targets a CPU fault of the phase limited."""
    limited = set(cpu_faulted)
    out = []
    for name in sorted(set(base) & set(phase)):
        if base[name] != phase[name]:
            why = " (the Go runtime followed the CPU limit)" if name in limited else ""
            out.append(f"GOMAXPROCS at {name} {base[name]} -> {phase[name]}{why}")
    return out
