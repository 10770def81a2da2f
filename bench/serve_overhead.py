"""What `run --serve` costs a run: the same scenario without the live page, and with it and
three browsers polling it, side by side.

Each round runs the scenario twice through the CLI, alternating the order. With the live
page, three pollers in a separate process do what the page's script does: load the page once,
then fetch its fragment every second. Prints, per mode (medians over the rounds): the client's
p50 and p99 in every phase (from report.json), the busiest Locust process's CPU, the chaoslab
process's own CPU (where the snapshots are rendered and the server threads run) and the
render cost of a snapshot.

    sudo .venv/bin/python bench/serve_overhead.py [--scenario tests/scenarios/short_entropy.yaml] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux
POLLERS = 3


def poll(url: str, stop: threading.Event, counts: list[int]) -> None:
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url + "fragment", timeout=5) as resp:
                resp.read()
            counts.append(1)
        except OSError:
            return  # the run is over


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def one_run(scenario: Path, out: Path, serve: bool) -> dict[str, object]:
    argv = [sys.executable, "-m", "chaoslab", "run", str(scenario), "--out", str(out)]
    if serve:
        argv += ["--serve", "127.0.0.1:0"]
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    stop, counts, threads, cpu, lines = threading.Event(), [], [], 0.0, []

    def sample() -> None:
        nonlocal cpu
        while p.poll() is None:
            used = cpu_seconds(p.pid)
            cpu = used if used is not None else cpu
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in p.stderr:
        lines.append(line)
        m = re.search(r"live page: (http://\S+/)", line)
        if m and not threads:
            threads = [
                threading.Thread(target=poll, args=(m.group(1), stop, counts), daemon=True)
                for _ in range(POLLERS)
            ]
            for t in threads:
                t.start()
    p.wait()
    stop.set()
    sampler.join()
    if p.returncode not in (0, 1):
        sys.exit(f"the run failed ({p.returncode}):\n{''.join(lines[-30:])}")
    report = json.loads((out / "report.json").read_text())
    render = re.search(r"median ([\d.]+) ms, max ([\d.]+) ms, (\d+) kB", "".join(lines))
    return {
        "client": {c["phase"]: (c["p50_ms"], c["p99_ms"]) for c in report["client"]},
        "generator_cpu": max(report["generator"]["cpu_by_phase"].values()),
        "chaoslab_cpu": cpu,
        "polls": len(counts),
        "render_ms": float(render.group(1)) if render else None,
        "verdicts": [(v["phase"], v["status"], v["layer"]) for v in report["verdicts"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=REPO / "tests/scenarios/short_entropy.yaml")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    runs: dict[bool, list[dict[str, object]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="chaoslab-bench-") as tmp:
        for i in range(args.rounds):
            for serve in (False, True) if i % 2 == 0 else (True, False):
                r = one_run(args.scenario, Path(tmp) / f"{i}-{int(serve)}", serve)
                runs[serve].append(r)
                print(f"round {i + 1} {'with' if serve else 'without'} --serve: {r}", file=sys.stderr)

    def med(serve: bool, get: object) -> float:
        values = [get(r) for r in runs[serve]]  # type: ignore[operator]
        return statistics.median(v for v in values if v is not None)

    phases = list(runs[False][0]["client"])  # type: ignore[call-overload]
    rows = []
    for phase in phases:
        for i, name in ((0, "p50"), (1, "p99")):
            rows.append(
                (
                    f"client {name} ms, {phase}",
                    *(med(s, lambda r, p=phase, i=i: r["client"][p][i]) for s in (False, True)),
                )
            )
    rows.append(
        ("busiest Locust process, cores", *(med(s, lambda r: r["generator_cpu"]) for s in (False, True)))
    )
    rows.append(("chaoslab process CPU, s", *(med(s, lambda r: r["chaoslab_cpu"]) for s in (False, True))))
    mode = f"with --serve: {POLLERS} pollers, 1 fetch/s each"
    print(f"{args.scenario.name}, {args.rounds} rounds, medians; {mode}")
    print(f"{'':34} {'without':>10} {'with --serve':>13} {'ratio':>7}")
    for name, a, b in rows:
        print(f"{name:34} {a:10.3f} {b:13.3f} {b / a if a else float('nan'):7.2f}")
    render = med(True, lambda r: r["render_ms"])
    print(f"snapshot render in the run loop: median {render:.1f} ms (once a second)")
    print(f"fetches served: {med(True, lambda r: r['polls']):.0f} per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
