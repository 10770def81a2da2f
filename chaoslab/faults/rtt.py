"""Round trips seen on the wire: TCP handshake times from a chosen network namespace.

A TCP connect() returns when the SYN-ACK arrives; the kernel answers the SYN without the
application, so the connect time is the network round trip between two namespaces plus
the two stacks, nothing else. Network faults use it to verify themselves: sampled before
the fault is applied and while it is active, from the vantage point whose traffic the fault
should slow down. Every probe is bounded in count and time.
"""

from __future__ import annotations

import socket
import statistics
import struct
import time
from dataclasses import dataclass, field

from chaoslab.targets.health import CHECK_PORT, bind_from_block
from chaoslab.targets.netns import call_in


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


def _connect_once(v: Vantage, timeout: float) -> float | None:
    family = socket.AF_INET6 if ":" in v.addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        # Close with a reset: no TIME_WAIT left behind, nothing for the server to read.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # From the check block: the fault acts on it, the network probe leaves it out.
        bind_from_block(s, CHECK_PORT)
        t = time.perf_counter()
        try:
            s.connect((v.addr, v.port))
        except OSError:
            return None
        return time.perf_counter() - t


def sample(v: Vantage, count: int = 10, interval: float = 0.05, timeout: float = 1.0) -> RttSample:
    """`count` handshakes, `interval` apart, each bounded by `timeout`, from the vantage's namespace."""

    def work() -> RttSample:
        out = RttSample()
        for i in range(count):
            rtt = _connect_once(v, timeout)
            if rtt is None:
                out.failed += 1
            else:
                out.rtts.append(rtt)
            if i + 1 < count:
                time.sleep(interval)
        return out

    return call_in(v.netns, work, timeout=count * (timeout + interval) + 5)
