"""Per-layer probes, registered by layer; `ProbeSet` attaches those that apply to a run's targets."""

from __future__ import annotations

from chaoslab.probes.base import Probe
from chaoslab.probes.gofunc import EntropyProbe, TlsProbe
from chaoslab.probes.proxy import ProxyProbe
from chaoslab.probes.set import ProbeSet

PROBES: tuple[type[Probe], ...] = (ProxyProbe, TlsProbe, EntropyProbe)

__all__ = ["PROBES", "Probe", "ProbeSet"]
