"""The highest gRPC call rate one Locust process of chaoslab's sustains against the go-api.

The go-api target is started the way `chaoslab run` starts it (own network namespace and
cgroup, no probes); then chaoslab's own Locust users (closed model, no think time, one
worker process) call chaoslab.work.v1.Work/Do with `work: 0` (the server does next to
nothing, so the generator is the bottleneck) over TLS, round after round. Prints each
round's calls/s and the Locust process's CPU use, and the median.

The load generator is whichever chaoslab Python imports: to compare two versions of the
load path side by side, run it with PYTHONPATH=/path/to/other/checkout for one of them,
alternating runs so a noisy machine's drift hits both alike, from a directory holding
neither (`python -m locust` puts its working directory first on the import path).

    sudo .venv/bin/python bench/grpc_rate.py [--users 32] [--rounds 3] [--seconds 5] [--stream 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import chaoslab
from chaoslab.context import RunContext
from chaoslab.load.runner import LoadRunner
from chaoslab.orchestrator import new_run
from chaoslab.scenario import parse_scenario
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.local import LocalRuntime

SCENARIO = """
name: grpc-rate
targets:
  api: {service: go-api}
load:
  protocol: grpc
  target: api
  users: USERS
  requests: [REQUEST]
probes: []
phases:
  - {name: bench, duration: SECONDSs}
"""


def one_round(
    ctx: RunContext, targets: dict[str, RunningTarget], text: str, seconds: int
) -> tuple[float, tuple[float, float | None]]:
    """(calls/s, (the Locust process's CPU in cores, its threads' wait for a CPU)) over one round."""
    run_ctx = dataclasses.replace(ctx, scenario=parse_scenario(text))
    load = LoadRunner(run_ctx, targets)
    try:
        t0 = load.start()
        time.sleep(max(t0 + seconds + 0.5 - time.time(), 0))
    except Exception:
        for log in sorted(ctx.work_dir.glob("locust-*.log")):
            print(f"{log.name}:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        load.stop()
    done = [r for batch in load.read_records() for r in batch if t0 <= r.sent < t0 + seconds]
    failed = [r for r in done if not r.ok]
    if failed:
        sys.exit(f"{len(failed)} calls failed, e.g. {failed[0].error}")
    return len(done) / seconds, load.generator_cpu(t0, t0 + seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=32, help="users (each with its own HTTP/2 connection)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds")
    ap.add_argument("--seconds", type=int, default=5, help="length of one round")
    ap.add_argument("--stream", type=int, default=0, help="call Stream with this many replies instead of Do")
    args = ap.parse_args()
    request = (
        f"{{name: call, rpc: Stream, work: 0, messages: {args.stream}}}"
        if args.stream
        else "{name: call, rpc: Do, work: 0}"
    )
    text = (
        SCENARIO.replace("USERS", str(args.users))
        .replace("REQUEST", request)
        .replace("SECONDS", str(args.seconds))
    )
    print(f"chaoslab from {Path(chaoslab.__file__).parent}", file=sys.stderr)
    rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp, ExitStack() as stack:
        ctx = new_run(parse_scenario(text), Path(tmp), lambda msg: print(msg, file=sys.stderr))
        stack.callback(ctx.journal.close, True)
        runtime = LocalRuntime(ctx)
        runtime.preflight()
        targets = runtime.start(stack)
        for i in range(args.rounds):
            rate, (cpu, wait) = one_round(ctx, targets, text, args.seconds)
            rates.append(rate)
            waited = f", waited {wait:.2f} for a CPU" if wait is not None else ""
            print(f"round {i + 1}: {rate:8.1f} calls/s, Locust process {cpu:.2f} cores{waited}")
    print(f"median {statistics.median(rates):.1f} calls/s over {args.rounds} rounds of {args.seconds}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
