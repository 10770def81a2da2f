"""The `chaoslab` command: run, validate, plan, report, compare, recover, build."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from chaoslab.errors import ChaoslabError, ExitCode
from chaoslab.quote import show
from chaoslab.scenario.model import RUNTIMES, Scenario

REPORTS = Path("reports")
DEFAULT_SERVE = "127.0.0.1:8716"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaoslab", description="Chaos and load testing that names the layer that absorbed a fault."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a scenario end to end")
    p_run.add_argument("scenario", type=Path)
    p_run.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="where the targets run, overriding the scenario's `runtime:` (auto: Docker if it answers)",
    )
    p_run.add_argument(
        "--out",
        type=Path,
        help="directory for report.json and the journal (default: reports/<scenario>-<time>)",
    )
    p_run.add_argument(
        "--serve",
        nargs="?",
        const=DEFAULT_SERVE,
        metavar="ADDR",
        help=f"serve a live page of the run while it goes (default {DEFAULT_SERVE}; PORT, :PORT, HOST:PORT; "
        "port 0 picks a free one); loopback only unless you give another address",
    )
    p_report = sub.add_parser(
        "report", help="write report.html, junit.xml and summary.md again from a past run's report.json"
    )
    p_report.add_argument("run", type=Path, help="the run's directory (its --out) or its report.json")
    p_report.add_argument("--out", type=Path, help="directory for the files (default: the run's directory)")
    p_report.add_argument(
        "--format",
        action="append",
        metavar="FORMAT",
        help="json, html, junit or markdown, repeatable (default: html, junit and markdown)",
    )
    p_cmp = sub.add_parser(
        "compare",
        help="compare a run with a base run of the same scenario, per phase and layer; exit 1 when worse",
    )
    p_cmp.add_argument("base", type=Path, help="the base run's directory (or report.json)")
    p_cmp.add_argument("run", type=Path, help="the run to judge against it")
    p_cmp.add_argument(
        "--threshold",
        action="append",
        metavar="T",
        help="the smallest change that counts: a duration (5ms), a fraction of the base value (10%%), or "
        "both (5ms,10%%: the larger); default 2ms,10%%, as the verdicts",
    )
    p_cmp.add_argument(
        "--out", type=Path, help="directory for compare.json and compare.html (default: RUN's)"
    )
    p_val = sub.add_parser(
        "validate", help="check a scenario file; exit 2 with every problem if it is invalid"
    )
    p_val.add_argument("scenario", type=Path)
    p_plan = sub.add_parser(
        "plan", help="print the mechanism and exact commands of every fault on this machine, applying nothing"
    )
    p_plan.add_argument("scenario", type=Path)
    p_plan.add_argument("--runtime", choices=RUNTIMES, help="plan for this runtime instead of the scenario's")
    p_rec = sub.add_parser("recover", help="undo what killed runs left behind (safe to run twice)")
    p_rec.add_argument("journal", type=Path, nargs="*", help="journal files (default: every run that died)")
    p_rec.add_argument("--force", action="store_true", help="also recover runs whose chaoslab is still alive")
    p_probes = sub.add_parser(
        "probes", help="list the layers, the mechanism measuring each here, and whether it can attach"
    )
    p_probes.add_argument(
        "--programs", action="store_true", help="also print the BPF programs each probe loads"
    )
    p_probes.add_argument("--json", action="store_true", help="print the table as JSON")
    p_probes.add_argument(
        "scenario",
        type=Path,
        nargs="?",
        help="also say, per target of this scenario, which layers apply and why",
    )
    p_build = sub.add_parser("build", help="build the Go services, BPF programs and native helpers")
    p_build.add_argument(
        "--images", action="store_true", help="also build the Docker runtime's images (needs a Docker engine)"
    )
    sub.add_parser(
        "stack", help="build the images and write the files docker/compose.yaml needs (certificates, config)"
    )
    p_worker = sub.add_parser(
        "worker",
        help="a Locust worker with chaoslab's users for runs on another host (the scenario's load.remote)",
    )
    p_worker.add_argument(
        "--master",
        required=True,
        metavar="HOST:PORT",
        help="where the run's Locust master listens (load.remote.listen)",
    )
    p_worker.add_argument(
        "--once", action="store_true", help="serve one run, then exit (default: serve runs until interrupted)"
    )
    p_worker.add_argument(
        "--wait", type=float, default=600.0, metavar="SECONDS", help="how long to wait for a run (600)"
    )
    args = parser.parse_args(argv)

    # Markup off: what is printed carries user text (paths, names, messages) that must never be
    # read as rich markup; colour is given with Text styles instead.
    # Not a terminal (a CI log, a pipe): tables fit 132 columns, sentences stay on one line each
    # so that a log viewer wraps them and grep finds them whole.
    tty, tty_err = Console().is_terminal, Console(stderr=True).is_terminal
    out = Console(width=None if tty else 132, soft_wrap=not tty, markup=False)
    err = Console(stderr=True, width=None if tty_err else 132, soft_wrap=not tty_err, markup=False)
    crash = Crash()
    try:
        return COMMANDS[args.command](args, out, err, crash)
    except ChaoslabError as exc:
        # not wrapped: a message names paths and commands that are copied from the terminal
        err.print(Text.assemble(("error:", "red"), " ", exc.render()), highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        where = crash.save(exc)
        err.print(
            Text.assemble(("internal error:", "red"), f" {type(exc).__name__}: {show(str(exc))[1:-1]}"),
            highlight=False,
        )
        err.print(
            f"  hint: this is a bug in chaoslab, not a problem with your input: please report it with the "
            f"traceback in {where}",
            highlight=False,
        )
        return ExitCode.INTERNAL


@dataclass
class Crash:
    """Where the traceback of an unexpected exception goes: the run's directory once there is one."""

    dir: Path | None = None

    def save(self, exc: BaseException) -> Path:
        text = "".join(traceback.format_exception(exc))
        if self.dir is not None:
            try:
                path = self.dir / "traceback.txt"
                path.write_text(text)
                return path
            except OSError:
                pass
        with tempfile.NamedTemporaryFile(
            "w", prefix="chaoslab-traceback-", suffix=".txt", delete=False
        ) as fh:
            fh.write(text)
        return Path(fh.name)


def _build(args: argparse.Namespace, out: Console) -> int:
    from chaoslab.build import build_all

    for path in build_all():
        out.print(f"built {path}")
    if args.images:
        from chaoslab.targets import containers, images

        with containers.connected() as engine:
            for tag in images.ensure_all(engine):
                out.print(f"image {tag}")
    return ExitCode.OK


def _stack(out: Console) -> int:
    from chaoslab.targets.stack import write

    for line in write():
        out.print(line, highlight=False)
    return ExitCode.OK


Handler = Callable[[argparse.Namespace, Console, Console, "Crash"], int]
COMMANDS: dict[str, Handler] = {
    "validate": lambda a, out, err, crash: _validate(a.scenario, out),
    "run": lambda a, out, err, crash: _run(a.scenario, a.runtime, a.out, a.serve, out, err, crash),
    "report": lambda a, out, err, crash: _report(a.run, a.out, a.format, out),
    "compare": lambda a, out, err, crash: _compare(a.base, a.run, a.threshold, a.out, out),
    "plan": lambda a, out, err, crash: _plan(a.scenario, a.runtime, out),
    "probes": lambda a, out, err, crash: _probes(a.programs, a.json, out, a.scenario),
    "recover": lambda a, out, err, crash: _recover(a.journal, a.force, out),
    "build": lambda a, out, err, crash: _build(a, out),
    "stack": lambda a, out, err, crash: _stack(out),
    "worker": lambda a, out, err, crash: _worker(a.master, a.once, a.wait, out),
}


def _worker(master: str, once: bool, wait: float, out: Console) -> int:
    from chaoslab.load.worker import serve

    return serve(master, once, wait, lambda line: out.print(line, highlight=False))


def _validate(path: Path, out: Console) -> int:
    from chaoslab.scenario import load_scenario

    s = load_scenario(path)
    faults = sum(len(p.faults) for p in s.phases)
    out.print(
        f"{path}: valid: {len(s.targets)} targets, {len(s.phases)} phases ({faults} faults), "
        f"{s.duration:g}s, {len(s.expect)} expectations"
    )
    for sweep in s.sweeps:
        out.print(f"  {sweep.describe()}", highlight=False)
    return ExitCode.OK


def _load(path: Path, runtime: str | None) -> Scenario:
    """The scenario (exit 2 here, before anything is touched), with `--runtime` applied."""
    from chaoslab.scenario import load_scenario

    scenario = load_scenario(path)
    return dataclasses.replace(scenario, runtime=runtime) if runtime else scenario


def _plan(path: Path, runtime: str | None, out: Console) -> int:
    import tempfile

    from chaoslab.faults import FAULT_KINDS
    from chaoslab.faults.net.tc import netem_available
    from chaoslab.targets.runtimes import plan_targets

    scenario = _load(path, runtime)
    with tempfile.TemporaryDirectory(prefix="chaoslab-plan-") as tmp:
        where, targets = plan_targets(scenario, Path(tmp))
        far = next((t.remote for t in targets.values() if t.remote), "")
        out.print(
            f"plan for {path} on this machine: runtime {where}{f' on the remote {far}' if far else ''}, "
            f"sch_netem {'available' if netem_available() else 'missing (fallbacks in use)'}; "
            "RUNID and <...> are filled in at run time",
            highlight=False,
        )
        for sweep in scenario.sweeps:
            out.print(sweep.describe(), highlight=False)
        for phase in scenario.phases:
            out.print(
                f"phase {phase.name} ({phase.duration:g}s): {len(phase.faults) or 'no'} faults",
                highlight=False,
            )
            for spec in phase.faults:
                cls = FAULT_KINDS[spec.kind]
                far = targets[spec.target].remote
                if far and not cls.through_engine:
                    said = (
                        "applied inside chaoslab's helper on the engine's host, planned there at run time"
                        if cls.through_helper
                        else "refused at run time"
                    )
                    out.print(
                        f"  {spec.kind} on {spec.target} ({spec.path}): {said}, as {spec.target} runs on the "
                        f"remote {far} (README: Targets on another Docker engine)",
                        highlight=False,
                        markup=False,
                    )
                    continue
                fault = cls(spec, targets[spec.target])
                out.print(f"  {fault.describe()} ({spec.path})", highlight=False)
                for line in fault.plan():
                    out.print(f"    {line}", highlight=False, markup=False)
    return ExitCode.OK


def _run(
    path: Path,
    runtime: str | None,
    out_dir: Path | None,
    serve: str | None,
    out: Console,
    err: Console,
    crash: Crash,
) -> int:
    from chaoslab.diag import count_requests_from_env
    from chaoslab.orchestrator import execute, new_run
    from chaoslab.report.render import print_report
    from chaoslab.report.writers import REPORT_WRITERS, write
    from chaoslab.signals import exit_signals

    scenario = _load(path, runtime)
    out_dir = out_dir or REPORTS / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    def say(msg: str) -> None:
        err.print(msg, highlight=False, markup=False)

    page = None
    if serve is not None:
        from chaoslab.report.serve import LivePage, parse_address

        page = LivePage(parse_address(serve), scenario.name)  # bound now: a busy port starts nothing
    ctx = new_run(scenario, out_dir, say, err)
    crash.dir = out_dir
    clean = False
    counted = count_requests_from_env()
    try:
        if page is not None:
            page.follow(ctx)
            say(f"live page: {page.url}" + ("" if page.loopback else " (reachable from other machines)"))
        with exit_signals(say) as signals:
            say(
                f"chaoslab run {ctx.run_id[:8]}: {scenario.name}, {scenario.duration:g}s, output in {out_dir}"
            )
            for sweep in scenario.sweeps:
                say(f"  {sweep.describe()}")
            report = execute(ctx, signals)
        clean = True
    finally:
        ctx.journal.close(clean)
        if page is not None and not clean:
            page.close()
    files = write(report, REPORT_WRITERS.values(), out_dir)
    counted()
    print_report(report, out, None)
    out.print(f"report: {', '.join(str(f) for f in files)}", highlight=False)
    if page is not None:
        page.finish(report)
        say(f"live page: {page.stats()}; the final report is served for {page.linger:g}s more")
        page.close(linger=True)
    if report.abort is not None:
        return ExitCode.SWITCH if report.abort.by == "watchdog" else ExitCode.ABORTED
    return ExitCode.OK if report.passed else ExitCode.EXPECTATIONS_FAILED


def _report(run: Path, out_dir: Path | None, formats: list[str] | None, out: Console) -> int:
    from chaoslab.report.reader import read_report
    from chaoslab.report.writers import REPORT_WRITERS, choose, write

    writers = choose(REPORT_WRITERS, formats or ["html", "junit", "markdown"])
    report = read_report(run)
    target = out_dir or (run if run.is_dir() else run.parent)
    for path in write(report, writers, target):
        out.print(f"wrote {path}", highlight=False)
    return ExitCode.OK


def _compare(base: Path, run: Path, thresholds: list[str] | None, out_dir: Path | None, out: Console) -> int:
    from chaoslab.analysis.compare import compare, parse_threshold
    from chaoslab.report.reader import read_report
    from chaoslab.report.render import print_comparison
    from chaoslab.report.writers import COMPARISON_WRITERS, write

    threshold = parse_threshold(thresholds or [])
    comparison = compare(read_report(base), read_report(run), threshold, str(base), str(run))
    target = out_dir or (run if run.is_dir() else run.parent)
    files = write(comparison, COMPARISON_WRITERS.values(), target)
    print_comparison(comparison, out)
    out.print(f"comparison: {', '.join(str(f) for f in files)}", highlight=False)
    return ExitCode.EXPECTATIONS_FAILED if comparison.worse else ExitCode.OK


def _probes(programs: bool, as_json: bool, out: Console, scenario_path: Path | None = None) -> int:
    import json
    import os
    import tempfile

    from rich.table import Table

    from chaoslab.paths import BPF_SRC
    from chaoslab.probes.catalog import catalog, for_targets

    per_target = []
    if scenario_path is not None:
        from chaoslab.targets.runtimes import plan_targets

        scenario = _load(scenario_path, None)
        with tempfile.TemporaryDirectory(prefix="chaoslab-probes-") as tmp:
            _, targets = plan_targets(scenario, Path(tmp))
            per_target = for_targets(targets)
    rows = catalog()
    if as_json:
        data = {
            "kernel": os.uname().release,
            "layers": [
                {"layer": str(r.layer), "applies_to": r.applies_to, "mechanism": r.mechanism}
                | {"attaches": r.ready, "detail": r.detail, "ways": dict(r.ways)}
                for r in rows
            ],
            "targets": [
                {"target": r.target, "layer": str(r.layer), "status": r.status, "why": r.why}
                for r in per_target
            ],
        }
        print(json.dumps(data, indent=1))
        return ExitCode.OK if all(r.ready for r in rows) else ExitCode.ENVIRONMENT
    table = Table(title="probes on this machine", title_justify="left")
    for col in ("layer", "applies to", "mechanism", "can attach"):
        table.add_column(col, overflow="fold")
    for r in rows:
        mark = ("yes", "green") if r.ready else ("no", "red")
        table.add_row(str(r.layer), r.applies_to, r.mechanism, Text.assemble(mark, f": {r.detail}"))
    out.print(table)
    if per_target:
        t = Table(title=f"layers per target of {scenario_path}", title_justify="left")
        for col in ("target", "layer", "applies", "why"):
            t.add_column(col, overflow="fold")
        marks = {"yes": Text("yes", "green"), "no": Text("no", "red"), "-": Text("-")}
        for tl in per_target:
            t.add_row(tl.target, str(tl.layer), marks[tl.status], tl.why)
        out.print(t)
    if programs:
        shown: set[str] = set()
        for r in rows:
            if not r.object or r.object in shown:
                continue
            shown.add(r.object)
            src = BPF_SRC / f"{r.object}.bpf.c"
            out.print(f"\n# {src}: {', '.join(r.programs)}", highlight=False, markup=False)
            out.print(src.read_text(), highlight=False, markup=False)
    return ExitCode.OK if all(r.ready for r in rows) else ExitCode.ENVIRONMENT


def _recover(journals: list[Path], force: bool, out: Console) -> int:
    from chaoslab.recover import recover_all

    done = recover_all(journals or None, force)
    for line in done:
        out.print(line)
    out.print("nothing to recover" if not done else f"recover: {len(done)} actions")
    return ExitCode.OK
