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
        return target.service.proxy

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        obj.attach_all()


class SocketAppProbe(ProxyProbe):
    """The app layer of a server that is neither Go (whose handler the uprobes time) nor a
    proxy: a request's time on an accepted connection, from its read to the response's
    write, seen in its socket syscalls (a Redis, a C or Rust or Java server)."""

    layer = Layer.APP
    mechanism = (
        "syscall tracepoints: a request read on an accepted socket to the response write "
        "(accept4, recvfrom/read/readv, sendto/write/writev), filtered by PID in BPF"
    )

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return not target.service.proxy and target.go is None
