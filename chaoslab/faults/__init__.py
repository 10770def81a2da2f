"""Fault kinds, registered under their YAML `kind:`."""

from __future__ import annotations

from chaoslab.faults.base import Fault, Verification
from chaoslab.faults.cpu import CpuFault
from chaoslab.faults.entropy import EntropyFault
from chaoslab.faults.memory import MemoryFault
from chaoslab.faults.network import NetworkFault
from chaoslab.faults.process import ProcessFault
from chaoslab.faults.syscall import SyscallFault

FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls for cls in (EntropyFault, NetworkFault, CpuFault, ProcessFault, SyscallFault, MemoryFault)
}

__all__ = ["FAULT_KINDS", "Fault", "Verification"]
