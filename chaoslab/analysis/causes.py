"""The causes of a phase's added time: the layers, at their targets, that hold a part of the
client's added time and no other cause's part, and the declared fault each one is.

Nesting (`Nesting.holds`). A layer's time can hold another layer's time on the same request:
- the client's holds every layer's;
- at one target, a proxy or app layer holds its tls, gc, entropy, syscall and cpu layers and
  its network time on the connections it opened itself (its calls to its dependencies, the
  network metrics "to/from dependencies": a network layer counts as that when most of its
  added time is there, see attribution.depth); a proxy also holds an app layer;
- tls holds entropy, syscall and cpu at its target, and the network time of its handshakes'
  round trips: its target's own, and the dependency time of the targets that call it;
- gosched (a goroutine runnable, waiting for a P) holds cpu at its target: the P's thread
  waits for a CPU (a throttled cgroup); it sits inside app, tls and proxy;
- entropy and gc hold cpu at their target (a thread starved inside them): entropy and gc are
  user-space reads and runtime pauses, so no syscall sits in them (a getrandom syscall on a
  kernel without the vDSO call is the exception this leaves out);
- across targets, a proxy or app layer holds every layer of the targets it calls (its links,
  and theirs), as its wait for their answer;
- network time (the wire between two sockets), syscall and cpu hold nothing.
This is a partial order, finer than DEPTH (which orders one chain): an entropy delay at the Go
service and a network delay on Envoy's listener sit side by side, and neither holds the other.

Causes (`find`). The significant layers (positive added time, p < 0.001), inner first:
- a layer whose added time is at least half made of causes it holds is explained by them,
  and is no cause itself;
- otherwise it is a cause. Causes it holds that stand for a fault (the fault's declared layer
  and target, or where the fault says its effect shows too: the far end of a faulted link) stay
  causes of their own, their time taken out of it; any other cause it holds becomes part of it
  (a thread starved inside a held randomness read is part of the entropy cause).
A layer no fault declared is a cause from MIN_SHARE of the client's added time on; a fault's
declared layer is one at any size. The shares need not add up to 1: a whole-target stall (the
cpu layer) is weighed by every request in flight, including those waiting elsewhere, so a cpu
side effect can overlap the time of the other causes.

Matching (`matches`). A cause matches a fault when it is the fault's declared layer and target,
when it lies inside that layer (the effect shows deeper than declared), or when it is where the
fault says its effect also shows. A cause that matches no fault is a side effect of the phase's
faults (or, in a phase without faults, an outside change); it never adds to a fault's share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from chaoslab.layers import DEPTH, Layer
from chaoslab.report.model import Contribution

# A layer no fault declared is a cause from this share of the client's added time on (the
# share from which the attribution chart draws a layer's bar).
MIN_SHARE = 0.02
EXPLAINS = 0.5  # a layer is explained by the causes it holds from this fraction of its added time on

LayerKey = tuple[Layer, str]  # (layer, target)

# What a layer holds of the other layers at its own target (network: see Node.dependency).
_SAME_TARGET: dict[Layer, frozenset[Layer]] = {
    Layer.PROXY: frozenset(
        {
            Layer.APP,
            Layer.TLS,
            Layer.GC,
            Layer.GOSCHED,
            Layer.ENTROPY,
            Layer.SYSCALL,
            Layer.CPU,
            Layer.MEMORY,
        }
    ),
    Layer.APP: frozenset(
        {Layer.TLS, Layer.GC, Layer.GOSCHED, Layer.ENTROPY, Layer.SYSCALL, Layer.CPU, Layer.MEMORY}
    ),
    Layer.TLS: frozenset(
        {Layer.ENTROPY, Layer.GOSCHED, Layer.SYSCALL, Layer.CPU, Layer.NETWORK, Layer.MEMORY}
    ),
    # a mark assist that allocates can reclaim (the cgroup at its limit), as can a syscall
    Layer.GC: frozenset({Layer.CPU, Layer.MEMORY}),
    Layer.ENTROPY: frozenset({Layer.CPU}),
    # a goroutine waits for a P whose thread waits for a CPU (a throttled cgroup)
    Layer.GOSCHED: frozenset({Layer.CPU}),
}
_WAITS = (Layer.PROXY, Layer.APP)  # layers that wait for the targets they call


@dataclass(frozen=True)
class Node:
    """A layer at a target, as the nesting sees it."""

    layer: Layer
    target: str
    # network only: most of its added time is on the target's calls to its dependencies
    dependency: bool = False

    @property
    def key(self) -> LayerKey:
        return (self.layer, self.target)


class Nesting:
    """Which layer's time can hold which, given who calls whom (`calls`: a target's links)."""

    def __init__(self, calls: Mapping[str, Iterable[str]]) -> None:
        self.calls = {t: frozenset(c) for t, c in calls.items()}
        reach = {t: self._reach(t) for t in self.calls}
        # the targets a target waits for: those it calls, directly or not, that do not call it back
        self.below = {t: frozenset(u for u in r if t not in reach.get(u, ())) for t, r in reach.items()}

    def _reach(self, start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.calls.get(start, ()))
        while todo:
            t = todo.pop()
            if t not in seen and t != start:
                seen.add(t)
                todo.extend(self.calls.get(t, ()))
        return seen

    def holds(self, outer: Node, inner: Node) -> bool:
        o, i = outer.layer, inner.layer
        if outer == inner or i is Layer.CLIENT:
            return False
        if o is Layer.CLIENT:
            return True
        if outer.target == inner.target:
            if i is Layer.NETWORK:
                return o is Layer.TLS or (o in _WAITS and inner.dependency)
            return i in _SAME_TARGET.get(o, frozenset())
        if o in _WAITS:
            return inner.target in self.below.get(outer.target, frozenset())
        if o is Layer.TLS:  # the caller's half of a handshake's round trips
            return (
                i is Layer.NETWORK and inner.dependency and outer.target in self.calls.get(inner.target, ())
            )
        return False


def assumed_calls(keys: Iterable[LayerKey]) -> dict[str, set[str]]:
    """Who calls whom when the run does not say: a proxy calls every other target."""
    keys = list(keys)
    targets = {t for _, t in keys}
    proxies = {t for layer, t in keys if layer is Layer.PROXY}
    return {t: (targets - {t} if t in proxies else set()) for t in targets}


@dataclass(frozen=True)
class Found:
    """A cause as found: its layer, its contribution, its own added time (ms per request)."""

    node: Node
    contribution: Contribution
    added_ms: float
    declared: bool  # a fault declared this layer and target

    @property
    def key(self) -> LayerKey:
        return self.node.key


def find(
    contributions: Sequence[Contribution],
    nodes: Mapping[LayerKey, Node],
    nesting: Nesting,
    declared: set[LayerKey],
    anchored: set[LayerKey],
) -> list[Found]:
    """The causes among `contributions` (see the module's text). `declared`: the faults' declared
    layers; `anchored`: those and the other places the faults say their effect shows."""
    candidates = [c for c in contributions if c.significant and c.added_ms > 0]
    by_key = {(Layer(c.layer), c.target): c for c in candidates}
    causes: dict[LayerKey, Found] = {}
    for key in _inner_first(list(by_key), nodes, nesting):
        c, node = by_key[key], nodes[key]
        inner = [f for f in causes.values() if nesting.holds(node, f.node)]
        if inner and sum(f.added_ms for f in inner) >= EXPLAINS * c.added_ms:
            continue  # explained by the causes it holds
        if key not in declared and c.explained < MIN_SHARE:
            continue
        kept = [f for f in inner if f.key in anchored]
        for f in inner:
            if f.key not in anchored:
                del causes[f.key]  # part of this one
        own = c.added_ms - sum(f.added_ms for f in kept)
        causes[key] = Found(node, c, round(own, 3), key in declared)
    return list(causes.values())


def _inner_first(keys: list[LayerKey], nodes: Mapping[LayerKey, Node], nesting: Nesting) -> list[LayerKey]:
    """The keys ordered so that every layer comes after the layers it holds (a cycle, which only
    targets calling each other make, is broken by DEPTH)."""
    rank: dict[LayerKey, int] = {}

    def of(key: LayerKey, visiting: frozenset[LayerKey]) -> int:
        if key in rank:
            return rank[key]
        held = [k for k in keys if k not in visiting and k != key and nesting.holds(nodes[key], nodes[k])]
        r = 1 + max((of(k, visiting | {key}) for k in held), default=-1)
        rank[key] = r
        return r

    for key in keys:
        of(key, frozenset())
    return sorted(keys, key=lambda k: (rank[k], -DEPTH[k[0]], k[1]))


def matches(cause: Node, fault: Node, also: Iterable[LayerKey], nesting: Nesting) -> bool:
    """Whether a cause is this fault's: its declared layer and target, inside it, or where the
    fault says its effect also shows."""
    return cause.key == fault.key or cause.key in set(also) or nesting.holds(fault, cause)
