"""syscall: delay or fail named syscalls of a target (ChaosBlade's strace fault, cheaper).

strace -p stops the target on every syscall (two ptrace stops each, ~25 us apiece here) and
cannot use --seccomp-bpf on a process it did not start, so a Go server attached that way
loses most of its throughput before any delay is configured. chaoslab stops a thread only
on the calls the fault acts on:
- a BPF program at the exit of each named syscall's kernel function (fexit on
  __x64_sys_<name>; where that cannot attach, the syscalls/sys_exit_<name> tracepoint)
  applies the selectors (first N, every Nth, probability) to the target's completed calls
  and sends the selected call's thread a SIGURG (bpf_send_signal_thread);
- uinject, ptrace-attached to every thread but never stopping them on syscalls, takes that
  signal stop, holds the thread for the delay and/or rewrites the return value to -errno,
  and suppresses the signal.
The delay and the error land as the call returns (strace's delay_exit); for `errno`, the
call itself has run (a write wrote), the caller sees the error. What the mechanism costs
the target's other calls is measured: the BPF filter's run time per call (kernel BPF stats)
and the signal stops that only passed through the tracer. fexit is preferred to the
tracepoint because enabling any syscall tracepoint sends every syscall of every process
through the kernel's slow path: here a loop of getppid/read/write lost 18% of its rate to
a fault on openat, a syscall it never made (bench/fault_overhead.py); with fexit, only the
named syscall's calls run anything.
"""

from __future__ import annotations

import errno
import os
import platform
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chaoslab import build
from chaoslab.errors import PreflightError
from chaoslab.faults.base import Fault, Verification
from chaoslab.faults.helper import Helper
from chaoslab.faults.syscall_names import SYSCALL_NAMES
from chaoslab.gobinary import find_function
from chaoslab.layers import Layer
from chaoslab.probes.libbpf import BpfObject, forget_u32
from chaoslab.probes.stats import STATS
from chaoslab.quote import show
from chaoslab.scenario.fields import Fields, join
from chaoslab.scenario.model import FaultSpec

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

TRACEFS = Path("/sys/kernel/tracing/events/syscalls")
MAX_DELAY = 10.0
EXIT_PROGRAM, ENTER_PROGRAM = "sys_exit", "func_entry"
# fexit programs in bpf/sysfault.bpf.c, one per named syscall; a fault naming more uses the tracepoint
FEXIT_PROGRAMS = tuple(f"sys_fexit{i}" for i in range(8))
# The prefix of a syscall's kernel function (SYSCALL_DEFINE's wrapper) by machine
SYSCALL_PREFIX = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}
MECHANISM = "BPF selector + SIGURG, ptrace hold (uinject --mode signal)"
STAT_CALLS, STAT_SELECTED, STAT_SEND_FAILED = 0, 1, 2


@dataclass(frozen=True)
class SyscallSpec(FaultSpec):
    syscalls: tuple[str, ...] = ()
    delay: float = 0.0
    errno: str = ""
    first: int = 0
    every: int = 1
    probability: float = 1.0


class SyscallFault(Fault):
    kind = "syscall"
    layer = Layer.SYSCALL
    spec: SyscallSpec

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        p = fields.problems
        names: list[str] = []
        if fields.has("syscall") and fields.has("syscalls"):
            p.add(fields.at("syscall"), "give either 'syscall' or 'syscalls', not both")
        if fields.has("syscalls"):
            for i, raw in enumerate(fields.sequence("syscalls")):
                names.append(raw if isinstance(raw, str) else "")
                if not isinstance(raw, str) or raw not in SYSCALL_NAMES:
                    p.add(join(fields.at("syscalls"), i), f"unknown syscall {show(raw)}", _closest(raw))
        else:
            name = fields.string("syscall", required=True)
            if name and name not in SYSCALL_NAMES:
                p.add(fields.at("syscall"), f"unknown syscall {show(name)}", _closest(name))
            names = [name] if name else []
        if fields.has("syscalls") and not names:
            p.add(fields.at("syscalls"), "name at least one syscall")
        delay = fields.duration("delay", positive=False)
        if delay > MAX_DELAY:
            p.add(fields.at("delay"), f"at most {MAX_DELAY:g}s, got {delay:g}s")
        err = fields.string("errno")
        if err and err not in errno.errorcode.values():
            p.add(
                fields.at("errno"), f"unknown errno {show(err)}", "use a name such as EIO, EAGAIN, ECONNRESET"
            )
        if fields.ok and not delay and not err:
            p.add(fields.path, "a syscall fault needs 'delay' or 'errno' (or both)")

        def probability(v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
                raise ValueError(f"expected a probability above 0 and at most 1, e.g. 0.1, got {show(v)}")
            return float(v)

        return SyscallSpec(
            kind=kind,
            target=target,
            path=fields.path,
            syscalls=tuple(names),
            delay=delay,
            errno=err,
            first=fields.integer("first", 0, low=1, high=1 << 62) if fields.has("first") else 0,
            every=fields.integer("every", 1, low=1, high=1 << 62),
            probability=fields.get("probability", probability, 1.0),
        )

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        return ("tracer (ptrace, as the entropy and syscall faults use)",)

    def shows_as_time(self) -> bool:
        return bool(self.spec.delay)

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self.obj: BpfObject | None = None
        self.holding_stats = False
        self.injector: Helper | None = None
        self.last: dict[str, float] = {}
        self.programs: list[str] = [EXIT_PROGRAM]
        # At the calls' exit: the fexit programs by kernel function, when they attach here
        # (found out at preflight; None: not yet known), else why not
        self.fexit: dict[str, str] | None = None
        self.no_fexit = ""

    def enter_points(self) -> list[tuple[str, int]]:
        """(function, file offset) of each named syscall's Go wrapper, when a delay can land
        before the call (the target is Go, every wrapper exists, no errno); else []."""
        if self.target.go is None or not self.target.go.symbols or self.spec.errno or not self.spec.delay:
            return []
        out = []
        for name in self.spec.syscalls:
            try:
                fn = find_function(self.target.exe, f"syscall.{name}")
            except (PreflightError, OSError):
                return []
            out.append((fn.name, fn.entry_offset))
        return out

    def where(self) -> str:
        points = self.enter_points()
        if points:
            return f"before the call (uprobe on {', '.join(f for f, _ in points)})"
        tracepoints = f"tracepoints {', '.join(f'sys_exit_{n}' for n in self.spec.syscalls)}"
        if self.fexit:
            return f"as the call returns (fexit on {', '.join(self.fexit.values())})"
        if self.fexit is None:
            return f"as the call returns (fexit on the syscalls' kernel functions, else {tracepoints})"
        return f"as the call returns ({tracepoints}; fexit: {self.no_fexit})"

    def fexit_functions(self) -> dict[str, str]:
        """fexit program -> the kernel function of each named syscall, or {} when they cannot be
        used (too many syscalls, an unknown machine)."""
        prefix = SYSCALL_PREFIX.get(platform.machine())
        if prefix is None or len(self.spec.syscalls) > len(FEXIT_PROGRAMS):
            return {}
        return {p: prefix + name for p, name in zip(FEXIT_PROGRAMS, self.spec.syscalls, strict=False)}

    def _load(self, fexit: bool) -> BpfObject:
        """The object with the fexit programs aimed at the syscalls' functions (`fexit`), and
        attached; else with them left out."""
        functions = self.fexit_functions() if fexit else {}
        obj = BpfObject(
            build.bpf_object("sysfault"), skip=set(FEXIT_PROGRAMS) - set(functions), functions=functions
        )
        try:
            for program in functions:
                obj.attach(program)
        except PreflightError:
            obj.close()
            raise
        return obj

    def _check_fexit(self) -> None:
        """Whether fexit attaches to every named syscall's function on this kernel: tried for
        real (loaded, attached, detached); nothing is selected, no target is in the map."""
        functions = self.fexit_functions()
        if not functions:
            self.fexit, self.no_fexit = {}, "not for this machine or this many syscalls"
            return
        try:
            self._load(fexit=True).close()
        except PreflightError as exc:
            self.fexit, self.no_fexit = {}, exc.message
            return
        self.fexit = functions

    def injector_argv(self) -> list[str]:
        argv = [str(build.native("uinject")), "--pid", str(self.target.pid), "--mode", "signal"]
        argv += ["--delay-us", str(round(self.spec.delay * 1e6))]
        if self.spec.errno:
            argv += ["--errno", str(getattr(errno, self.spec.errno))]
        return argv

    def config(self) -> bytes:
        s = self.spec
        return struct.pack("<QQII", s.first, s.every, round(s.probability * 1_000_000), 0)

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("the syscall fault needs root (BPF, ptrace)", "run chaoslab with sudo")
        if not TRACEFS.is_dir():
            raise PreflightError(
                f"{TRACEFS} is missing", "mount tracefs: mount -t tracefs nodev /sys/kernel/tracing"
            )
        for name in self.spec.syscalls:
            if not (TRACEFS / f"sys_exit_{name}").is_dir():
                raise PreflightError(f"{self.spec.path}: this kernel has no tracepoint for syscall {name!r}")
        build.native("uinject")
        build.bpf_object("sysfault")
        if not self.enter_points():
            self._check_fexit()
        tracer = _tracer_pid(self.target.pid)
        if tracer:
            raise PreflightError(
                f"{self.target.name} (pid {self.target.pid}) is already traced by pid {tracer}",
                "one ptrace-based fault per target at a time; detach the other tracer",
            )

    def plan(self) -> list[str]:
        s = self.spec
        sel = f"first {s.first or 'all'}, every {s.every}, probability {s.probability:g}"
        return [
            f"mechanism: {MECHANISM}, acting {self.where()}",
            f"load bpf/sysfault.bpf.c; targets[<pid of {s.target}>] = 0; selectors: {sel}",
            " ".join(self.injector_argv()).replace("--pid 0", f"--pid <pid of {s.target}>"),
            "revert: detach the BPF links, SIGTERM uinject (suppresses pending signals, detaches)",
        ]

    def journal_record(self) -> dict[str, object]:
        return {"pid": self.target.pid, "syscalls": list(self.spec.syscalls)}

    def apply(self, note: Callable[..., None]) -> None:
        STATS.hold()  # the selector's time per call, read at verify
        self.holding_stats = True
        points = self.enter_points()
        # fexit programs are attached as the object loads: nothing is selected before the
        # target is in the map, below.
        self.obj = self._load(fexit=bool(self.fexit) and not points)
        # Its id, so that a watchdog can stop the selection while chaoslab is stopped (the
        # program lives as long as chaoslab's process holds it).
        note(targets_map=self.obj.map_id("targets"))
        self.obj.update_bytes("config", 0, self.config())
        # The tracer first: no selected call may signal a thread nobody is there to catch.
        self.injector = Helper("uinject", self.injector_argv())
        self.injector.start(note, f"on {self.target.name}")
        if points:
            self.programs = [ENTER_PROGRAM]
        elif self.fexit:
            self.programs = list(self.fexit)
        else:
            self.programs = [EXIT_PROGRAM]
        for _, offset in points:
            self.obj.attach_uprobe(ENTER_PROGRAM, self.target.pid, self.target.exe, offset)
        for name in [] if points or self.fexit else self.spec.syscalls:
            self.obj.attach_tracepoint(EXIT_PROGRAM, "syscalls", f"sys_exit_{name}")
        self.obj.add_target(self.target.pid, 0)

    def _collect(self) -> None:
        if self.obj is not None:
            runs_of = [self.obj.run_stats(p) for p in self.programs]
            run_ns, runs = sum(r[0] for r in runs_of), sum(r[1] for r in runs_of)
            self.last.update(
                calls=self.obj.lookup_u64("stats", STAT_CALLS),
                selected=self.obj.lookup_u64("stats", STAT_SELECTED),
                send_failed=self.obj.lookup_u64("stats", STAT_SEND_FAILED),
                filter_runs=runs,
                filter_ns_per_call=round(run_ns / runs, 1) if runs else 0.0,
            )
        if self.injector is not None:
            self.last.update(
                held=self.injector.latest("delayed"),
                passthrough_stops=self.injector.latest("passed"),
            )

    def verify(self) -> Verification:
        self._collect()
        m = self.last
        held, selected = int(m.get("held", 0)), int(m.get("selected", 0))
        acts = [f"held {self.spec.delay * 1000:g} ms"] if self.spec.delay else []
        acts += [f"failed with {self.spec.errno}"] if self.spec.errno else []
        names = ",".join(self.spec.syscalls)
        trap = " after a uprobe trap" if self.programs == [ENTER_PROGRAM] else ""
        detail = (
            f"{held} of {int(m.get('calls', 0))} {names} calls {' and '.join(acts)} ({selected} selected); "
            f"overhead: the selector ran {m.get('filter_ns_per_call', 0):.0f} ns per {names} call{trap} "
            f"(kernel BPF stats, signalling included), other syscalls never stop, "
            f"{int(m.get('passthrough_stops', 0))} other signals passed through the tracer"
        )
        return Verification(held > 0, detail, f"{MECHANISM}, acting {self.where()}", dict(m))

    def revert(self) -> None:
        if self.obj is not None or self.injector is not None:
            self._collect()
        if self.obj is not None:  # no more selections from here on
            self.obj.close()
            self.obj = None
        if self.injector is not None:
            self.injector.stop()
            self.last["held"] = self.injector.latest("delayed")
            self.injector = None
        if self.holding_stats:
            STATS.release()
            self.holding_stats = False

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        """The selector first (no more signals), then the tracer. The BPF program dies with the
        run's process; while that process lives (stopped), the target leaves its map."""
        done = []
        pid, map_id = record.get("pid"), record.get("targets_map")
        if isinstance(pid, int) and isinstance(map_id, int) and forget_u32(map_id, "targets", pid):
            done.append(f"stopped selecting the calls of pid {pid} (BPF map {map_id})")
        return done + Helper.recover("uinject", record)


def _closest(name: object) -> str:
    import difflib

    close = difflib.get_close_matches(str(name)[:40], sorted(SYSCALL_NAMES), n=1)
    return f"did you mean {close[0]!r}?" if close else "use a Linux syscall name, e.g. write"


def _tracer_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0
