"""Which probes a run attaches, and why: what the scenario needs, at the least cost.

Tracepoint probes (proxy, network, syscall, cpu, and the app layer from socket syscalls)
cost tens of nanoseconds per event: they are always on, so that a phase's added time can
be found in any layer, also one no fault names. The Go uprobe layers trap the probed
thread on every hit (10-15 µs here, a few µs on bare metal, `chaoslab.probes.cost`), and
the app and gc uprobes hit on every request: they are attached where the scenario needs
them:
- a fault's layer (an entropy fault: entropy at its target), and where its effect also shows;
- a layer an expectation or a stop condition names, or that `probes.required` lists;
- the app layer of a Go target that gRPC requests reach (one HTTP/2 connection carries
  many calls: only the handler's uprobes time one).
A Go target that serves plain HTTP/1.1 only (no TLS, no gRPC port) has its app layer from
its socket syscalls, as any other server has: a request's read to its response's write. That
is the handler's time plus the server's own work around it (reading and parsing the request,
waking its goroutine, writing the response): on the bench's service, one connection at a
time, 39 µs against the handler's 22 µs (bench/probe_overhead.py --accuracy). A phase's
added time is the same either way; the offset is the server's, and the report names the
mechanism. Over TLS the socket sees handshake records too, so there the app layer needs the
uprobes.

A scenario's `probes:` list overrides all this: exactly those layers, where they apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chaoslab.faults.base import Fault
from chaoslab.layers import Layer
from chaoslab.probes import PROBES
from chaoslab.probes.base import Probe
from chaoslab.probes.gofunc import GoFunctionProbe
from chaoslab.probes.proxy import SocketAppProbe
from chaoslab.scenario.model import TLS_PROTOCOLS, Scenario
from chaoslab.targets.base import RunningTarget

ALWAYS = "always on (tracepoints)"
# when the Go uprobe layers trap their target, where more often than each hit of one function
HITS = {
    Layer.APP: "on every request",
    Layer.GC: "on every request",
    Layer.GOSCHED: "on every change of a goroutine's state",
}


@dataclass
class Choice:
    # (probe class, target name) -> why it is attached there
    attach: dict[tuple[type[Probe], str], str] = field(default_factory=dict)
    # (layer, target name) -> why it is not, and how to have it
    left_out: dict[tuple[Layer, str], str] = field(default_factory=dict)


def plain_http(target: RunningTarget) -> bool:
    """It serves HTTP/1.1 in the clear only: its socket syscalls show each request."""
    protocols = set(target.service.ports)
    return bool(protocols) and not protocols & {*TLS_PROTOCOLS, "grpc-plain"}


def needs(
    scenario: Scenario, faults: Iterable[Fault], targets: Mapping[str, RunningTarget]
) -> dict[tuple[Layer, str | None], str]:
    """(layer, target or None for every target) -> what in the scenario needs it measured."""
    out: dict[tuple[Layer, str | None], str] = {}

    def need(layer: str | Layer, target: str | None, why: str) -> None:
        if layer in Layer.__members__.values():
            out.setdefault((Layer(layer), target), why)

    for fault in faults:
        what = f"the {fault.kind} fault at {fault.spec.target} ({fault.spec.path})"
        need(fault.expected_layer(), fault.spec.target, what)
        for also, at in fault.also_shows_in(scenario.targets):
            need(also, at, what)
    for e in scenario.expect:
        if e.absorbed_by:
            need(e.absorbed_by, e.target, f"the expectation at {e.path}")
        for ref in (*e.causes, *((e.cause,) if e.cause else ())):
            need(ref.layer, ref.target, f"the expectation at {e.path}")
    for named, _ in scenario.abort.added:
        need(named, None, "a stop condition (abort.added)")
    for named in scenario.required_probes:
        need(named, None, "probes.required")
    for r in scenario.load.requests:
        if r.protocol.startswith("grpc"):
            need(Layer.APP, r.target, f"gRPC requests to {r.target}: one connection carries many calls")
    return out


def choose(
    scenario: Scenario,
    targets: Mapping[str, RunningTarget],
    faults: Iterable[Fault] = (),
    probe_types: Iterable[type[Probe]] = PROBES,
) -> Choice:
    here = {n: t for n, t in targets.items() if not t.remote}  # a remote engine's: its helper picks
    return pick(needs(scenario, faults, targets), scenario.probes, here, probe_types)


def pick(
    wanted: Mapping[tuple[Layer, str | None], str],
    listed: Iterable[str] | None,
    targets: Mapping[str, RunningTarget],
    probe_types: Iterable[type[Probe]] = PROBES,
) -> Choice:
    """The probes for `targets` as they are seen where the probes attach (this machine, or a
    remote engine's host from chaoslab's helper there): what `wanted` needs (`needs`), or exactly
    the scenario's `probes:` list when it has one (`listed`)."""
    choice = Choice()
    types = tuple(probe_types)
    if listed is not None:
        layers = set(listed)
        for cls in types:
            for t in targets.values():
                if cls.layer in layers and (cls.applies_to(t) or cls.unavailable_for(t)):
                    choice.attach[(cls, t.name)] = "listed in the scenario's probes:"
        return choice

    def wanted_at(layer: Layer, target: str) -> str | None:
        return wanted.get((layer, target)) or wanted.get((layer, None))

    for cls in types:
        for t in targets.values():
            if not issubclass(cls, GoFunctionProbe):
                if cls.applies_to(t) or cls.unavailable_for(t):
                    choice.attach[(cls, t.name)] = ALWAYS
                continue
            if not (cls.applies_to(t) or cls.unavailable_for(t)):
                continue
            why = wanted_at(cls.layer, t.name)
            if why is not None:
                choice.attach[(cls, t.name)] = f"needed by {why}"
            elif cls.layer is Layer.APP and plain_http(t) and SocketAppProbe in types:
                choice.attach[(SocketAppProbe, t.name)] = (
                    "plain HTTP/1.1: the app layer from socket syscalls, without a uprobe per request"
                )
            else:
                choice.left_out[(cls.layer, t.name)] = (
                    f"no fault, expectation or gRPC load needs it, and its uprobes trap {t.name} "
                    f"{HITS.get(cls.layer, 'on every hit')}: "
                    f"list {cls.layer} in the scenario's probes: to measure it"
                )
    return choice
