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
from chaoslab.probes.base import Probe, kernel
from chaoslab.probes.gofunc import GoFunctionProbe
from chaoslab.probes.libbpf import BpfObject
from chaoslab.probes.proxy import SocketAppProbe
from chaoslab.targets.base import RunningTarget

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
    ways: tuple[tuple[str, str], ...] = ()  # (hook, mechanism) taken on this kernel


def _applies(cls: type[Probe]) -> str:
    if issubclass(cls, GoFunctionProbe):
        return "Go programs (with a symbol table)"
    if cls is SocketAppProbe:
        return "other servers (not Go, not proxies)"
    return "proxies" if cls.layer is Layer.PROXY else "every target"


def check(cls: type[Probe], go_binary: Path | None) -> ProbeStatus:
    """Whether the probe attaches here, checked for real: its programs are loaded and
    attached (tracepoints, fentry, kprobes; the Go probes' uprobes on the Go service's binary),
    then detached. What this says attaches is what a run attaches."""
    programs: tuple[str, ...] = ()
    try:
        obj = BpfObject(build.bpf_object(cls.program), skip=_alternatives(cls))
        try:
            programs = tuple(f"{name} ({section})" for name, section in obj.programs())
        finally:
            obj.close()
        ways = cls.attach_check(go_binary)
        detail = f"attaches on kernel {kernel()}" + (f"; {ways}" if ways else "")
        taken = tuple((hook, way.mechanism) for hook, way in cls.choose().items())
        return ProbeStatus(
            cls.layer, cls.mechanism, _applies(cls), True, detail, programs, cls.program, taken
        )
    except ChaoslabError as exc:
        return ProbeStatus(
            cls.layer, cls.mechanism, _applies(cls), False, exc.render(), programs, cls.program
        )


def _alternatives(cls: type[Probe]) -> set[str]:
    """Every alternative way of a hook but the best: the object loads with those skipped."""
    return {w.program for h in cls.hooks for w in h.ways[1:]}


def catalog() -> list[ProbeStatus]:
    try:
        go_binary: Path | None = build.go_service("go-api")
    except ChaoslabError:
        go_binary = None
    rows = [ProbeStatus(Layer.CLIENT, CLIENT_MECHANISM, "the load", True, "always", ())]
    rows += [check(cls, go_binary) for cls in PROBES]
    return sorted(rows, key=lambda r: DEPTH[r.layer])


@dataclass(frozen=True)
class TargetLayer:
    target: str
    layer: Layer
    status: str  # "yes", "no" (cannot, though it should), "-" (does not apply)
    why: str


def for_targets(targets: dict[str, RunningTarget]) -> list[TargetLayer]:
    """Per target of a scenario, which layers apply and why (`chaoslab probes FILE`)."""
    rows = []
    for t in targets.values():
        go = t.go
        what = (
            "an image's program, known when its container runs"
            if t.proc is None and t.binary is None
            else f"{t.exe.name}: {go.describe() if go else 'not a Go program'}"
        )
        for cls in PROBES:
            why_not = cls.unavailable_for(t)
            if cls.applies_to(t):
                rows.append(TargetLayer(t.name, cls.layer, "yes", f"{_applies(cls)} ({what})"))
            elif why_not:
                rows.append(TargetLayer(t.name, cls.layer, "no", why_not))
            elif cls.layer is Layer.APP and not issubclass(cls, GoFunctionProbe):
                continue  # the other way of measuring app says why
            else:
                rows.append(TargetLayer(t.name, cls.layer, "-", f"for {_applies(cls)} only ({what})"))
    return rows
