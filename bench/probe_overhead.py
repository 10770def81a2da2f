"""Probe overhead: the Go service's highest request rate with and without every probe attached.

Side by side in one run on this machine: the go-api target is started the way `chaoslab run`
starts it (own network namespace and cgroup), then wrk drives it as hard as it can in
alternating rounds, probes detached and attached, so slow drift of a noisy machine hits both
sides alike. Two workloads:
  keep-alive   one TLS connection per wrk connection: the per-request path (app, syscall,
               network, cpu, gc probes fire on every request);
  new-conn     `Connection: close`: a TLS handshake per request, so the tls and entropy
               uprobes fire too (4 randomness reads and a handshake per request).
Prints each round's rate and, per workload, the ratio of the medians (with / without).
With --each, also the keep-alive ratio of every probe alone, to show where the cost is.

    sudo .venv/bin/python bench/probe_overhead.py [--rounds 3] [--seconds 5] [--each]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from chaoslab.orchestrator import new_run
from chaoslab.probes import PROBES, ProbeSet
from chaoslab.scenario import parse_scenario
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per side and workload")
    ap.add_argument("--seconds", type=int, default=5, help="length of one round")
    ap.add_argument("--each", action="store_true", help="also measure every probe alone (keep-alive)")
    args = ap.parse_args()
    scenario = parse_scenario(SCENARIO)
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp, ExitStack() as stack:
        ctx = new_run(scenario, Path(tmp), lambda msg: print(msg, file=sys.stderr))
        stack.callback(ctx.journal.close, True)
        runtime = LocalRuntime(ctx)
        runtime.preflight()
        targets = runtime.start(stack)
        url = f"{targets['api'].url}/work?work=20"
        rates: dict[tuple[str, bool], list[float]] = {}
        for workload, extra in WORKLOADS.items():
            for _ in range(args.rounds):
                for probed in (False, True):
                    probes = ProbeSet(PROBES, targets)
                    try:
                        if probed:
                            probes.attach()
                        rate = wrk_rate(url, args.seconds, extra)
                    finally:
                        probes.close()
                    rates.setdefault((workload, probed), []).append(rate)
                    layers = ", ".join(str(p.layer) for p in PROBES) if probed else "none"
                    print(f"{workload:10} probes {'on ' if probed else 'off'} {rate:9.1f} req/s  ({layers})")
        each: dict[str, float] = {}
        if args.each:
            for cls in PROBES:
                on, off = [], []
                for _ in range(args.rounds):
                    off.append(wrk_rate(url, args.seconds, []))
                    probes = ProbeSet([cls], targets)
                    try:
                        probes.attach()
                        on.append(wrk_rate(url, args.seconds, []))
                    finally:
                        probes.close()
                each[str(cls.layer)] = statistics.median(on) / statistics.median(off)
        print()
        for layer, ratio in each.items():
            print(f"keep-alive {layer:8} alone: ratio {ratio:.3f}")
        for workload in WORKLOADS:
            off = statistics.median(rates[(workload, False)])
            on = statistics.median(rates[(workload, True)])
            print(
                f"{workload:10} median without probes {off:9.1f} req/s, with all probes {on:9.1f} req/s: "
                f"ratio {on / off:.3f} ({(1 - on / off) * 100:.1f}% fewer requests per second; "
                f"{(1 / on - 1 / off) * 1e6:.1f} us more per request at saturation)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
