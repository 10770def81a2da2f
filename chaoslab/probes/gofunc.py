"""Go function layers (tls, entropy, app, gc): uprobes on a function's entry and on each RET."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from chaoslab import build
from chaoslab.gobinary import find_function, has_function
from chaoslab.layers import Layer
from chaoslab.probes.base import LayerUnavailable, Probe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget

TLS_FUNCTION = "crypto/tls.(*Conn).serverHandshake"
ENTROPY_FUNCTION = "crypto/internal/sysrand.Read"
APP_FUNCTION = "net/http.serverHandler.ServeHTTP"
# One gRPC call, unary or streaming, on its own goroutine (grpc-go's per-stream handler).
GRPC_FUNCTION = "google.golang.org/grpc.(*Server).handleStream"
STW_BEGIN = "runtime.stopTheWorldWithSema"
STW_END = "runtime.startTheWorldWithSema"
ASSIST_FUNCTION = "runtime.gcAssistAlloc"


class GoFunctionProbe(Probe):
    program = "gofunc"
    mechanism = "uprobes on entry + RET sites (libbpf), keyed by goroutine"
    per_process = True
    # (function, metric): the function's duration on its goroutine, recorded under metric
    functions: ClassVar[tuple[tuple[str, int], ...]] = ()
    # (begin function, end function, metric): one span per process, begin entry to end RET
    spans: ClassVar[tuple[tuple[str, str, int], ...]] = ()
    # Functions that only some services have (e.g. grpc-go's): attached where present.
    optional: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return target.go is not None and target.go.symbols

    @classmethod
    def unavailable_for(cls, target: RunningTarget) -> str | None:
        go = target.go
        if go is not None and not go.symbols:
            return (
                f"{target.exe.name} is a stripped Go binary ({go.describe()}): the Go layers need its "
                "symbol table (build it without -ldflags '-s')"
            )
        return None

    @classmethod
    def symbols(cls) -> list[str]:
        return [f for f, _ in cls.functions] + [n for b, e, _ in cls.spans for n in (b, e)]

    @classmethod
    def requirements(cls, exe: Path) -> None:
        """Raise PreflightError when `exe` lacks a function this probe needs (e.g. it is stripped)."""
        for name in cls.symbols():
            if name not in cls.optional:
                find_function(exe, name)

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        self.emulated_entries = all([self._attach_binary(obj, t.pid, t.exe) for t in targets])

    @classmethod
    def _attach_binary(cls, obj: BpfObject, pid: int, exe: Path) -> bool:
        """The uprobes of every function and span in `exe`, for process `pid` (-1: any); whether
        every entry uprobe sits on an instruction the kernel emulates (one trap, no step)."""
        emulated = True
        for name, metric in cls.functions:
            if name in cls.optional and not has_function(exe, name):
                continue
            fn = find_function(exe, name)
            emulated &= fn.entry_emulated
            obj.attach_uprobe("func_entry", pid, exe, fn.entry_offset, metric)
            for ret in fn.rets:
                obj.attach_uprobe("func_ret", pid, exe, fn.offset_of(ret), metric)
        for begin, end, metric in cls.spans:
            fn = find_function(exe, begin)
            emulated &= fn.entry_emulated
            obj.attach_uprobe("span_begin", pid, exe, fn.entry_offset, metric)
            fn = find_function(exe, end)
            for ret in fn.rets:
                obj.attach_uprobe("span_end", pid, exe, fn.offset_of(ret), metric)
        return emulated

    @classmethod
    def attach_check(cls, exe: Path | None = None) -> str:
        """Attach the uprobes to the binary itself (any process running it), then detach."""
        if exe is None:
            raise LayerUnavailable(f"no Go binary to look the {cls.layer} functions up in", "chaoslab build")
        cls.requirements(exe)
        obj = BpfObject(build.bpf_object(cls.program))
        try:
            cls._attach_binary(obj, -1, exe)
        finally:
            obj.close()
        return f"{', '.join(cls.symbols())} in {exe.name}"


class TlsProbe(GoFunctionProbe):
    layer = Layer.TLS
    functions = ((TLS_FUNCTION, 0),)


class EntropyProbe(GoFunctionProbe):
    layer = Layer.ENTROPY
    functions = ((ENTROPY_FUNCTION, 0),)


class AppProbe(GoFunctionProbe):
    """The handler's own time, per request: net/http's call into the service's handler, and
    grpc-go's handling of one call (where the service has it)."""

    layer = Layer.APP
    functions = ((APP_FUNCTION, 1), (GRPC_FUNCTION, 2))
    optional = frozenset({GRPC_FUNCTION})
    metrics: ClassVar[dict[int, str]] = {1: "http", 2: "grpc"}


class GcProbe(GoFunctionProbe):
    """Stop-the-world pauses (per process) and mark assist (per goroutine, inside requests)."""

    layer = Layer.GC
    mechanism = "uprobes on the Go runtime's stop/start-the-world and gcAssistAlloc (entry + RET sites)"
    functions = ((ASSIST_FUNCTION, 2),)
    spans = ((STW_BEGIN, STW_END, 1),)
    metrics: ClassVar[dict[int, str]] = {1: "stop-the-world", 2: "mark assist"}
