"""Round trips seen on the wire: TCP handshake times from a chosen network namespace.

A TCP connect() returns when the SYN-ACK arrives; the kernel answers the SYN without the
application, so the connect time is the network round trip between two namespaces plus
the two stacks, nothing else. Network faults use it to verify themselves: sampled before
the fault is applied and while it is active, from the vantage point whose traffic the fault
should slow down. Every probe is bounded in count and time.
"""

from __future__ import annotations

import ctypes
import os
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Vantage:
    """Connect from namespace `netns` (None: the host's) to addr:port."""

    netns: str | None
    addr: str
    port: int

    def describe(self) -> str:
        return f"{self.netns or 'host'} -> {self.addr}:{self.port}"


@dataclass
class RttSample:
    rtts: list[float] = field(default_factory=list)  # seconds, successful connects
    failed: int = 0

    @property
    def median(self) -> float | None:
        return statistics.median(self.rtts) if self.rtts else None

    def text(self) -> str:
        m = self.median
        ok = f"median {m * 1000:.2f} ms over {len(self.rtts)}" if m is not None else "no answer"
        return ok + (f", {self.failed} timed out" if self.failed else "")


def _enter(netns: str) -> None:
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _connect_once(v: Vantage, timeout: float) -> float | None:
    family = socket.AF_INET6 if ":" in v.addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        # Close with a reset: no TIME_WAIT left behind, nothing for the server to read.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t = time.perf_counter()
        try:
            s.connect((v.addr, v.port))
        except OSError:
            return None
        return time.perf_counter() - t


def sample(v: Vantage, count: int = 10, interval: float = 0.05, timeout: float = 1.0) -> RttSample:
    """`count` handshakes, `interval` apart, each bounded by `timeout` (runs in its own thread,
    because entering a namespace changes the calling thread)."""
    out = RttSample()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if v.netns:
                _enter(v.netns)
            for i in range(count):
                rtt = _connect_once(v, timeout)
                if rtt is None:
                    out.failed += 1
                else:
                    out.rtts.append(rtt)
                if i + 1 < count:
                    time.sleep(interval)
        except BaseException as exc:  # reported to the caller's thread
            errors.append(exc)

    t = threading.Thread(target=work, name=f"rtt {v.describe()}", daemon=True)
    t.start()
    t.join(count * (timeout + interval) + 5)
    if errors:
        raise errors[0]
    return out
