"""The load engine's highest HTTP rate, side by side with plain Locust and with wrk.

The go-api target is started the way `chaoslab run` starts it (own network namespace and
cgroup, no probes), then three generators drive GET /healthz over plain HTTP as fast as they
can, with the same users (connections) and the same worker processes, in alternating
rounds so a noisy machine's drift hits all of them alike:
  chaoslab   chaoslab's own Locust users (closed model, no think time), every request
             recorded with its due, send and end time and tailed into the run;
  locust     plain Locust: a FastHttpUser with no wait time (--processes for workers);
  wrk        the machine's ceiling: a C generator with `workers` threads.
Prints each round and, per worker count, the ratios of the medians, and the median of the
per-round ratios chaoslab/locust (the two generators of one round ran seconds apart, so
that ratio moves less when the machine's other load comes and goes). On a machine whose
cores the target shares, the generators compete with the target for CPU: compare the
ratios, not the absolute rates.

    sudo .venv/bin/python bench/load_rate.py [--workers 1,2] [--users 32] [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from chaoslab.context import RunContext
from chaoslab.load.runner import LoadRunner
from chaoslab.orchestrator import new_run
from chaoslab.scenario import parse_scenario
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.local import LocalRuntime

TARGET = """
name: load-rate
targets:
  api: {service: go-api}
load: {protocol: http, target: api, path: /healthz, users: USERS, workers: WORKERS}
probes: []
phases:
  - {name: bench, duration: SECONDSs}
"""
PLAIN = Path(__file__).resolve().parent / "plain_locustfile.py"


def chaoslab_rate(
    ctx: RunContext, targets: dict[str, RunningTarget], users: int, workers: int, seconds: int
) -> float:
    text = (
        TARGET.replace("USERS", str(users)).replace("WORKERS", str(workers)).replace("SECONDS", str(seconds))
    )
    run_ctx = dataclasses.replace(ctx, scenario=parse_scenario(text))
    load = LoadRunner(run_ctx, targets)
    try:
        t0 = load.start()
        time.sleep(max(t0 + seconds + 0.5 - time.time(), 0))
    finally:
        load.stop()
    done = [r for batch in load.read_records() for r in batch if t0 <= r.sent < t0 + seconds and r.ok]
    return len(done) / seconds


def locust_rate(url: str, users: int, workers: int, seconds: int, tmp: Path) -> float:
    prefix = tmp / f"plain-{workers}"
    argv = [
        sys.executable, "-m", "locust", "-f", str(PLAIN), "--headless", "--host", url,
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--csv", str(prefix),
        "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    if workers > 1:
        argv += ["--processes", str(workers)]
    subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    with open(f"{prefix}_stats.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    if int(row["Failure Count"]):
        sys.exit(f"plain Locust got {row['Failure Count']} failures")
    return float(row["Requests/s"])


def wrk_rate(url: str, users: int, workers: int, seconds: int) -> float:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is missing: apt-get install wrk")
    out = subprocess.run(
        [wrk, f"-t{workers}", f"-c{users}", f"-d{seconds}s", f"{url}/healthz"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        sys.exit(f"cannot read wrk's output:\n{out}")
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2")
    ap.add_argument("--users", type=int, default=32, help="users (connections) per generator")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per generator and worker count")
    ap.add_argument("--seconds", type=int, default=5, help="length of one round")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    text = TARGET.replace("USERS", "1").replace("WORKERS", "1").replace("SECONDS", "1")
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp, ExitStack() as stack:
        ctx = new_run(parse_scenario(text), Path(tmp), lambda msg: print(msg, file=sys.stderr))
        stack.callback(ctx.journal.close, True)
        runtime = LocalRuntime(ctx)
        runtime.preflight()
        targets = runtime.start(stack)
        url = targets["api"].url_for("http")
        rates: dict[tuple[str, int], list[float]] = {}
        for workers in counts:
            for _ in range(args.rounds):
                for name in ("chaoslab", "locust", "wrk"):
                    if name == "chaoslab":
                        rate = chaoslab_rate(ctx, targets, args.users, workers, args.seconds)
                    elif name == "locust":
                        rate = locust_rate(url, args.users, workers, args.seconds, Path(tmp))
                    else:
                        rate = wrk_rate(url, args.users, workers, args.seconds)
                    rates.setdefault((name, workers), []).append(rate)
                    print(f"workers {workers}  {name:8} {rate:9.1f} req/s")
        print()
        for workers in counts:
            med = {name: statistics.median(rates[(name, workers)]) for name in ("chaoslab", "locust", "wrk")}
            c, lo, w = med["chaoslab"], med["locust"], med["wrk"]
            paired = statistics.median(
                a / b for a, b in zip(rates[("chaoslab", workers)], rates[("locust", workers)], strict=True)
            )
            print(
                f"workers {workers}: median chaoslab {c:.0f}, plain Locust {lo:.0f}, wrk {w:.0f} req/s; "
                f"chaoslab/locust {c / lo:.3f} (per round: median {paired:.3f}), "
                f"chaoslab/wrk {c / w:.3f}, locust/wrk {lo / w:.3f}"
            )
        if len(counts) > 1:
            lo, hi = counts[0], counts[-1]
            for name in ("chaoslab", "locust", "wrk"):
                ratio = statistics.median(rates[(name, hi)]) / statistics.median(rates[(name, lo)])
                print(f"{name:8} workers {hi} / workers {lo}: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
