"""Go function layers (tls, entropy): uprobes on a function's entry and on each RET."""

from __future__ import annotations

from typing import ClassVar

from chaoslab.gobinary import find_function
from chaoslab.layers import Layer
from chaoslab.probes.base import Probe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget

TLS_FUNCTION = "crypto/tls.(*Conn).serverHandshake"
ENTROPY_FUNCTION = "crypto/internal/sysrand.Read"


class GoFunctionProbe(Probe):
    program = "gofunc"
    mechanism = "uprobes on entry + RET sites (libbpf), keyed by goroutine"
    per_process = True
    function: ClassVar[str]

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return target.service.is_go

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        for t in targets:
            exe = t.exe
            fn = find_function(exe, self.function)
            obj.attach_uprobe("func_entry", t.pid, exe, fn.file_offset)
            for ret in fn.rets:
                obj.attach_uprobe("func_ret", t.pid, exe, fn.offset_of(ret))


class TlsProbe(GoFunctionProbe):
    layer = Layer.TLS
    function = TLS_FUNCTION


class EntropyProbe(GoFunctionProbe):
    layer = Layer.ENTROPY
    function = ENTROPY_FUNCTION
