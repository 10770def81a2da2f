"""Probe overhead: the Go service's highest request rate without probes, with the probes each
shipped scenario attaches (what it needs, `chaoslab.probes.choose`), and with every probe.

Side by side in one run on this machine: the go-api target is started the way `chaoslab run`
starts it (own network namespace and cgroup), then wrk drives it as hard as it can in
alternating rounds, probes detached and attached, so slow drift of a noisy machine hits both
sides alike. Two workloads:
  keep-alive   one TLS connection per wrk connection: the per-request path (app, syscall,
               network, cpu, gc probes fire on every request);
  new-conn     `Connection: close`: a TLS handshake per request, so the tls and entropy
               uprobes fire too (4 randomness reads and a handshake per request).
Prints each round's rate and, per workload and probe set, the ratio of the medians (with /
without). With --each, also the keep-alive ratio of every probe alone, to show where the cost is.
With --accuracy, the app layer measured each way in turn over plain HTTP, one connection at a
time: the handler's uprobes, and the socket syscalls (what a plain-HTTP Go target gets unless
it needs the uprobes), their mean, median and p99 side by side.

    sudo .venv/bin/python bench/probe_overhead.py [--rounds 3] [--seconds 5] [--each] [--accuracy]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from chaoslab.errors import ChaoslabError
from chaoslab.faults import FAULT_KINDS
from chaoslab.layers import Layer
from chaoslab.orchestrator import new_run
from chaoslab.probes import PROBES, ProbeSet
from chaoslab.probes.base import Probe
from chaoslab.probes.choose import choose, needs
from chaoslab.probes.gofunc import AppProbe
from chaoslab.probes.proxy import SocketAppProbe
from chaoslab.scenario import load_scenario, parse_scenario
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.local import LocalRuntime

SCENARIO = """
name: probe-overhead
targets:
  api: {service: go-api}
load: {protocol: https, target: api, path: "/work?work=20", rate: 1/s}
phases:
  - {name: bench, duration: 1s}
"""
WORKLOADS = {"keep-alive": [], "new-conn": ["-H", "Connection: close"]}


def wrk_rate(url: str, seconds: int, extra: list[str]) -> float:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is missing: apt-get install wrk")
    out = subprocess.run(
        [wrk, "-t1", "-c16", f"-d{seconds}s", *extra, url], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        sys.exit(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"wrk got {errors.group(1)} error responses:\n{out}")
    return float(m.group(1))


ProbeTypes = dict[tuple[type[Probe], str], str]
SHIPPED = Path(__file__).resolve().parent.parent / "scenarios"


def scenario_sets(targets: dict[str, RunningTarget]) -> dict[str, ProbeTypes]:
    """The probes each shipped scenario attaches, applied to the bench's Go target: the layers
    it needs (its faults', expectations', stop conditions', gRPC load's) and the tracepoint probes."""
    bench = parse_scenario(SCENARIO)
    assert bench is not None
    sets: dict[str, ProbeTypes] = {}
    for path in sorted(SHIPPED.glob("*.yaml")):
        try:
            scenario = load_scenario(path)
        except ChaoslabError as exc:
            print(f"{path.name}: left out, it does not load here ({exc.message})", file=sys.stderr)
            continue
        faults = []
        for phase in scenario.phases:
            for spec in phase.faults:
                try:
                    faults.append(FAULT_KINDS[spec.kind](spec, targets["api"]))
                except ChaoslabError:
                    continue
        layers = tuple(sorted({str(layer) for layer, _ in needs(scenario, faults, targets)}))
        chosen = choose(dataclasses.replace(bench, required_probes=layers), targets).attach
        same = next((name for name, s in sets.items() if s == chosen), None)
        if same is not None:
            sets[f"{same}, {path.stem}"] = sets.pop(same)
        else:
            sets[path.stem] = chosen
    return sets


def accuracy(targets: dict[str, RunningTarget], seconds: int) -> None:
    """The app layer measured each way in turn over plain HTTP, one connection at a time (no
    queueing): the handler's uprobes, then the socket syscalls."""
    url = f"{targets['api'].url_for('http')}/work?work=20"
    seen = {}
    for name, probes in (
        ("uprobes", ProbeSet([AppProbe], targets)),
        ("socket syscalls", ProbeSet([SocketAppProbe], targets, {(SocketAppProbe, "api"): "accuracy"})),
    ):
        try:
            probes.attach()
            subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", url], capture_output=True, check=True)
            seen[name] = h = probes.snapshot()[(Layer.APP, "api", "")]
        finally:
            probes.close()
        print(
            f"app layer by {name:15}: {h.count} requests, mean {h.mean_ns / 1000:.1f} us, "
            f"p50 {h.quantile_ns(0.5) / 1000:.1f} us, p99 {h.quantile_ns(0.99) / 1000:.1f} us"
        )
    a, b = seen["uprobes"], seen["socket syscalls"]
    print(f"socket syscalls against the handler's uprobes: {(b.mean_ns - a.mean_ns) / 1000:+.1f} us mean")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per side and workload")
    ap.add_argument("--seconds", type=int, default=5, help="length of one round")
    ap.add_argument("--each", action="store_true", help="also measure every probe alone (keep-alive)")
    ap.add_argument("--accuracy", action="store_true", help="app layer: socket syscalls against uprobes")
    args = ap.parse_args()
    scenario = parse_scenario(SCENARIO)
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp, ExitStack() as stack:
        ctx = new_run(scenario, Path(tmp), lambda msg: print(msg, file=sys.stderr))
        stack.callback(ctx.journal.close, True)
        runtime = LocalRuntime(ctx)
        runtime.preflight()
        targets = runtime.start(stack)
        url = f"{targets['api'].url}/work?work=20"
        every = {(cls, t): "all" for cls in PROBES for t in targets if cls.applies_to(targets[t])}
        sets: dict[str, ProbeTypes | None] = {"none": None, **scenario_sets(targets), "all probes": every}
        for name, chosen in sets.items():
            layers = sorted({str(cls.layer) for cls, _ in chosen}) if chosen else []
            print(f"probe set {name}: {', '.join(layers) or 'no probes'}")
        rates: dict[tuple[str, str], list[float]] = {}
        for workload, extra in WORKLOADS.items():
            for _ in range(args.rounds):
                for name, chosen in sets.items():
                    probes = ProbeSet(PROBES, targets, chosen) if chosen else None
                    try:
                        if probes is not None:
                            probes.attach()
                        rate = wrk_rate(url, args.seconds, extra)
                    finally:
                        if probes is not None:
                            probes.close()
                    rates.setdefault((workload, name), []).append(rate)
                    print(f"{workload:10} {rate:9.1f} req/s  {name}")
        each: dict[str, float] = {}
        if args.each:
            for cls in PROBES:
                on, off = [], []
                for _ in range(args.rounds):
                    off.append(wrk_rate(url, args.seconds, []))
                    one = ProbeSet([cls], targets)
                    try:
                        one.attach()
                        on.append(wrk_rate(url, args.seconds, []))
                    finally:
                        one.close()
                each[str(cls.layer)] = statistics.median(on) / statistics.median(off)
        if args.accuracy:
            accuracy(targets, args.seconds)
        print()
        for layer, ratio in each.items():
            print(f"keep-alive {layer:8} alone: ratio {ratio:.3f}")
        for workload in WORKLOADS:
            off = statistics.median(rates[(workload, "none")])
            for name in list(sets)[1:]:
                on = statistics.median(rates[(workload, name)])
                print(
                    f"{workload:10} {name:40} {on:9.1f} req/s against {off:9.1f} without probes: ratio "
                    f"{on / off:.3f} ({(1 / on - 1 / off) * 1e6:+.1f} us per request at saturation)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
