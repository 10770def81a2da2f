"""The proxy layer: a proxy's per-request time from its downstream socket syscalls."""

from __future__ import annotations

from chaoslab.layers import Layer
from chaoslab.probes.base import Probe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.targets.base import RunningTarget


class ProxyProbe(Probe):
    layer = Layer.PROXY
    program = "proxy"
    mechanism = "syscall tracepoints (accept4, recvfrom/read, sendto/write), filtered by PID in BPF"

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return target.service.is_proxy

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        obj.attach_all()
