"""Per-layer probes, registered by layer; `ProbeSet` attaches those that apply to a run's targets."""

from __future__ import annotations

from chaoslab.probes.base import Probe
from chaoslab.probes.gofunc import AppProbe, EntropyProbe, GcProbe, GoschedProbe, TlsProbe
from chaoslab.probes.memory import MemoryProbe
from chaoslab.probes.network import NetworkProbe
from chaoslab.probes.proxy import ProxyProbe, SocketAppProbe
from chaoslab.probes.sched import CpuProbe
from chaoslab.probes.set import ProbeSet
from chaoslab.probes.syscalls import SyscallProbe

PROBES: tuple[type[Probe], ...] = (
    ProxyProbe,
    NetworkProbe,
    AppProbe,
    SocketAppProbe,
    TlsProbe,
    GcProbe,
    GoschedProbe,
    EntropyProbe,
    SyscallProbe,
    CpuProbe,
    MemoryProbe,
)

__all__ = ["PROBES", "Probe", "ProbeSet"]
