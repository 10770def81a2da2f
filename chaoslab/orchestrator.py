"""One run: targets up, probes on, load started, phases with their faults, analysis, report.

Everything that changes the machine is entered into one ExitStack, so it is undone in
reverse order on every exit path: success, error, Ctrl-C, SIGTERM, a crashed target. A
watchdog process (the dead man's switch) undoes the faults when this process cannot: killed,
stopped or hung. A stop condition that trips, or a switch that undid the faults, ends the run
early, with every fault reverted and the report of the phases so far.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from chaoslab import diag, goruntime
from chaoslab.analysis import attribution, errors, settle, sweep, xds
from chaoslab.analysis import client as client_view
from chaoslab.analysis.settle import Settler
from chaoslab.analysis.tally import RunTally
from chaoslab.context import RunContext
from chaoslab.errors import PreflightError
from chaoslab.expectations import check_all
from chaoslab.faults import FAULT_KINDS, Fault, Verification
from chaoslab.faults.far import make_fault
from chaoslab.hist import Histogram
from chaoslab.journal import Journal, pending
from chaoslab.layers import Layer
from chaoslab.live import LiveView
from chaoslab.load.grpc_schema import GrpcSchemas
from chaoslab.load.runner import LoadRunner
from chaoslab.probes import PROBES, ProbeSet
from chaoslab.probes.choose import choose, needs
from chaoslab.probes.cost import trap_cost
from chaoslab.probes.far import FarProbes
from chaoslab.probes.libbpf import map_sizes
from chaoslab.probes.set import Lost, Snapshot
from chaoslab.report.model import (
    AbortRecord,
    ChangeRecord,
    FaultRecord,
    ObserverCost,
    PhaseRecord,
    Report,
    Unmeasured,
)
from chaoslab.runloop import VERIFY_LEASE, ActiveFaults, RunWatch
from chaoslab.safety import locks
from chaoslab.safety.stop import STOP_BOUND, Abort, StopConditions, Trip
from chaoslab.safety.switch import Switch
from chaoslab.safety.watchdog import UNDO_ALLOWANCE
from chaoslab.scenario.model import PhaseSpec, ProbeBudget, Scenario, TargetSpec
from chaoslab.signals import SignalState
from chaoslab.targets.builtins import ACCESS_LOG_FLUSH, GENERATED, access_log_name, xds_events_name
from chaoslab.targets.mesh import PUT_TIMEOUT, Meshes
from chaoslab.targets.runtimes import runtime_for

VERIFY_LEAD = 0.5  # seconds before a fault phase's end at which its faults are verified


@dataclass
class PhaseRun:
    spec: PhaseSpec
    start: float  # when its measurement began: its faults in place, the previous phase's reverted
    end: float = 0.0
    scheduled: float = 0.0  # its start in the scenario's schedule
    faults: list[tuple[Fault, Verification]] = field(default_factory=list)
    changes: list[ChangeRecord] = field(default_factory=list)
    snap: Snapshot = field(default_factory=dict)
    aborted: bool = False
    gomaxprocs: dict[str, int] = field(default_factory=dict)  # of its Go targets, near its end


def new_run(
    scenario: Scenario, out_dir: Path, say: Callable[[str], None], console: Console | None = None
) -> RunContext:
    run_id = uuid.uuid4().hex
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "journal.jsonl"
    if path.exists():
        # A journal is one run's: an earlier run's entries that were never undone (it died, or
        # it runs still) would be read as this run's, by its watchdog among others.
        left = pending(path)
        if left:
            raise PreflightError(
                f"{out_dir} holds the journal of a run that left {len(left)} action(s) not undone "
                f"({', '.join(sorted({e.kind for e in left}))})",
                f"run `chaoslab recover {path}` first (after a reboot its faults are gone already), "
                "or give another --out",
            )
        path.unlink()  # a finished run's: this run's journal starts empty
    journal = Journal(path, run_id, out_dir)
    ctx = RunContext(scenario, run_id, out_dir, journal, say, console)
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    # what targets log and the report reads back starts empty: a file appended to by an
    # earlier run in the same directory would mix its versions and requests into this one's
    for name in scenario.targets:
        for log in (xds_events_name(name), access_log_name(name)):
            (ctx.work_dir / log).unlink(missing_ok=True)
    return ctx


def execute(ctx: RunContext, signals: SignalState) -> Report:
    scenario = ctx.scenario
    runtime = runtime_for(ctx)
    stack = ExitStack()
    try:
        # The watchdog first: from here on, a chaoslab that dies leaves nothing behind.
        switch = Switch(ctx)
        stack.callback(switch.close)
        switch.start()
        runtime.preflight()
        map_sizes()  # a bad CHAOSLAB_BPF_MAP_ENTRIES stops the run here, not each probe later
        # .proto files that do not compile, or a request that does not fit them, stop the
        # run before any target starts; a reflection request is checked once its target is up
        schemas = GrpcSchemas(ctx)
        schemas.compile()
        targets = runtime.start(stack)
        for helper in {id(t.helper): t.helper for t in targets.values() if t.helper}.values():
            switch.also(helper.beat)
        faults = {
            id(f): make_fault(FAULT_KINDS[f.kind](f, targets[f.target]))
            for p in scenario.phases
            for f in p.faults
        }
        # One run per target: taken before any probe or fault (even a fault's preflight, which
        # would find the other run's tracer or breakpoint) touches one; all or nothing.
        wanted = {key: what for fault in faults.values() for key, what in fault.locks().items()}
        stack.callback(locks.release, ctx.run_id)
        locks.acquire(wanted, ctx.journal.info)
        for fault in faults.values():
            fault.preflight()
        choice = choose(scenario, targets, faults.values())
        probes = ProbeSet(PROBES, targets, choice.attach, scenario.probe_budget)
        stack.callback(probes.close)
        ctx.events.subscribe("target_restarted", probes.retarget)
        for line in probes.attach(scenario.required_probes):
            ctx.say(line)
        helpers = {id(t.helper): t.helper for t in targets.values() if t.helper}
        for helper in helpers.values():  # a remote engine's targets: their probes attach on its host
            far = FarProbes(helper, [t for t in targets.values() if t.helper is helper])
            for line in far.attach(
                needs(scenario, faults.values(), targets), scenario.probes, scenario.required_probes
            ):
                ctx.say(line)
            probes.far.append(far)
        if choice.left_out:
            left = ", ".join(f"{layer} at {t}" for layer, t in sorted(choice.left_out))
            ctx.say(
                f"probes not attached, as nothing in the scenario needs them and their uprobes trap the "
                f"target: {left} (list a layer in probes: to have it)"
            )
        load = LoadRunner(ctx, targets, schemas=schemas)
        load.preflight()
        stack.callback(load.stop)
        stops = StopConditions(ctx, targets)
        stack.callback(stops.close)
        live = LiveView(ctx, load, ctx.console)
        stack.callback(live.close)
        probe_lines = [f"{p.layer}: {p.describe()}" for p in probes.probes] + [
            line for far in probes.far for line in far.lines
        ]
        settler = Settler(load.names)
        ctx.events.subscribe("requests", settler.add)
        t0 = settler.tally.t0 = load.start()
        live.begin(t0, probe_lines)
        stops.start()
        to = ", ".join(sorted({r.target for r in scenario.load.requests}))
        ctx.say(f"load: {scenario.load.describe()}, to {to}")
        if stops.active:
            ctx.say(f"stop conditions: {'; '.join(scenario.abort.describe())}")
        watch = RunWatch(targets, probes, stops, switch, lambda: (load.done, load.done_s), ctx.say, settler)
        phases, abort = _run_phases(ctx, t0, faults, watch, live, signals, load, Meshes(targets))
        load.stop()
        read = time.time()
        settler.finish(probes.samples, probes.stall_state()[1], read)
        gone = {(p.layer, t) for p in probes.lost for t in p.index.values()}
        stalls = attribution.Stalls(
            [(layer, s) for layer, s in settler.stalls() if (layer, s.target) not in gone], probes.samples
        )
        observer = Observer(
            probes.costs(load.done, load.done_s),
            scenario.probe_budget,
            {(p.layer, t): lost for p, lost in probes.lost.items() for t in p.index.values()},
            choice.left_out,
        )
        unmeasured = {
            **probes.unavailable,
            **{k: v for far in probes.far for k, v in far.unmeasured.items()},
            **{k: v for f in faults.values() for k, v in f.unmeasurable().items()},
        }
        report = _analyse(
            ctx, runtime.name, phases, load, stalls, probe_lines, unmeasured, abort, observer, settler
        )
        report.engine = runtime.where
        return report
    finally:
        signals.shield()
        stack.close()


def _run_phases(
    ctx: RunContext,
    t0: float,
    faults: dict[int, Fault],
    watch: RunWatch,
    live: LiveView,
    signals: SignalState,
    load: LoadRunner,
    meshes: Meshes,
) -> tuple[list[PhaseRun], AbortRecord | None]:
    runs: list[PhaseRun] = []
    offset = 0.0
    settled = 0.0  # when the previous phase's faults were all reverted
    probes = watch.probes
    margin = ctx.scenario.switch.margin
    for spec in ctx.scenario.phases:
        start = t0 + offset
        end = start + spec.duration
        active = ActiveFaults(ctx, signals, watch.switch)
        run: PhaseRun | None = None
        before: Snapshot = {}
        tripped: tuple[Trip, dict[str, float]] | None = None
        with ExitStack() as phase_stack:
            # the config a change moved is given back after the faults are reverted (a paused
            # or throttled control plane takes it again then), with the switch told it may take
            # a PUT per Envoy
            if spec.changes:
                phase_stack.callback(_restore_meshes, ctx, meshes, watch.switch)
            phase_stack.callback(active.revert_all)
            try:
                watch.wait_until(start)
                for fault in [faults[id(f)] for f in spec.faults]:
                    active.apply(fault, deadline=end + margin)
                # A phase is measured from the moment its faults are in place (or the previous
                # phase's are reverted) to the moment its own revert begins: requests due while
                # a fault is being applied or reverted belong to no phase. Applying takes a few
                # tc or iptables commands (tens of ms here, seconds on a slow or emulated machine).
                run = PhaseRun(
                    spec, max(start, settled, time.time() if spec.faults else 0.0), scheduled=start
                )
                if watch.settler is not None:
                    watch.settler.open_phase(spec.name, run.start, end)
                before = probes.snapshot()
                live.phase(spec.name, start, spec.duration, [f.describe() for f in active.faults])
                for change in sorted(spec.changes, key=lambda c: c.at):
                    watch.wait_until(start + change.at, live)
                    with watch.switch.busy(PUT_TIMEOUT * meshes.calls(change.target) + 1):
                        made = meshes.apply(change, start)
                    run.changes.append(made)
                    ctx.say(
                        f"change at {made.target}: {made.what}: "
                        + (made.error or ", ".join(f"{n} version {v}" for n, v in made.versions.items()))
                    )
                # Verify while the fault is still on, shortly before the phase ends, so that the
                # revert lands on the phase boundary rather than a verification's length into the
                # next phase (a network check takes several delayed handshakes).
                lead = min(VERIFY_LEAD, spec.duration / 4) if spec.faults else 0.0
                watch.wait_until(end - lead, live)
                active.extend(VERIFY_LEASE)
                with watch.switch.busy(VERIFY_LEASE):
                    run.faults = [(f, f.verify()) for f in active.faults]
                # what the Go runtime made of the phase's faults, while they are still on
                run.gomaxprocs = goruntime.read_all(watch.targets.values())
                watch.wait_until(end, live)
                run.end = end
                if watch.settler is not None:
                    watch.settler.close_phase(spec.name, run.start, run.end)
            except Abort as abort:
                # Every active fault at once, timed from the trip; the load stops next.
                tripped = abort.trip, active.revert_all(at_once=True, since=abort.trip.mono)
            # The probes' window is the requests': events that end while the faults are
            # reverted belong to no phase (a revert takes seconds on an emulated machine, and
            # the requests served meanwhile are not the phase's).
            after = probes.snapshot()
        if tripped is not None:
            trip, reverted = tripped
            if run is None:  # tripped before its faults were all in place
                run = PhaseRun(spec, max(start, settled), scheduled=start)
            run.end, run.aborted = max(run.start, trip.at), True
            if watch.settler is not None:
                watch.settler.close_phase(spec.name, run.start, run.end)
            run.snap = {k: h - before.get(k, Histogram()) for k, h in after.items()} if before else {}
            if not run.faults:
                unchecked = Verification(False, "the phase was aborted before its faults were checked", "")
                run.faults = [(f, unchecked) for f in active.faults]
            runs.append(run)
            record = _abort_record(ctx, trip, spec.name, reverted)
            live.phase_done(_phase_record(run))
            live.aborted(record)
            return runs, record
        settled = time.time()
        assert run is not None
        offset += spec.duration
        run.snap = {k: h - before.get(k, Histogram()) for k, h in after.items()}
        runs.append(run)
        if len(runs) == 1:
            watch.stops.set_baseline(run.snap, load.count_due(run.start, run.end))
        live.phase_done(_phase_record(run))
        late = run.start - start
        ctx.say(
            f"phase {spec.name} done"
            + (
                f"; measured from {late:.2f}s in (faults applied or reverted until then)"
                if late > 0.05
                else ""
            )
            + "".join(f"; {f.kind} on {f.spec.target}: {v.detail}" for f, v in run.faults)
        )
    return runs, None


def _on_control_plane(f: Fault, targets: Mapping[str, TargetSpec]) -> bool:
    """The fault acts on an xDS control plane or its link: it slows config, not requests."""
    peer = str(getattr(f.spec, "peer", "") or "")
    return any(name in targets and targets[name].mesh is not None for name in (f.spec.target, peer))


def _restore_meshes(ctx: RunContext, meshes: Meshes, switch: Switch) -> None:
    calls = sum(meshes.calls(name) for name in meshes.now)
    with switch.busy(PUT_TIMEOUT * calls + 1):
        problems = meshes.restore()
    for problem in problems:
        ctx.say(f"warning: the config a phase changed was not restored: {problem}")


def _abort_record(ctx: RunContext, trip: Trip, phase: str, reverted: dict[str, float]) -> AbortRecord:
    """The trip with its measured revert time: chaoslab's own (trip to the last revert) for a stop
    condition; the watchdog's (last heartbeat, or the fault's deadline, to its last revert) for
    the switch, whose undo came first (chaoslab's own revert afterwards found nothing left)."""
    if trip.by == "watchdog":
        within = ctx.scenario.switch.within
        bound = UNDO_ALLOWANCE if trip.condition == "deadline" else within
        reverts = trip.reverts
        revert_s = trip.revert_s if trip.revert_s is not None else max(reverts.values(), default=0.0)
        undo_s = trip.undo_s if trip.undo_s is not None else revert_s
    else:
        bound, reverts = STOP_BOUND, reverted
        revert_s = undo_s = max(reverts.values(), default=0.0)
    return AbortRecord(
        trip.condition,
        trip.reason,
        phase,
        round(trip.at, 3),
        trip.by,
        round(revert_s, 3),
        bound,
        reverts,
        round(undo_s, 3),
    )


def _phase_record(r: PhaseRun) -> PhaseRecord:
    """A phase as the report gives it, with each fault's receipt: what its mechanism measured."""
    return PhaseRecord(
        r.spec.name,
        round(r.start, 3),
        round(r.end, 3),
        [
            FaultRecord(
                f.kind,
                f.spec.target,
                f.params(),
                v.mechanism,
                v.observed,
                v.detail,
                v.measured,
                str(f.expected_layer()),
            )
            for f, v in r.faults
        ],
        settle_s=round(r.start - r.scheduled, 3),
        aborted=r.aborted,
        changes=r.changes,
        gomaxprocs=r.gomaxprocs,
    )


@dataclass
class Observer:
    """What measuring cost: each probe's cost, the budget, the layers the kill switch
    detached (lost from then on) and those not attached because nothing needed them."""

    costs: list[ObserverCost] = field(default_factory=list)
    budget: ProbeBudget = field(default_factory=ProbeBudget)
    lost: dict[tuple[Layer, str], Lost] = field(default_factory=dict)
    left_out: dict[tuple[Layer, str], str] = field(default_factory=dict)


def _count(
    runs: list[PhaseRun], load: LoadRunner, stalls: attribution.Stalls
) -> tuple[RunTally, attribution.InFlight]:
    """One pass over the records on disk, a chunk at a time: into the client's tallies and the
    request-seconds in flight in each phase's window and each stall's ticks (the phases' windows
    are all known now, so each request is counted where it belongs, in any order)."""
    windows = [(r.start, r.end) for r in runs]
    tally = RunTally([(r.spec.name, r.start, r.end) for r in runs], load.t0 or runs[0].start, load.names)
    flight = attribution.InFlight(windows, [span for a, b in windows for span in stalls.spans(a, b)])
    for batch in load.read_records():
        for req in batch:
            tally.add(req)
            flight.add(req)
    return tally, flight


def _analyse(
    ctx: RunContext,
    runtime: str,
    runs: list[PhaseRun],
    load: LoadRunner,
    stalls: attribution.Stalls,
    probe_lines: list[str],
    unmeasured: dict[tuple[Layer, str], str],
    abort: AbortRecord | None = None,
    observer: Observer | None = None,
    settler: Settler | None = None,
) -> Report:
    observer = observer or Observer()
    if observer.lost:
        # A layer detached mid-run has no comparable figure in any phase: no verdict is drawn
        # from it (a fault on it is inconclusive), and its partial histograms are dropped.
        unmeasured = dict(unmeasured)
        for (layer, target), lost in observer.lost.items():
            when = f"+{lost.at - runs[0].scheduled:.1f} s" if runs else "mid-run"
            unmeasured[(layer, target)] = (
                f"its probe was detached at {when} by the kill switch: {lost.reason}"
            )
        for r in runs:
            r.snap = {k: h for k, h in r.snap.items() if (k[0], k[1]) not in observer.lost}
    trapped = any(c.traps for c in observer.costs)
    windows = [(r.start, r.end) for r in runs]
    recount = diag.recount_path()
    if settler is not None and settler.complete(stalls, windows) and not recount:
        # counted while the run went on (analysis/settle.py)
        tally, flight = settler.tally, settler.flight
    else:
        if settler is not None and not recount:
            ctx.say("note: the run's requests are counted again from its records (a stall was missed live)")
        tally, flight = _count(runs, load, stalls)
        if recount and settler is not None:
            needed = [span for a, b in windows for span in stalls.spans(a, b)]
            diag.write_recount(
                recount,
                settler.complete(stalls, windows),
                settle.differences((settler.tally, settler.flight), (tally, flight), needed),
                settler.held_most,
                settler.at_end,
            )
    data = {
        r.spec.name: attribution.PhaseData(
            r.spec.name,
            tally.by_phase[r.spec.name],
            r.snap,
            stalls.held(flight, r.start, r.end),
            flight.window_s[i],
        )
        for i, r in enumerate(runs)
    }
    base = data[runs[0].spec.name]
    client = [client_view.client_row(r.spec.name, tally.by_phase[r.spec.name], r.end - r.start) for r in runs]
    protocols = {q.name: q.protocol for q in ctx.scenario.load.requests}
    per_name = [
        row
        for r in runs
        for row in client_view.by_name(r.spec.name, tally.by_name, r.end - r.start, protocols)
    ]
    spans = [(r.spec.name, r.scheduled, r.end) for r in runs]  # the timeline shows the schedule
    timeline, second_hists = client_view.seconds(tally.by_second, tally.t0, spans)
    per_worker = load.workers(runs[-1].end - runs[0].start, runs[-1].end)
    generator = client_view.generator(
        str(ctx.scenario.load.model),
        ctx.scenario.load.all_workers,
        client,
        {r.spec.name: load.generator_cpu(r.start, r.end) for r in runs},
        per_worker if len(per_worker) > 1 else [],
    )
    layers = [row for r in runs for row in attribution.layer_rows(data[r.spec.name])]
    calls = {name: t.links for name, t in ctx.scenario.targets.items()}
    verdicts = []
    for r in runs[1:]:
        if not r.spec.compare or r.aborted:  # an aborted phase's faults were never verified
            continue
        checks = [
            attribution.FaultCheck(
                f.expected_layer(),
                f.spec.target,
                f.expected_shift(),
                v.observed,
                v.detail,
                f.kind,
                f.also_shows_in(ctx.scenario.targets),
                f.takes_target_away() or not f.shows_as_time() or _on_control_plane(f, ctx.scenario.targets),
            )
            for f, v in r.faults
        ]
        v = attribution.verdict(base, data[r.spec.name], checks, unmeasured, calls)
        limited = [f.spec.target for f, _ in r.faults if f.kind == "cpu"]
        verdicts.append(replace(v, runtime=goruntime.changes(runs[0].gomaxprocs, r.gomaxprocs, limited)))
    phases = [_phase_record(r) for r in runs]
    quiet = [r for r in runs if not r.spec.faults]
    drift = None
    if len(quiet) >= 2:
        drift = attribution.drift(
            tally.by_phase[quiet[0].spec.name],
            tally.by_phase[quiet[-1].spec.name],
            quiet[0].spec.name,
            quiet[-1].spec.name,
        )
    report = Report(
        ctx.scenario.name,
        ctx.run_id,
        runtime,
        runs[0].start,
        probe_lines,
        phases,
        client,
        layers,
        verdicts,
        [],
        drift,
        requests=per_name,
        timeline=timeline,
        generator=generator,
        histograms={
            "phases": {r.spec.name: tally.by_phase[r.spec.name].latency.to_json() for r in runs},
            "seconds": second_hists,
        },
        unmeasured=[
            Unmeasured(str(layer), target, why) for (layer, target), why in sorted(unmeasured.items())
        ],
        kernel=os.uname().release,
        abort=abort,
        observer=observer.costs,
        observer_budget=observer.budget.warn,
        trap_us=round(trap_cost().stepped_ns / 1000, 3) if trapped else 0.0,
        trap_emulated_us=round(trap_cost().emulated_ns / 1000, 3) if trapped else 0.0,
        left_out=[Unmeasured(str(layer), t, why) for (layer, t), why in sorted(observer.left_out.items())],
    )
    report.xds = [
        v
        for name, t in ctx.scenario.targets.items()
        if t.mesh is not None
        for v in xds.versions(name, xds.read_events(ctx.work_dir / xds_events_name(name)), phases)
    ]
    xds.attribute(report.xds, phases, layers)
    envoys = [
        n
        for n, t in ctx.scenario.targets.items()
        if t.service == "envoy" and dict(t.files).get("bootstrap") == GENERATED
    ]
    if envoys and runs:  # their last answers reach the access log within a flush interval
        time.sleep(max(0.0, runs[-1].end + 2 * ACCESS_LOG_FLUSH - time.time()))
    logs = {n: errors.read_log(ctx.work_dir / access_log_name(n)) for n in envoys}
    xds.client_window(report.xds, logs)
    report.errors = [row for name in envoys for row in errors.rows(name, logs[name], phases)]
    report.expectations = check_all(ctx.scenario.expect, report)
    report.sweeps = sweep.curves(ctx.scenario.sweeps, ctx.scenario.expect, report)
    return report
