"""Probe overhead: the Go service's highest request rate without probes, with the probes each
shipped scenario attaches (what it needs, `chaoslab.probes.choose`), and with every probe; and
the service's CPU time per request at a scenario's own load.

Side by side in one run on this machine: the go-api target is started the way `chaoslab run`
starts it (own network namespace and cgroup), then wrk drives it. Every round with probes sits
between two rounds without (none, A, none, B, none, ...), and each is compared with the mean of
its two neighbours: a shared VM's speed drifts by a factor of two within a minute, and only a
pair of neighbouring rounds sees the same machine. The median of those per-round ratios is
printed, with their range. Three workloads:
  keep-alive   wrk as hard as it can, one TLS connection per wrk connection: the per-request path
               (app, syscall, network, cpu, gc probes fire on every request);
  new-conn     the same with `Connection: close`: a TLS handshake per request, so the tls and
               entropy uprobes fire too (4 randomness reads and a handshake per request);
  at-load      2 kept-alive connections, each waiting 50 ms between requests: about 40 requests/s,
               the shipped scenarios' rate. The figure is the target's CPU time per request
               (its cgroup's CPU usage over the requests wrk completed).
Per saturated round: the rate ratio (with / without), and the capacity ratio from the machine's
busy CPU time per request (without / with; steal and idle left out), which the VM's drift
moves far less than the rate. With --each, the keep-alive ratios of every probe alone. With
--accuracy, the app layer measured each way in turn over plain HTTP, one connection at a
time: the handler's uprobes (ending where net/http goes on after the handler), the same ending
at the handler call's RETs, and the socket syscalls (what a plain-HTTP Go target gets unless
it needs the uprobes), their mean, median and p99 side by side.

    sudo .venv/bin/python bench/probe_overhead.py [--rounds 5] [--seconds 3] [--each] [--accuracy]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import ClassVar

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
from chaoslab.targets.cgroup import cpu_usage_ns
from chaoslab.targets.local import LocalRuntime

SCENARIO = """
name: probe-overhead
targets:
  api: {service: go-api}
load: {protocol: https, target: api, path: "/work?work=20", rate: 1/s}
phases:
  - {name: bench, duration: 1s}
"""
SATURATED = {"keep-alive": ["-c16"], "new-conn": ["-c16", "-H", "Connection: close"]}
AT_LOAD = "at-load"
CONTROL = "no probes (control)"
DELAY = "function delay()\n  return 50\nend\n"  # ms between one connection's requests


@dataclass
class Round:
    rate: float  # requests per second
    machine_ns: float  # the machine's busy CPU time per request (no idle, no steal)
    target_ns: float  # the target cgroup's CPU time per request
    requests: float
    latency_s: float  # the requests' time: wrk's mean latency times their number
    observer_ns: float = 0.0  # with probes: their cost per request as the run's report gives it


def machine_busy_ns() -> float:
    """user + nice + system + irq + softirq of all CPUs, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(x) for x in Path("/proc/stat").read_text().split()[1:8]
    )
    return (user + nice + system + irq + softirq) * 1e9 / os.sysconf("SC_CLK_TCK")


def wrk_round(url: str, seconds: int, extra: list[str], cgroup: tuple[Path, ...]) -> Round:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is missing: apt-get install wrk")
    machine, target = machine_busy_ns(), cpu_usage_ns(cgroup)
    out = subprocess.run(
        [wrk, "-t1", f"-d{seconds}s", *extra, url], capture_output=True, text=True, check=True
    ).stdout
    machine, target = machine_busy_ns() - machine, cpu_usage_ns(cgroup) - target
    m = re.search(r"(\d+) requests in [\d.]+\w+, .*\nRequests/sec:\s+([\d.]+)", out, re.S)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", out)
    if m is None or int(m.group(1)) == 0 or lat is None:
        sys.exit(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"wrk got {errors.group(1)} error responses:\n{out}")
    n = int(m.group(1))
    mean_s = float(lat.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[lat.group(2)]
    return Round(float(m.group(2)), machine / n, target / n, n, mean_s * n)


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
        ("RET uprobes", ProbeSet([AppProbeAtRets], targets)),
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
    a, r, b = seen["uprobes"], seen["RET uprobes"], seen["socket syscalls"]
    print(f"socket syscalls against the handler's uprobes: {(b.mean_ns - a.mean_ns) / 1000:+.1f} us mean")
    print(
        f"uprobes ending where net/http goes on, against RETs: {(a.mean_ns - r.mean_ns) / 1000:+.1f} us mean"
    )


class AppProbeAtRets(AppProbe):
    """The app layer's uprobes as they were: every call ends at the handler call's RETs."""

    ends: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}


Sets = dict[str, ProbeTypes]
# per probe set: (round with probes, mean of its two neighbours without)
Pairs = dict[str, list[tuple[Round, Round]]]


def alternate(
    sets: Sets, measure: Callable[[], Round], rounds: int, label: str, targets: dict[str, RunningTarget]
) -> Pairs:
    """Every set's rounds, each between two rounds without probes (none, A, none, B, ..., none)."""
    pairs: Pairs = {name: [] for name in sets}
    for _ in range(rounds):
        before = measure()
        for name, chosen in sets.items():
            probes = ProbeSet(PROBES, targets, chosen)
            try:
                probes.attach()
                on = measure()
                costs = probes.costs(int(on.requests), on.latency_s)
                on.observer_ns = sum(c.per_request_us for c in costs) * 1000
            finally:
                probes.close()
            after = measure()
            mean = Round(*((a + b) / 2 for a, b in zip(astuple(before), astuple(after), strict=True)))
            pairs[name].append((on, mean))
            print(
                f"{label:10} {on.rate:9.1f} req/s with, {mean.rate:9.1f} without (target CPU "
                f"{on.target_ns / 1000:6.1f} / {mean.target_ns / 1000:6.1f} us per request)  {name}"
            )
            before = after
    return pairs


def observed(workload: str, name: str, pairs: list[tuple[Round, Round]]) -> None:
    """The report's figure for the probes' cost per request (`ProbeSet.costs`, the same code a
    run's report uses), against the target CPU per request they were measured to add."""
    report = statistics.median(on.observer_ns for on, _ in pairs) / 1000
    added = statistics.median(on.target_ns - off.target_ns for on, off in pairs) / 1000
    print(
        f"{workload:10} {name:40} observer cost: the report's {report:.2f} us per request, "
        f"measured {added:+.2f} us of target CPU per request"
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (rounds {min(values):.2f}-{max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per probe set and workload")
    ap.add_argument("--seconds", type=int, default=3, help="length of one round")
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
        cgroup = targets["api"].cgroup.dirs
        script = Path(tmp) / "delay.lua"
        script.write_text(DELAY)
        every = {(cls, t): "all" for cls in PROBES for t in targets if cls.applies_to(targets[t])}
        # The control: attach nothing. Its ratio is what the machine's drift alone gives a set.
        sets: Sets = {CONTROL: {}, **scenario_sets(targets), "all probes": every}
        for name, chosen in sets.items():
            print(f"probe set {name}: {', '.join(sorted({str(cls.layer) for cls, _ in chosen}))}")
        workloads = {**SATURATED, AT_LOAD: ["-c2", "-s", str(script)]}
        results = {
            workload: alternate(
                sets,
                functools.partial(wrk_round, url, args.seconds, extra, cgroup),
                args.rounds,
                workload,
                targets,
            )
            for workload, extra in workloads.items()
        }
        each: Pairs = {}
        if args.each:
            alone = {
                f"{cls.layer} ({cls.__name__})": {
                    (cls, t): "alone" for t in targets if cls.applies_to(targets[t])
                }
                for cls in PROBES
                if any(cls.applies_to(t) for t in targets.values())
            }
            each = alternate(
                alone,
                functools.partial(wrk_round, url, args.seconds, SATURATED["keep-alive"], cgroup),
                args.rounds,
                "alone",
                targets,
            )
        if args.accuracy:
            accuracy(targets, args.seconds)
        print()
        for layer, pairs in each.items():
            alone_rate = spread([on.rate / off.rate for on, off in pairs])
            alone_cpu = spread([off.machine_ns / on.machine_ns for on, off in pairs])
            print(
                f"keep-alive {layer:28} alone: rate: ratio {alone_rate}; CPU per request: ratio {alone_cpu}"
            )
        for workload in SATURATED:
            for name, pairs in results[workload].items():
                rate = [on.rate / off.rate for on, off in pairs]
                capacity = [off.machine_ns / on.machine_ns for on, off in pairs]
                added = statistics.median(on.machine_ns - off.machine_ns for on, off in pairs) / 1000
                print(
                    f"{workload:10} {name:40} rate: ratio {spread(rate)}; "
                    f"CPU per request: ratio {spread(capacity)}, {added:+.1f} us"
                )
                if name != CONTROL:
                    observed(workload, name, pairs)
        for name, pairs in results[AT_LOAD].items():
            change = [on.target_ns / off.target_ns - 1 for on, off in pairs]
            with_us = statistics.median(on.target_ns for on, _ in pairs) / 1000
            without_us = statistics.median(off.target_ns for _, off in pairs) / 1000
            rounds = f"rounds {min(change):+.1%} to {max(change):+.1%}"
            print(
                f"{AT_LOAD:10} {name:40} target CPU per request: {with_us:.1f} us with, {without_us:.1f} us "
                f"without: change {statistics.median(change):+.1%} ({rounds})"
            )
            if name != CONTROL:
                observed(AT_LOAD, name, pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
