"""The highest HTTP rate with 1, 2 and 3 Locust workers, the others on a simulated second host.

The second host is a network namespace with its own veth link and addresses (tests/farhost.py);
the go-api target runs there. A run of `chaoslab run` drives GET /healthz as fast as it can
(closed model, `users` users, no think time) for `seconds`: with 1 worker the run's own
(on this host, reaching the target over the link), with 2 and 3 that one and 1 or 2
`chaoslab worker` processes on the far host that join the run's Locust master. wrk, with
as many connections and 2 threads, on this host, gives the link's and the target's ceiling.
Rounds alternate the worker counts, so a noisy machine's drift hits all of them alike.

Prints each round (the rate of every worker, from the report's per-worker rows) and, per
worker count, the median rate and its ratio to 1 worker's and to wrk's. Both "hosts" share
this machine's cores: a worker added on the far host takes CPU from the target and the
other workers, which it would not on a second machine. Compare the ratios; what limited
the rate is printed beside them (the cores every process shares, or the target).

    sudo .venv/bin/python bench/remote_rate.py [--workers 1,2,3] [--users 24] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load_rate import wrk_rate  # noqa: E402
from tests.farhost import FarHost, far_host, free_port, service_there  # noqa: E402

SCENARIO = """\
name: remote-rate
targets:
  api: {{attach: {{pid: {pid}}}, ports: {{http: {port}}}, health: {{http: /healthz}}}}
load:
  protocol: http
  target: api
  path: /healthz
  users: {users}
{remote}probes: []
phases:
  - {{name: bench, duration: {seconds}s}}
"""


def chaoslab_rate(
    far: FarHost, pid: int, port: int, users: int, workers: int, seconds: int, tmp: Path
) -> tuple[float, list[dict[str, Any]], list[str]]:
    """The run's rate of successful requests over its phase, its per-worker rows, and what
    the run said saturated (a generator at its ceiling: a core's worth of Python, or late sends)."""
    remote = ""
    joiners: list[subprocess.Popen[bytes]] = []
    if workers > 1:
        listen = f"{far.here}:{free_port()}"
        remote = f'  remote: {{workers: {workers - 1}, listen: "{listen}", wait: 60s}}\n'
        argv = [sys.executable, "-m", "chaoslab", "worker", "--master", listen, "--once", "--wait", "60"]
        joiners = [far.run(argv, tmp / f"worker-{workers}-{i}.log") for i in range(workers - 1)]
    path = tmp / f"rate-{workers}.yaml"
    out = tmp / f"out-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    path.write_text(SCENARIO.format(pid=pid, port=port, users=users, remote=remote, seconds=seconds))
    try:
        res = subprocess.run(
            [sys.executable, "-m", "chaoslab", "run", str(path), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=seconds + 180,
            cwd=REPO,
        )
        for j in joiners:
            j.wait(timeout=60)
    finally:
        for j in joiners:
            j.kill()
            j.wait()
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    generator = report.get("generator", {})
    # a generator at its ceiling is what this bench looks for: the run says so and exits 1
    if not (res.returncode == 0 or (res.returncode == 1 and generator.get("saturated"))):
        sys.exit(f"chaoslab run exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    [client] = report["client"]
    [phase] = report["phases"]
    ok = client["requests"] - client["errors"]
    said = [r.split(" (")[0].split(" in phase")[0] for r in generator.get("reasons", [])]
    return ok / (phase["end"] - phase["start"]), generator["per_worker"], said


def cpu_ticks() -> tuple[int, int]:
    """The machine's CPU ticks so far: (busy, all), from /proc/stat's first line."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # less idle and iowait


class BusyMeter:
    """How busy the machine's cores were: sampled every 0.5 s in a thread, the busiest 2 s
    (the load's phase, not the run's start or report)."""

    def __init__(self) -> None:
        self.samples = [cpu_ticks()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append(cpu_ticks())

    def __enter__(self) -> BusyMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> float:
        s = self.samples
        shares = [(s[i + 4][0] - s[i][0]) / max(1, s[i + 4][1] - s[i][1]) for i in range(len(s) - 4)]
        return max(shares, default=0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,3", help="worker counts to compare, e.g. 1,2,3")
    ap.add_argument("--users", type=int, default=24, help="users (connections) in all")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per worker count")
    ap.add_argument("--seconds", type=int, default=8, help="length of one run's phase")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("remote_rate: run as root (it makes a network namespace)")
    counts = [int(w) for w in args.workers.split(",")]
    rates: dict[int | str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmpdir, far_host() as far:
        tmp = Path(tmpdir)
        svc, port = service_there(far, tmp)
        try:
            url = f"http://{far.there}:{port}"
            for _ in range(args.rounds):
                for workers in counts:
                    with BusyMeter() as meter:
                        rate, rows, saturated = chaoslab_rate(
                            far, svc.pid, port, args.users, workers, args.seconds, tmp
                        )
                    rates.setdefault(workers, []).append(rate)
                    parts = ", ".join(f"{'far' if r['remote'] else 'here'} {r['rate']:.0f}/s" for r in rows)
                    parts = parts or "here"  # one worker: the report has no per-worker rows
                    if saturated:
                        parts += "; " + "; ".join(saturated)
                    print(
                        f"workers {workers}: {rate:8.1f} req/s  cores {meter.peak():.0%} busy  ({parts})",
                        flush=True,
                    )
                w = wrk_rate(url, args.users, 2, args.seconds)  # 2 threads
                rates.setdefault("wrk", []).append(w)
                print(f"wrk:       {w:8.1f} req/s", flush=True)
        finally:
            svc.kill()
            svc.wait()
    wrk = statistics.median(rates["wrk"])
    one = statistics.median(rates[counts[0]])
    print(
        f"\n{os.cpu_count()} cores shared by the target, every worker and the run; {args.users} users in all"
    )
    print(f"| workers | median req/s | / {counts[0]} worker{'s' if counts[0] > 1 else ''} | / wrk |")
    print("|---|---|---|---|")
    for workers in counts:
        med = statistics.median(rates[workers])
        print(f"| {workers} | {med:.0f} | {med / one:.2f} | {med / wrk:.2f} |")
    print(f"| wrk (2 threads) | {wrk:.0f} | {wrk / one:.2f} | 1.00 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
