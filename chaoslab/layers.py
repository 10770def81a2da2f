"""The layers chaoslab measures, from the user's view inward.

Depth orders the nesting used by attribution: a deeper layer's time is contained in the
time of the shallower ones on the same request path: entropy inside tls, inside the
service's request, inside the proxy's upstream time, inside the client's view; gc's mark
assist inside the handler (app); a goroutine's wait for a P (gosched) inside its handler, its
handshake, or before its handler starts (inside the proxy's upstream time); cpu, syscall and
memory (reclaim) can sit under any of them.
"""

from __future__ import annotations

from enum import StrEnum


class Layer(StrEnum):
    CLIENT = "client"
    PROXY = "proxy"
    NETWORK = "network"
    APP = "app"
    TLS = "tls"
    GC = "gc"
    GOSCHED = "gosched"
    ENTROPY = "entropy"
    SYSCALL = "syscall"
    CPU = "cpu"
    MEMORY = "memory"


DEPTH: dict[Layer, int] = {
    Layer.CLIENT: 0,
    Layer.PROXY: 1,
    Layer.NETWORK: 2,
    Layer.APP: 3,
    Layer.TLS: 3,
    Layer.GC: 4,
    Layer.GOSCHED: 4,
    Layer.ENTROPY: 4,
    Layer.SYSCALL: 5,
    Layer.CPU: 5,
    Layer.MEMORY: 5,
}
