"""The layers chaoslab measures, from the user's view inward.

Depth orders the nesting used by attribution: a deeper layer's time is contained in the
time of the shallower ones on the same request path (entropy inside tls, inside the
service's connection, inside the proxy's request, inside the client's view).
"""

from __future__ import annotations

from enum import StrEnum


class Layer(StrEnum):
    CLIENT = "client"
    PROXY = "proxy"
    TLS = "tls"
    ENTROPY = "entropy"


DEPTH: dict[Layer, int] = {Layer.CLIENT: 0, Layer.PROXY: 1, Layer.TLS: 2, Layer.ENTROPY: 3}

# What each layer's figure is, in one line, for reports and `chaoslab probes`.
MEANING: dict[Layer, str] = {
    Layer.CLIENT: "load generator's view: from a request's due time to its response",
    Layer.PROXY: "proxy's request: downstream request read to downstream response write",
    Layer.TLS: "TLS handshakes of the service (server side)",
    Layer.ENTROPY: "randomness reads of the service (Go crypto/internal/sysrand.Read, vDSO or syscall)",
}
