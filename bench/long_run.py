"""Long runs: the same scenario at two lengths, side by side, and what grows with the length.

Runs `chaoslab run` on one scenario (the go-api target at a fixed arrival rate, open model,
two phases of half the length each) at each length, one after the other, and prints for each:
  - the peak memory (VmHWM, sampled every 0.25 s) of every chaoslab process, by role: the
    run itself, its Locust master and workers, its helpers; and the run's own peak from
    wait4 (exact, its children included);
  - the requests it recorded and the bytes per request of the run's peak;
  - the time from the last phase's end to the process's exit (load stopped, probes
    detached, the analysis, the report written);
  - the size of the records files the run keeps;
  - the most request records alive in the run's process at once (counted every 0.5 s);
then the ratios long/short. Flat memory means a ratio near 1 at a rate the generator keeps.

    sudo .venv/bin/python bench/long_run.py [--lengths 60,600] [--rate 1500] [--probes]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCENARIO = """\
name: long-run
targets:
  api: {{service: go-api}}
load: {{protocol: http, target: api, path: /healthz, rate: {rate}/s, concurrency: 64}}
{probes}phases:
  - {{name: first, duration: {half}s}}
  - {{name: second, duration: {half}s}}
"""


def role(cmdline: str) -> str:
    argv = cmdline.split()
    if "locust" in cmdline:
        return "locust master" if "--master" in argv else "locust worker"
    if "-m" in argv and argv.index("-m") + 1 < len(argv):
        module = argv[argv.index("-m") + 1]
        return "chaoslab run" if module == "chaoslab" and "run" in argv else module
    name = os.path.basename(argv[0])
    return f"target {name}" if name == "go-api" else name


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):  # a child of any of its threads
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


class Peaks:
    """Each process's VmHWM (its peak resident size), sampled until the run ends."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.by_pid: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for p in descendants(self.pid):
                try:
                    status = Path(f"/proc/{p}/status").read_text()
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                except OSError:
                    continue
                m = re.search(r"VmHWM:\s+(\d+) kB", status)
                if m and cmd:
                    self.by_pid[p] = (role(cmd), int(m.group(1)) * 1024)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        roles: dict[str, int] = {}
        for name, peak in self.by_pid.values():
            roles[name] = max(roles.get(name, 0), peak)
        return roles


@dataclass
class Row:
    length: int
    requests: int
    roles: dict[str, int]  # role -> peak resident bytes
    wait4_peak: int  # the run or its biggest child, bytes
    after_load_s: float
    records_bytes: int
    saturated: bool
    held: int  # the most requests alive in the run's process at once (chaoslab/diag.py)


def one_run(length: int, rate: int, probes: bool, tmp: Path) -> Row:
    path = tmp / f"long-{length}.yaml"
    half = length // 2
    path.write_text(SCENARIO.format(rate=rate, half=half, probes="" if probes else "probes: []\n"))
    out = tmp / f"out-{length}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab", "run", str(path), "--out", str(out)],
        env={**os.environ, "CHAOSLAB_COUNT_REQUESTS": str(tmp / f"held-{length}.json")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        text=True,
    )
    peaks = Peaks(proc.pid)
    assert proc.stdout is not None
    last_phase_done = 0.0
    tail: list[str] = []
    for line in proc.stdout:
        tail = [*tail[-40:], line]
        if line.startswith("phase second done"):
            last_phase_done = time.monotonic()
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.monotonic()
    roles = peaks.stop()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1) or not (out / "report.json").exists():
        sys.exit(f"chaoslab run exited {code}:\n{''.join(tail)}")
    report = json.loads((out / "report.json").read_text())
    requests = sum(c["requests"] for c in report["client"])
    records = sum(f.stat().st_size for f in (out / "work").glob("requests-*"))
    return Row(
        length,
        requests,
        roles,
        usage.ru_maxrss * 1024,  # KiB on Linux
        ended - last_phase_done if last_phase_done else float("nan"),
        records,
        bool(report["generator"]["saturated"]),
        json.loads((tmp / f"held-{length}.json").read_text())["max"],
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="60,600", help="two run lengths in seconds, short first")
    ap.add_argument("--rate", type=int, default=1500, help="arrivals per second")
    ap.add_argument("--probes", action="store_true", help="the default probes on (default: none)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("long_run: run as root")
    short, long = (int(x) for x in args.lengths.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmpdir:
        for length in (short, long):
            row = one_run(length, args.rate, args.probes, Path(tmpdir))
            rows.append(row)
            mib = ", ".join(f"{name} {peak / 2**20:.0f} MiB" for name, peak in sorted(row.roles.items()))
            print(
                f"{length:5d} s: {row.requests} requests; peak {mib}; after the load "
                f"{row.after_load_s:.1f} s; records {row.records_bytes / 2**20:.1f} MiB; "
                f"at most {row.held} requests alive" + ("; GENERATOR SATURATED" if row.saturated else ""),
                flush=True,
            )
    a, b = rows
    print(f"\n| | {short} s | {long} s | ratio |\n|---|---|---|---|")
    print(f"| requests | {a.requests} | {b.requests} | {b.requests / a.requests:.2f} |")
    for name in sorted(set(a.roles) & set(b.roles)):
        x, y = a.roles[name] / 2**20, b.roles[name] / 2**20
        print(f"| peak {name}, MiB | {x:.1f} | {y:.1f} | {y / x:.2f} |")
    x, y = a.wait4_peak / 2**20, b.wait4_peak / 2**20
    print(f"| peak of the run and its children (wait4), MiB | {x:.1f} | {y:.1f} | {y / x:.2f} |")
    run_a, run_b = a.roles.get("chaoslab run", 0), b.roles.get("chaoslab run", 0)
    grow = (run_b - run_a) / max(1, b.requests - a.requests)
    print(f"| the run's growth, bytes a request | | {grow:.0f} | |")
    print(f"| requests alive at most | {a.held} | {b.held} | {b.held / max(1, a.held):.2f} |")
    x, y = a.after_load_s, b.after_load_s
    print(f"| after the load, s | {x:.2f} | {y:.2f} | {y / x:.2f} |")
    x, y = a.records_bytes / 2**20, b.records_bytes / 2**20
    print(f"| records, MiB | {x:.1f} | {y:.1f} | {y / max(x, 1e-9):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
