"""The open model under a stall: recorded latency against what a freeze of known length implies.

Runs a real scenario through the CLI: the go-api target at a fixed arrival rate, frozen
(cgroup freezer) for `--freeze` seconds in a phase exactly that long. A request due t
seconds into the freeze cannot be answered before the freeze ends, so the phase's
latencies are spread evenly over (0, F] on top of the baseline's service time s:
p50 = F/2 + s, p99 = 0.99 F + s, max = F + s. With `concurrency` users only that many
requests can be in flight, so rate x F - concurrency requests must be sent late.
Prints the recorded values, the implied ones and their ratios, and, for contrast, the
figures of the same requests measured from their send time, as a generator that waits
for its users would record them (coordinated omission).

    sudo .venv/bin/python bench/open_model_stall.py [--rate 200] [--freeze 1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from chaoslab.load.records import quantile, read_records

SCENARIO = """
name: open-model-stall
targets:
  api: {{service: go-api}}
load: {{protocol: https, target: api, path: "/work?work=20", rate: {rate}/s, concurrency: {concurrency}}}
phases:
  - {{name: baseline, duration: 4s}}
  - {{name: frozen, duration: {freeze}s, faults: [{{kind: process, target: api, action: pause}}]}}
  - {{name: after, duration: 3s}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=200, help="arrivals per second")
    ap.add_argument("--freeze", type=float, default=1.0, help="seconds the target is frozen")
    ap.add_argument("--concurrency", type=int, default=32, help="most requests in flight")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp:
        path = Path(tmp) / "stall.yaml"
        path.write_text(SCENARIO.format(rate=args.rate, freeze=args.freeze, concurrency=args.concurrency))
        out = Path(tmp) / "out"
        res = subprocess.run(
            [sys.executable, "-m", "chaoslab", "run", str(path), "--out", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if res.returncode not in (0, 1):
            sys.exit(f"the run failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        report = json.loads((out / "report.json").read_text())
        rows = {c["phase"]: c for c in report["client"]}
        phase = next(p for p in report["phases"] if p["name"] == "frozen")
        records = [
            r
            for f in sorted((out / "work").glob("requests-*.bin"))
            for r in read_records(f)
            if phase["start"] <= r.due < phase["end"] and r.ok
        ]
    frozen, s = rows["frozen"], rows["baseline"]["p50_ms"]
    f_ms = args.freeze * 1000
    implied = {"p50": f_ms / 2 + s, "p99": 0.99 * f_ms + s, "max": f_ms + s}
    recorded = {"p50": frozen["p50_ms"], "p99": frozen["p99_ms"], "max": frozen["max_ms"]}
    from_send = sorted((r.end - r.sent) * 1000 for r in records)
    omitted = {"p50": quantile(from_send, 0.5), "p99": quantile(from_send, 0.99), "max": from_send[-1]}
    late_implied = max(args.rate * args.freeze - args.concurrency, 0)
    print(f"{args.rate}/s, {args.concurrency} in flight at most, target frozen {args.freeze:g} s")
    print(f"baseline p50 {s:.1f} ms; frozen phase: {frozen['requests']} requests")
    for q in ("p50", "p99", "max"):
        r, i, o = recorded[q], implied[q], omitted[q]
        print(
            f"{q:4} recorded {r:8.1f} ms  implied {i:8.1f} ms  ratio {r / i:.3f}"
            f"   | from send {o:8.1f} ms  ratio {o / i:.3f}"
        )
    print(
        f"late requests: {frozen['late']} (implied {late_implied:.0f}), "
        f"of them sent late by an idle user (the generator's own delay): {frozen['generator_late']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
