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
