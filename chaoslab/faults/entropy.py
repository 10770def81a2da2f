"""entropy: slow every randomness read of a running Go target by a fixed delay.

Why not a syscall injector: Go >= 1.24 on Linux >= 6.11 reads randomness through the vDSO
getrandom and never enters the syscall, so `strace -e inject=getrandom` changes nothing.
Instead chaoslab's native injector (faults/native/uinject.c) attaches to the target with
ptrace and puts a breakpoint in the prologue of `crypto/internal/sysrand.Read` (on the
instruction after the entropy probe's entry uprobe, `Function.after_probe`),
the function every crypto/rand read of a Go program goes through, whatever the kernel path.
A thread that hits it is held for the delay while every other thread runs on; it is then
stepped over the original instruction. Nothing in the target needs to cooperate.

Revert: SIGTERM to the injector restores the original byte and detaches. If the injector
was killed outright, `recover` writes the original byte back through /proc/PID/mem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chaoslab import build, proc
from chaoslab.errors import FaultError, PreflightError
from chaoslab.faults.base import Fault, Verification
from chaoslab.faults.helper import Helper
from chaoslab.gobinary import find_function, go_binary, runtime_address
from chaoslab.layers import Layer
from chaoslab.probes.gofunc import ENTROPY_FUNCTION
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import FaultSpec, TargetSpec

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

MAX_DELAY = 10.0
INT3 = 0xCC
MECHANISM = f"ptrace breakpoint on {ENTROPY_FUNCTION} (uinject)"


@dataclass(frozen=True)
class EntropySpec(FaultSpec):
    delay: float = 0.0
    every: int = 1


class EntropyFault(Fault):
    kind = "entropy"
    layer = Layer.ENTROPY
    spec: EntropySpec

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        delay = fields.duration("delay", required=True)
        if delay > MAX_DELAY:
            fields.problems.add(fields.at("delay"), f"at most {MAX_DELAY:g}s, got {delay:g}s")
        every = fields.integer("every", 1, low=1, high=1_000_000)
        return EntropySpec(kind=kind, target=target, path=fields.path, delay=delay, every=every)

    @classmethod
    def check(cls, spec: FaultSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        """Only a Go program with a symbol table reads randomness where the fault holds it;
        checked here for a built-in or a program (an image or attached process: at preflight)."""
        t = targets[spec.target]
        why = ""
        if t.kind == "service":
            from chaoslab.targets.builtins import BUILTINS

            if not BUILTINS[t.service].go:
                why = f"{t.service} is not a Go program"
        elif t.kind == "program" and t.argv and t.argv[0].startswith("/"):
            go = go_binary(Path(t.argv[0]))
            if go is None:
                why = f"{t.argv[0]} is not a Go program"
            elif not go.symbols:
                why = f"{t.argv[0]} is a stripped Go binary (no symbol table)"
        if why:
            problems.add(
                join(spec.path, "target"),
                f"the entropy fault holds Go's randomness reads, and {why}",
                "aim it at a Go target built with its symbol table (without -ldflags '-s')",
            )

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        return ("tracer (ptrace, as the entropy and syscall faults use)",)

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self.addr = 0
        self.orig = 0
        self.injector: Helper | None = None
        self.last = (0, 0)  # randomness reads seen, reads held

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("the entropy fault needs root (ptrace)", "run chaoslab with sudo")
        build.native("uinject")  # fail here, before anything is applied, if it cannot be built
        go = self.target.go
        if go is None or not go.symbols:
            what = "not a Go program" if go is None else f"a stripped Go binary ({go.describe()})"
            raise PreflightError(
                f"{self.spec.path}: {self.target.name} runs {self.target.exe.name}, {what}: the entropy "
                "fault holds Go's randomness reads",
                "aim it at a Go target built with its symbol table (without -ldflags '-s')",
            )
        fn = find_function(self.target.exe, ENTROPY_FUNCTION)
        self.addr = runtime_address(self.target.pid, self.target.exe, fn.after_probe)
        self.orig = _read_byte(self.target.pid, self.addr)
        if self.orig == INT3:
            raise PreflightError(
                f"{self.target.name}: a breakpoint is already set at {self.addr:#x}",
                "another debugger or a killed run left it: run `chaoslab recover`",
            )

    def argv(self) -> list[str]:
        return [
            str(build.native("uinject")),
            "--pid",
            str(self.target.pid),
            "--addr",
            f"{self.addr:#x}",
            "--delay-us",
            str(int(self.spec.delay * 1e6)),
            "--every",
            str(self.spec.every),
        ]

    def plan(self) -> list[str]:
        argv = " ".join(self.argv())
        if not self.addr:  # no process yet: name the instruction instead of its address
            fn = find_function(self.target.exe, ENTROPY_FUNCTION)
            where = f"<{ENTROPY_FUNCTION}+{fn.after_probe - fn.vaddr:#x} in pid of {self.target.name}>"
            argv = argv.replace("--addr 0x0", f"--addr {where}").replace(
                "--pid 0", f"--pid <pid of {self.target.name}>"
            )
        return [f"mechanism: {MECHANISM}", argv, "revert: SIGTERM uinject (restores the byte, detaches)"]

    def journal_record(self) -> dict[str, object]:
        return {
            "pid": self.target.pid,
            "pid_start": proc.start_time(self.target.pid),
            "addr": self.addr,
            "orig_byte": self.orig,
        }

    def apply(self, note: Callable[..., None]) -> None:
        self.injector = Helper("uinject", self.argv())
        self.injector.start(note, f"on {self.target.name}")

    def expected_shift(self) -> float | None:
        return self.spec.delay / self.spec.every

    def also_shows_in(self, targets: Mapping[str, TargetSpec]) -> tuple[tuple[Layer, str], ...]:
        """A thread held in a read keeps its P (the Go runtime takes a P back from a thread in a
        syscall, not from one running Go code): the goroutines queued on that P wait for a P to
        run on, the gosched layer at the target, the fault's effect on requests that read nothing."""
        return ((Layer.GOSCHED, self.spec.target),)

    def verify(self) -> Verification:
        if self.injector is not None:
            self._stats_from(self.injector)
        hits, delayed = self.last
        return Verification(
            observed=delayed > 0,
            detail=f"{delayed} of {hits} randomness reads held {self.spec.delay * 1000:g}ms",
            mechanism=MECHANISM,
        )

    def revert(self) -> None:
        injector, self.injector = self.injector, None
        if injector is None:
            return
        self._stats_from(injector)
        injector.stop()
        self._stats_from(injector)
        if not injector.exit.get("restored") and self.target.alive():
            # The injector died without restoring: put the original byte back ourselves.
            _restore(self.target.pid, self.addr, self.orig)
        if self.target.alive() and _read_byte(self.target.pid, self.addr) == INT3:
            raise FaultError(
                f"entropy revert failed on {self.target.name}: breakpoint still at {self.addr:#x}"
            )

    def _stats_from(self, injector: Helper) -> None:
        self.last = (injector.latest("hits"), injector.latest("delayed"))

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        done = Helper.recover("uinject", record)
        pid, start = record.get("pid"), record.get("pid_start")
        addr, orig = record.get("addr"), record.get("orig_byte")
        if (
            isinstance(pid, int)
            and isinstance(addr, int)
            and isinstance(orig, int)
            and proc.start_time(pid) == start
            and _read_byte(pid, addr) == INT3
        ):
            _restore(pid, addr, orig)
            done.append(f"restored the instruction at {addr:#x} in pid {pid}")
        return done


def _read_byte(pid: int, addr: int) -> int:
    with Path(f"/proc/{pid}/mem").open("rb") as mem:
        mem.seek(addr)
        return mem.read(1)[0]


def _restore(pid: int, addr: int, orig: int) -> None:
    with Path(f"/proc/{pid}/mem").open("r+b") as mem:
        mem.seek(addr)
        mem.write(bytes([orig]))
