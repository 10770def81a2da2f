"""The proxy layer: a proxy's per-request time from its downstream socket syscalls."""

from __future__ import annotations

import os
import struct

from chaoslab.layers import Layer
from chaoslab.probes.base import Probe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.proc import ESTABLISHED, LISTEN, tcp_sockets
from chaoslab.targets.base import RunningTarget


class ProxyProbe(Probe):
    layer = Layer.PROXY
    program = "proxy"
    mechanism = "syscall tracepoints (accept4/accept, recvfrom/read, sendto/write), filtered by PID in BPF"

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return target.service.proxy

    def attach(self, obj: BpfObject, targets: list[RunningTarget]) -> None:
        obj.attach_all()
        for t in targets:
            seed(obj, t.pid)


class SocketAppProbe(ProxyProbe):
    """The app layer of a server that is neither Go (whose handler the uprobes time) nor a
    proxy: a request's time on an accepted connection, from its read to the response's
    write, seen in its socket syscalls (a Redis, a C or Rust or Java server)."""

    layer = Layer.APP
    mechanism = (
        "syscall tracepoints: a request read on an accepted socket to the response write "
        "(accept4/accept, recvfrom/read/readv, sendto/write/writev), filtered by PID in BPF"
    )

    @classmethod
    def applies_to(cls, target: RunningTarget) -> bool:
        return not target.service.proxy and target.go is None


def accepted_sockets(pid: int) -> list[int]:
    """The fds of `pid` that are connections it accepted (established TCP sockets whose local
    port is one it listens on), read from /proc: those it held before the probe attached."""
    try:
        fds = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                fds[link[8:-1]] = int(fd)
    except OSError:  # gone, or not ours to read: nothing to seed
        return []
    mine = [(inode, port, state) for inode, port, state in tcp_sockets(pid) if inode in fds]
    listening = {port for _, port, state in mine if state == LISTEN}
    return sorted(fds[i] for i, port, state in mine if state == ESTABLISHED and port in listening)


def seed(obj: BpfObject, pid: int) -> int:
    """Register the connections `pid` accepted before the probe attached, as accept4 would have
    (a client's keep-alive connection or a pool opened at start-up is otherwise never seen: a
    service whose callers reuse one would show no requests). Returns how many."""
    added = []
    for fd in accepted_sockets(pid):
        if obj.insert_new("downstream", struct.pack("<II", pid, fd), struct.pack("<Q", 0)):
            added.append(fd)  # else accepted (or closed and reused) since the attach: its own entry
    still = set(accepted_sockets(pid))
    for fd in added:
        if fd not in still:  # closed meanwhile: its number may be a file's next
            obj.delete("downstream", struct.pack("<II", pid, fd))
    return len(still.intersection(added))
