"""Go function layers (tls, entropy, app, gc): uprobes on a function's entry and on each RET, or on
the entry of the function its callers run next (ENDS)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from chaoslab import build
from chaoslab.errors import PreflightError
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
# Where a call of a function can end without uprobes on its RETs (each one stepped out of line
# after its trap, 12 µs a hit under this machine's hypervisor against 0.9 for an emulated one):
# per caller of the function, the function that caller runs next on the same goroutine, whose
# entry is an emulated instruction. net/http's connection loop calls finishRequest once the
# handler returns (after cancelling the request's context); its HTTP/2 server's runHandler, and
# golang.org/x/net/http2's (http2.ConfigureServer), call the response writer's handlerDone from
# a deferred function. A binary that has a caller and not its function, or where that function's
# entry is not emulated, keeps the RET uprobes. A hijacked connection (a WebSocket) skips
# finishRequest, and a handler that panics skips both: such a request has no end, as with RETs.
ENDS: dict[str, tuple[tuple[str, str], ...]] = {
    APP_FUNCTION: (
        ("net/http.(*conn).serve", "net/http.(*response).finishRequest"),
        ("net/http.(*http2serverConn).runHandler", "net/http.(*http2responseWriter).handlerDone"),
        (
            "golang.org/x/net/http2.(*serverConn).runHandler",
            "golang.org/x/net/http2.(*responseWriter).handlerDone",
        ),
    )
}
STW_BEGIN = "runtime.stopTheWorldWithSema"
STW_END = "runtime.startTheWorldWithSema"
ASSIST_FUNCTION = "runtime.gcAssistAlloc"
# Every change of a goroutine's state (runtime/proc.go): casgstatus(gp, oldval, newval)
STATUS_FUNCTION = "runtime.casgstatus"
NEW_GOROUTINE = 2  # the gosched metric of a goroutine's first wait (bpf/gofunc.bpf.c W_NEW)


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
    # function -> (caller, function it runs next): where a call ends without RET uprobes (ENDS)
    ends: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    # (function, program): one uprobe of `program` on the function's entry, which does the rest
    entries: ClassVar[tuple[tuple[str, str], ...]] = ()

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
        return (
            [f for f, _ in cls.functions]
            + [n for b, e, _ in cls.spans for n in (b, e)]
            + [f for f, _ in cls.entries]
        )

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
            ends = cls.end_markers(exe, name)
            if ends:
                for offset in ends:
                    obj.attach_uprobe("func_end", pid, exe, offset, metric)
                continue
            for ret in fn.rets:
                obj.attach_uprobe("func_ret", pid, exe, fn.offset_of(ret), metric)
        for begin, end, metric in cls.spans:
            fn = find_function(exe, begin)
            emulated &= fn.entry_emulated
            obj.attach_uprobe("span_begin", pid, exe, fn.entry_offset, metric)
            fn = find_function(exe, end)
            for ret in fn.rets:
                obj.attach_uprobe("span_end", pid, exe, fn.offset_of(ret), metric)
        for name, program in cls.entries:
            fn = find_function(exe, name)
            emulated &= fn.entry_emulated
            obj.attach_uprobe(program, pid, exe, fn.entry_offset)
        return emulated

    @classmethod
    def end_markers(cls, exe: Path, name: str) -> list[int]:
        """The file offsets of the emulated entries that end a call of `name` in `exe` (ENDS),
        one per caller the binary has; [] when the RETs must do it."""
        offsets = []
        for caller, following in cls.ends.get(name, ()):
            if not has_function(exe, caller):
                continue  # that path is not in this binary
            try:
                fn = find_function(exe, following)
            except PreflightError:  # not there, or not one to probe: the RETs do it
                return []
            if not fn.entry_emulated:
                return []
            offsets.append(fn.entry_offset)
        return offsets

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
    mechanism = (
        "uprobes on the handler call's entry and, by goroutine, on the entry of what net/http runs "
        "next (finishRequest, HTTP/2's handlerDone), else its RET sites; grpc-go's: entry + RET sites"
    )
    functions = ((APP_FUNCTION, 1), (GRPC_FUNCTION, 2))
    optional = frozenset({GRPC_FUNCTION})
    ends = ENDS
    metrics: ClassVar[dict[int, str]] = {1: "http", 2: "grpc"}


class GcProbe(GoFunctionProbe):
    """Stop-the-world pauses (per process) and mark assist (per goroutine, inside requests)."""

    layer = Layer.GC
    mechanism = "uprobes on the Go runtime's stop/start-the-world and gcAssistAlloc (entry + RET sites)"
    functions = ((ASSIST_FUNCTION, 2),)
    spans = ((STW_BEGIN, STW_END, 1),)
    metrics: ClassVar[dict[int, str]] = {1: "stop-the-world", 2: "mark assist"}


class GoschedProbe(GoFunctionProbe):
    """The Go scheduler: the time a target's goroutines wait runnable for a P to run on. A
    request's goroutine waits so when every P is busy (GOMAXPROCS goroutines running), or when
    the thread holding its P is held (stopped in a fault's breakpoint, starved of CPU, in a long
    syscall sysmon has not yet taken the P from). A new connection's goroutine waits so before
    its handler or handshake starts ("new goroutine")."""

    layer = Layer.GOSCHED
    mechanism = (
        "uprobe on runtime.casgstatus's entry (every goroutine state change): runnable to running, "
        "keyed by goroutine"
    )
    entries = ((STATUS_FUNCTION, "gstatus"),)
    metrics: ClassVar[dict[int, str]] = {
        1: "woken",
        NEW_GOROUTINE: "new goroutine",
        3: "preempted",
        4: "syscall exit",
    }

    def in_layer(self, metric: int) -> bool:
        """A new goroutine's wait is listed, not added to the layer: beside a new connection's
        goroutine (on its first request's path) a server starts goroutines that no request waits
        for, as net/http does once a request, to read ahead on the connection (the response is
        sent before that goroutine is waited for). Under a syscall delay here those waited 5.5 ms
        each for a P, a quarter of the client's added time that was on no request's path."""
        return metric != NEW_GOROUTINE
