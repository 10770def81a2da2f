"""`chaoslab probes`: every layer, the mechanism that measures it here, and whether it can attach.

"Can attach" is checked for real, without a run: each probe's BPF object is loaded into
the kernel (the verifier and CO-RE relocation against this kernel's BTF run), and the Go
probes look up their functions in the Go service's binary (so a stripped binary shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chaoslab import build
from chaoslab.errors import ChaoslabError
from chaoslab.layers import DEPTH, Layer
from chaoslab.probes import PROBES
from chaoslab.probes.base import Probe
from chaoslab.probes.gofunc import GoFunctionProbe
from chaoslab.probes.libbpf import BpfObject

CLIENT_MECHANISM = "the load generator's own record of every request (due, sent and end times)"


@dataclass(frozen=True)
class ProbeStatus:
    layer: Layer
    mechanism: str
    applies_to: str
    ready: bool
    detail: str
    programs: tuple[str, ...]  # "name (section)" of each BPF program the probe loads
    object: str = ""  # bpf/<object>.bpf.c


def _applies(cls: type[Probe]) -> str:
    if issubclass(cls, GoFunctionProbe):
        return "Go services"
    return "proxies" if cls.layer is Layer.PROXY else "every target"


def check(cls: type[Probe], go_binary: Path | None) -> ProbeStatus:
    programs: tuple[str, ...] = ()
    try:
        obj = BpfObject(build.bpf_object(cls.program))
        try:
            programs = tuple(f"{name} ({section})" for name, section in obj.programs())
        finally:
            obj.close()
        detail = "loads on this kernel"
        if issubclass(cls, GoFunctionProbe):
            if go_binary is None:
                raise ChaoslabError("no Go service binary to look the functions up in", "chaoslab build")
            cls.requirements(go_binary)
            detail += f"; {', '.join(cls.symbols())} found in {go_binary.name}"
        return ProbeStatus(cls.layer, cls.mechanism, _applies(cls), True, detail, programs, cls.program)
    except ChaoslabError as exc:
        return ProbeStatus(
            cls.layer, cls.mechanism, _applies(cls), False, exc.render(), programs, cls.program
        )


def catalog() -> list[ProbeStatus]:
    try:
        go_binary: Path | None = build.go_service("go-api")
    except ChaoslabError:
        go_binary = None
    rows = [ProbeStatus(Layer.CLIENT, CLIENT_MECHANISM, "the load", True, "always", ())]
    rows += [check(cls, go_binary) for cls in PROBES]
    return sorted(rows, key=lambda r: DEPTH[r.layer])
