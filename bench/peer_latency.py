"""The client's latency against a peer load tool's, side by side in one run.

Runs `chaoslab run` on one scenario (the go-api target over plain HTTP at a fixed arrival
rate, open model; a baseline, a network delay with jitter on the target, a recovery) and, at
the same time, vegeta (a Go open-model load tool that set-up builds from the Go module proxy)
at the same rate against the same address. Every request of both is put in the phase it was
sent in (the run's phase windows), and the bench prints per phase:
  - chaoslab's p50 and p99 from due time (what its report gives), from sent time (its
    `answer_*`), and its own lateness (due to sent, p50 and p99);
  - vegeta's p50 and p99 (from its send: vegeta does not count its own lateness);
  - the ratios chaoslab/vegeta, from due and from sent, and the differences in ms.
Both tools share the machine's cores and the target: compare the ratios, not the absolute
numbers.

    sudo .venv/bin/python bench/peer_latency.py [--rate 50] [--seconds 60] [--delay 30] [--jitter 10]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chaoslab.load.records import quantile

REPO = Path(__file__).resolve().parent.parent
VEGETA = REPO / ".build" / "third-party" / "vegeta"

SCENARIO = """\
name: peer-latency
targets:
  api: {{service: go-api}}
load: {{protocol: http, target: api, path: /healthz, rate: {rate}/s, concurrency: 32}}
probes: []
phases:
  - {{name: baseline, duration: {seconds}s}}
  - name: delay
    duration: {seconds}s
    faults: [{{kind: network, target: api, delay: {delay}ms, jitter: {jitter}ms}}]
  - {{name: recovery, duration: {seconds}s}}
"""


def vegeta_start_up() -> float:
    """Seconds from launching `vegeta attack` to its pacer's start (its first send comes one
    period later), the least of three tries at 1,000/s against a closed port on loopback."""
    tries = []
    for _ in range(3):
        launched = time.time()
        attack = subprocess.run(
            [str(VEGETA), "attack", "-rate=1000/1s", "-duration=1ms", "-timeout=1s"],
            input=b"GET http://127.0.0.1:9/\n", capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        encoded = subprocess.run(
            [str(VEGETA), "encode", "--to", "csv"], input=attack.stdout, capture_output=True, check=True
        ).stdout.decode()
        first = min(int(row[0]) for row in csv.reader(io.StringIO(encoded))) / 1e9
        tries.append(first - 0.001 - launched)
    return max(min(tries), 0.0)


def wait_for(path: Path, run: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.poll() is not None:
            sys.exit(f"chaoslab run exited {run.returncode} before the load started")
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.05)
    sys.exit(f"{path} did not appear in {timeout:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=50, help="requests/s, for each tool")
    ap.add_argument(
        "--seconds",
        type=int,
        default=60,
        help="length of each of the three phases (3,000 requests at 50/s: a p99 of 30)",
    )
    ap.add_argument("--delay", type=int, default=30, help="the fault's delay, ms")
    ap.add_argument("--jitter", type=int, default=10, help="the fault's jitter, ms")
    args = ap.parse_args()
    if not VEGETA.exists():
        sys.exit(f"{VEGETA} is missing: bash scripts/setup.sh builds it")
    start_up = vegeta_start_up()
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmpdir:
        tmp = Path(tmpdir)
        scenario, out = tmp / "peer.yaml", tmp / "out"
        scenario.write_text(SCENARIO.format(**vars(args)))
        run = subprocess.Popen(
            [sys.executable, "-m", "chaoslab", "run", str(scenario), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )  # fmt: skip
        try:
            config = json.loads(wait_for(out / "work" / "load.json", run, 120))
            [url] = [u for base, u in config["urls"].items() if base.startswith("http:")]
            t0 = float(wait_for(out / "work" / "load-t0", run, 120))
            # vegeta from t0 to the run's last phase's end (the faults' apply and revert add a
            # little: it runs 5 s past the phases' lengths and its extra requests fall outside),
            # its schedule half a period after chaoslab's (whose k-th request is due at t0 + k /
            # rate): the delayer keeps packets in order, as a link does, so a packet drawn a short
            # delay waits behind one drawn a long one just before it. Started at t0, vegeta's
            # sends trailed chaoslab's by its start-up's few ms, and each of its answers queued
            # behind chaoslab's: under 30 ± 10 ms its p50 was 0.4 to 2.1 ms above chaoslab's in
            # 9 runs of 10 (with no jitter nothing waits, and the two agreed within 0.4%).
            # vegeta's first send comes a period after its start-up (measured before the run).
            total = 3 * args.seconds + 5
            time.sleep(max(t0 - 0.5 / args.rate - start_up - time.time(), 0))
            attack = subprocess.run(
                [str(VEGETA), "attack", f"-rate={args.rate}/1s", f"-duration={total}s", "-keepalive=true",
                 "-timeout=10s"],
                input=f"GET {url}/healthz\n".encode(), capture_output=True, check=True, timeout=total + 60,
            )  # fmt: skip
            results = subprocess.run(
                [str(VEGETA), "encode", "--to", "csv"], input=attack.stdout, capture_output=True, check=True
            ).stdout.decode()
            output, _ = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.terminate()
                run.wait(timeout=60)
        if run.returncode not in (0, 1):
            sys.exit(f"chaoslab run exited {run.returncode}:\n{output[-3000:]}")
        report = json.loads((out / "report.json").read_text())
    phases = [(p["name"], p["start"], p["end"]) for p in report["phases"]]
    peer: dict[str, list[float]] = {name: [] for name, _, _ in phases}
    errors = 0  # in the phases (past the last one the run has stopped the target)
    for row in csv.reader(io.StringIO(results)):
        sent, status, latency = int(row[0]) / 1e9, int(row[1]), int(row[2]) / 1e6
        for name, start, end in phases:
            if start <= sent < end:
                if status == 200:
                    peer[name].append(latency)
                else:
                    errors += 1
    ours = {c["phase"]: c for c in report["client"] if not c["name"]}
    period = 1 / args.rate
    lag = sorted((int(row[0]) / 1e9 - t0) % period for row in csv.reader(io.StringIO(results)))
    print(f"rate {args.rate}/s each; delay {args.delay} ± {args.jitter} ms in phase delay")
    print(
        f"vegeta's sends trail chaoslab's due times by {quantile(lag, 0.5) * 1000:.1f} ms "
        f"of every {period * 1000:g}"
    )
    print(f"vegeta's errors in the phases: {errors}")
    head = (
        f"{'phase':10} {'chaoslab p50/p99 (due)':>24} {'(sent)':>16} {'late p50/p99':>14} "
        f"{'vegeta p50/p99':>16} {'ratio p50/p99 (due)':>20} {'(sent)':>14} {'diff p50 ms (sent)':>19}"
    )
    print(head)
    for name, _, _ in phases:
        c, v = ours.get(name), peer[name]
        if c is None or not v:
            continue
        v = sorted(v)
        v50, v99 = quantile(v, 0.5), quantile(v, 0.99)
        print(
            f"{name:10} {c['p50_ms']:11.2f} / {c['p99_ms']:8.2f} "
            f"{c['answer_p50_ms']:7.2f} / {c['answer_p99_ms']:6.2f} "
            f"{c['sent_p50_ms']:6.2f} / {c['sent_p99_ms']:5.2f} "
            f"{v50:7.2f} / {v99:6.2f} "
            f"{c['p50_ms'] / v50:9.2f} / {c['p99_ms'] / v99:8.2f} "
            f"{c['answer_p50_ms'] / v50:6.2f} / {c['answer_p99_ms'] / v99:5.2f} "
            f"{c['answer_p50_ms'] - v50:+19.2f}"
        )
    for name, _, _ in phases:
        c = ours.get(name)
        if c is not None and c.get("split_ms"):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in c["split_ms"].items())
            print(f"chaoslab's split in {name} (mean ms): {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
