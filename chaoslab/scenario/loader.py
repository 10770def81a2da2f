"""YAML text to a validated `Scenario`, reporting every problem with its YAML path."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from chaoslab.errors import ChaoslabError, ExitCode
from chaoslab.layers import Layer
from chaoslab.quote import show
from chaoslab.scenario import source, sweeps
from chaoslab.scenario.fields import Fields, Problems, control_characters, join
from chaoslab.scenario.load import check_stages, parse_load
from chaoslab.scenario.model import (
    RUNTIMES,
    CauseRef,
    ChangeSpec,
    Expectation,
    FaultSpec,
    PhaseSpec,
    ProbeBudget,
    Scenario,
    Status,
    TargetSpec,
)
from chaoslab.scenario.requests import known
from chaoslab.scenario.safety import parse_abort, parse_switch
from chaoslab.scenario.targets import parse_targets

MIN_PHASE = 0.1  # the run loop ticks every 0.2 s; a shorter phase has no time to measure
MAX_PHASE = 3600.0
MAX_PHASES = 100
MAX_RUN_PHASES = 250  # with every sweep's values and rests
MAX_FAULTS = 16  # per phase
MAX_EXPECT = 100
SHOWN_PROBLEMS = 100  # a file with thousands of mistakes gets the first ones, and a count


class ScenarioError(ChaoslabError):
    exit_code = ExitCode.BAD_INPUT

    def __init__(self, label: str, problems: Problems) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{label}: {n} problem{'s' if n != 1 else ''}, nothing was started"]
        lines += ["  " + p.render() for p in self.problems[:SHOWN_PROBLEMS]]
        if n > SHOWN_PROBLEMS:
            lines.append(f"  ... and {n - SHOWN_PROBLEMS} more (the first {SHOWN_PROBLEMS} are shown)")
        super().__init__("\n".join(lines))


def load_scenario(path: Path) -> Scenario:
    try:
        text = source.read_text(path)
    except source.SourceError as exc:
        raise ScenarioError(str(path), exc.problems) from None
    return parse_scenario(text, source=path)


def parse_scenario(text: str, source: Path | None = None) -> Scenario:
    from chaoslab.scenario.source import SourceError, load_yaml

    label = str(source) if source else "<scenario>"
    problems = Problems()
    try:
        raw = load_yaml(text)
    except SourceError as exc:
        raise ScenarioError(label, exc.problems) from None
    scenario = _Reader(problems).scenario(raw, source)
    if problems or scenario is None:
        raise ScenarioError(label, problems)
    return scenario


class _Reader:
    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.sweeps: list[sweeps.Expanded] = []
        self.sweep_names: list[str] = []

    def scenario(self, raw: object, source: Path | None) -> Scenario | None:
        top = Fields(raw, "", self.problems)
        name = top.name("name", required=True)
        description = top.get("description", _text, "")
        runtime = top.choice("runtime", RUNTIMES, "local")
        engine = self.engine(top, runtime)
        base = source.resolve().parent if source else Path.cwd()
        targets = parse_targets(top, self.problems, base, runtime)
        load = parse_load(top, targets, self.problems, base)
        phases = self.phases(top, targets)
        if load is not None:
            check_stages(load, sum(p.duration for p in phases), self.problems)
        expect = self.expectations(top, phases, targets)
        probes, required, budget = self.probes(top)
        abort = parse_abort(top, targets, self.problems)
        switch = parse_switch(top, self.problems)
        top.finish()
        if load is None or not top.ok:
            return None
        return Scenario(
            name,
            description,
            runtime,
            targets,
            load,
            phases,
            expect,
            source,
            probes,
            required,
            abort,
            switch,
            budget,
            tuple(x.spec for x in self.sweeps),
            engine,
        )

    def engine(self, top: Fields, runtime: str) -> str:
        """`engine:`, the Docker engine the containers run on: a URL or a Docker context."""
        from chaoslab.targets.engines import problem

        if not top.has("engine"):
            return ""
        value = top.string("engine")
        why = problem(value) if value else "it is empty"
        if why is not None:
            self.problems.add(
                "engine",
                f"{why}: {value!r}",
                "give the engine's URL (tcp://HOST:2375, ssh://user@HOST, unix:///var/run/docker.sock) "
                "or a context that `docker context ls` shows",
            )
            return ""
        if runtime == "local":
            self.problems.add(
                "engine", "an engine runs the Docker runtime's containers", "use runtime: docker (or auto)"
            )
        return value

    def probes(self, top: Fields) -> tuple[tuple[str, ...] | None, tuple[str, ...], ProbeBudget]:
        """`probes: [layers]`, or `probes: {layers: [...], required: [...], budget: 50us, limit: 1ms}`:
        (chosen, required, budget)."""
        if not top.has("probes"):
            return None, (), ProbeBudget()
        raw = top.raw.get("probes")
        if isinstance(raw, dict):
            f = Fields(top.mapping("probes"), "probes", self.problems)
            chosen = self._layers(f.sequence("layers"), f.at("layers")) if f.has("layers") else None
            required = self._layers(f.sequence("required"), f.at("required"))
            default = ProbeBudget()
            both = f.has("budget") and f.has("limit")
            warn = f.percent("budget") / 100 or default.warn
            limit = f.percent("limit") / 100 or default.limit
            if both and limit < warn:
                self.problems.add(
                    f.at("limit"),
                    f"the limit ({limit:.0%} of the requests' time) is below the budget ({warn:.0%})",
                    "set limit to at least budget: over budget a probe is reported, over limit detached",
                )
            f.finish()
            for i, layer in enumerate(required):
                if chosen is not None and layer not in chosen:
                    self.problems.add(
                        join(f.at("required"), i),
                        f"{show(layer)} is required but not among probes.layers",
                        "add it to probes.layers",
                    )
            return chosen, required, ProbeBudget(warn, limit)
        return self._layers(top.sequence("probes"), "probes"), (), ProbeBudget()

    def _layers(self, items: list[object], path: str) -> tuple[str, ...]:
        from chaoslab.probes import PROBES

        layers = [str(cls.layer) for cls in PROBES]
        out = []
        for i, item in enumerate(items):
            if item not in layers:
                self.problems.add(
                    join(path, i), f"{show(item)} is not a probed layer", f"layers: {', '.join(layers)}"
                )
            else:
                out.append(str(item))
        return tuple(out)

    def phases(self, top: Fields, targets: dict[str, TargetSpec]) -> tuple[PhaseSpec, ...]:
        out: list[PhaseSpec] = []
        items = top.sequence("phases", required=True)
        if len(items) > MAX_PHASES:
            self.problems.add("phases", f"at most {MAX_PHASES} phases, got {len(items)}")
        for i, item in enumerate(items[:MAX_PHASES]):
            path = join("phases", i)
            if isinstance(item, dict) and "sweep" in item:
                if isinstance(item.get("name"), str):  # known to expectations even if it is refused
                    self.sweep_names.append(item["name"])
                swept = sweeps.expand(
                    item, path, self.problems, lambda raw, at, said: _Reader(said).phase(raw, at, targets)
                )
                if swept is not None:
                    self.sweeps.append(swept)
                    out += swept.phases
                continue
            out.append(self.phase(item, path, targets))
        if len(out) > MAX_RUN_PHASES:
            self.problems.add(
                "phases",
                f"the run would have {len(out)} phases (its sweeps' values and rests included), "
                f"at most {MAX_RUN_PHASES}",
                "sweep fewer values",
            )
        # a sweep's name is a phase name too (its values' phases are NAME@VALUE)
        names = [p.name for p in out if p.name and not any(p in x.phases for x in self.sweeps)]
        names += self.sweep_names
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self.problems.add(
                "phases", f"phase name {show(dup)} is used more than once", "phase names must be unique"
            )
        if out and out[0].compare:
            self.problems.add(
                "phases[0]",
                "the first phase is the baseline: it can have no faults and no 'compare'",
                "add a phase without faults before the first fault phase",
            )
        return tuple(out)

    def phase(self, item: object, path: str, targets: dict[str, TargetSpec]) -> PhaseSpec:
        """One phase of `phases:`."""
        from chaoslab.faults import FAULT_KINDS

        f = Fields(item, path, self.problems)
        name = f.name("name", required=True)
        duration = f.duration("duration", required=True, low=MIN_PHASE, high=MAX_PHASE)
        compare = f.flag("compare")
        faults: list[FaultSpec] = []
        raw_faults = f.sequence("faults")
        if len(raw_faults) > MAX_FAULTS:
            self.problems.add(f.at("faults"), f"at most {MAX_FAULTS} faults per phase, got {len(raw_faults)}")
        for j, raw_fault in enumerate(raw_faults[:MAX_FAULTS]):
            ff = Fields(raw_fault, join(f.at("faults"), j), self.problems)
            kind = ff.choice("kind", tuple(FAULT_KINDS), "", required=True)
            target = ff.name("target", required=True)
            if target and target not in targets:
                self.problems.add(ff.at("target"), f"unknown target {show(target)}", known(targets))
            if kind:
                spec = FAULT_KINDS[kind].parse(ff, kind, target)
                if target in targets:
                    FAULT_KINDS[kind].check(spec, targets, self.problems)
                faults.append(spec)
            ff.finish()
        changes = self._changes(f, duration, targets)
        f.finish()
        _check_overlaps(faults, self.problems)
        return PhaseSpec(name, duration, tuple(faults), changes=changes, compare=compare or bool(faults))

    def _changes(self, f: Fields, duration: float, targets: dict[str, TargetSpec]) -> tuple[ChangeSpec, ...]:
        """A phase's config changes (`changes:`): each at a time inside the phase, at an xDS
        control plane, naming what it serves."""
        from chaoslab.targets.builtins import BUILTINS, XdsControl, cluster_problem

        out: list[ChangeSpec] = []
        items = f.sequence("changes")
        if len(items) > MAX_FAULTS:
            self.problems.add(f.at("changes"), f"at most {MAX_FAULTS} changes per phase, got {len(items)}")
        for j, raw in enumerate(items[:MAX_FAULTS]):
            cf = Fields(raw, join(f.at("changes"), j), self.problems)
            at = cf.duration("at", 0.0, positive=False)
            if duration and at >= duration:
                self.problems.add(
                    cf.at("at"),
                    f"{at:g}s is not inside its phase ({duration:g}s long)",
                    "give a time from 0 to less than the phase's duration",
                )
            target = cf.name("target", required=True)
            spec = targets.get(target)
            if target and spec is None:
                self.problems.add(cf.at("target"), f"unknown target {show(target)}", known(targets))
            elif spec is not None and spec.mesh is None:
                self.problems.add(
                    cf.at("target"),
                    f"{target} is not an xDS control plane: only one changes config during a run",
                    f"name a target with service: {XdsControl.name}",
                )
            plane = BUILTINS[XdsControl.name]
            assert isinstance(plane, XdsControl)
            change = plane.parse_change(cf, at, target, spec.mesh if spec else None)
            if spec is not None and spec.mesh is not None:
                moved = {c.name for c in change.clusters}
                for c in change.apply(spec.mesh).clusters:
                    if c.name in moved:
                        cluster_problem(c, targets, join(cf.at("clusters"), c.name), self.problems)
            out.append(change)
            cf.finish()
        return tuple(out)

    def expectations(
        self, top: Fields, phases: tuple[PhaseSpec, ...], targets: dict[str, TargetSpec]
    ) -> tuple[Expectation, ...]:
        out: list[Expectation] = []
        swept = {x.spec.name: x for x in self.sweeps}
        phase_names = [p.name for p in phases]
        judged = {p.name for p in phases[1:] if p.compare}  # the phases that get a verdict
        judged |= set(swept)
        items = top.sequence("expect")
        if len(items) > MAX_EXPECT:
            self.problems.add("expect", f"at most {MAX_EXPECT} expectations, got {len(items)}")
        for i, item in enumerate(items[:MAX_EXPECT]):
            path = join("expect", i)
            f = Fields(item, path, self.problems)
            phase = f.name("phase", required=True)
            if phase and phase not in phase_names and phase not in self.sweep_names:
                names = [*phase_names, *(f"{n} (a sweep)" for n in swept)]
                self.problems.add(
                    f.at("phase"), f"unknown phase {show(phase)}", f"phases are: {', '.join(names)}"
                )
            through_raw = f.value("through")
            raw_absorbed, raw_cause = f.value("absorbed_by"), f.value("cause")
            several = isinstance(raw_absorbed, list)
            absorbed: str | None = None
            causes: tuple[CauseRef, ...] = ()
            if isinstance(raw_absorbed, list):
                causes = self._causes(raw_absorbed, f.at("absorbed_by"), targets)
            elif raw_absorbed is not None:
                ref = self._cause(raw_absorbed, f.at("absorbed_by"), targets, mapping=False)
                absorbed = ref.layer if ref else None
            target = f.name("target") or None
            if target and target not in targets:
                self.problems.add(f.at("target"), f"unknown target {show(target)}", known(targets))
            cause = self._cause(raw_cause, f.at("cause"), targets) if raw_cause is not None else None
            status_text = f.choice("status", tuple(s.value for s in Status), "")
            e = Expectation(
                phase=phase,
                path=path,
                absorbed_by=absorbed,
                target=target,
                status=Status(status_text) if status_text else None,
                client_p50_below=f.duration("client_p50_below", high=MAX_PHASE) or None,
                client_p99_below=f.duration("client_p99_below", high=MAX_PHASE) or None,
                error_rate_below=f.get("error_rate_below", _fraction, -1.0)
                if f.has("error_rate_below")
                else None,
                causes=causes,
                cause=cause,
                share_at_least=f.get("share_at_least", _fraction, -1.0) if f.has("share_at_least") else None,
                share_below=f.get("share_below", _fraction, -1.0) if f.has("share_below") else None,
                xds_sync_below=f.duration("xds_sync_below", high=MAX_PHASE) or None,
            )
            f.finish()
            if through_raw is not None and phase not in self.sweep_names:
                self.problems.add(
                    f.at("through"),
                    "'through' is for an expectation on a sweep: the sweep's values it must hold through",
                    f"name a swept phase ({', '.join(swept)})"
                    if swept
                    else "remove it, or give the phase a sweep",
                )
            if target and several:
                self.problems.add(
                    f.at("target"),
                    "'target' qualifies a single 'absorbed_by'; a list names each layer's target itself",
                    "absorbed_by: [{layer: entropy, target: api}, {layer: network, target: edge}]",
                )
            elif target and raw_absorbed is None:
                self.problems.add(
                    f.at("target"), "'target' qualifies 'absorbed_by'", "add 'absorbed_by: LAYER'"
                )
            if (
                (e.absorbed_by or e.causes or e.cause or e.status)
                and phase in phase_names
                and phase not in judged
            ):
                key = (
                    "absorbed_by"
                    if raw_absorbed is not None
                    else "cause"
                    if raw_cause is not None
                    else "status"
                )
                why = "it is the baseline" if phase == phase_names[0] else "it has no faults and no compare"
                self.problems.add(
                    f.at(key),
                    f"phase {phase} gets no verdict ({why}): this can never hold",
                    "expect a verdict of a fault phase (or a phase with compare: true), or use "
                    "client_p50_below, client_p99_below, error_rate_below here",
                )
            shares = [k for k in ("share_at_least", "share_below") if getattr(e, k) is not None]
            if cause is not None and not shares:
                self.problems.add(
                    f.at("cause"),
                    "a cause is named for its share",
                    "add share_at_least: FRACTION or share_below: FRACTION",
                )
            if raw_cause is None:
                for key in shares:
                    self.problems.add(
                        f.at(key),
                        "a share is a cause's share of the client's added time",
                        "add 'cause: {layer: LAYER, target: TARGET}'",
                    )
            low, high = e.share_at_least, e.share_below
            if low is not None and high is not None and low >= high:
                self.problems.add(
                    f.at("share_below"), f"no share is at least {low:g} and below {high:g}", "widen the range"
                )
            named = (raw_absorbed, raw_cause, e.status, e.client_p50_below, e.client_p99_below)
            if f.ok and all(c is None for c in (*named, e.error_rate_below, e.xds_sync_below)):
                self.problems.add(
                    path,
                    "expects nothing",
                    "add one of absorbed_by, cause with share_at_least or share_below, status, "
                    "client_p50_below, client_p99_below, error_rate_below, xds_sync_below",
                )
            if e.xds_sync_below is not None and not any(t.mesh is not None for t in targets.values()):
                self.problems.add(
                    f.at("xds_sync_below"),
                    "no target is an xDS control plane: there is no config sync to time",
                    "add a target with service: xds-control and an envoy with xds: NAME",
                )
            if phase in swept and f.ok:
                out += self._swept(e, swept[phase], through_raw, f.at("through"))
            else:
                out.append(e)
        return tuple(out)

    def _swept(self, e: Expectation, sweep: sweeps.Expanded, through: object, at: str) -> list[Expectation]:
        """An expectation on a sweep, one per value: each checked against that value's phase."""
        points = sweep.spec.points
        x, last = None, len(points) - 1  # the last value that binds, by position
        if through is not None:
            x = sweep.canon(through)
            at_value = [
                i for i, p in enumerate(points) if x is not None and math.isclose(p.x, x, rel_tol=1e-9)
            ]
            if not at_value:
                self.problems.add(
                    at,
                    f"{show(through)} is not one of the sweep's values",
                    "give the last value it must hold at: " + ", ".join(p.value for p in points),
                )
                x = None
            else:
                last = at_value[0]
        text = str(through).strip() if x is not None else ""
        return [
            replace(e, phase=p.phase, sweep=sweep.spec.name, through=x, through_text=text, binding=i <= last)
            for i, p in enumerate(points)
        ]

    def _causes(self, items: list[object], path: str, targets: dict[str, TargetSpec]) -> tuple[CauseRef, ...]:
        """`absorbed_by: [LAYER or {layer: LAYER, target: TARGET}, ...]`."""
        if not items:
            self.problems.add(path, "an empty list names no cause", "name at least one layer")
        out: list[CauseRef] = []
        for j, item in enumerate(items):
            ref = self._cause(item, join(path, j), targets)
            if ref is not None and ref in out:
                self.problems.add(join(path, j), f"{ref.describe()} is named twice", "name each cause once")
            elif ref is not None:
                out.append(ref)
        return tuple(out)

    def _cause(
        self, raw: object, path: str, targets: dict[str, TargetSpec], mapping: bool = True
    ) -> CauseRef | None:
        """A cause named by its layer (`entropy`) or, where `mapping`, by its layer and target
        (`{layer: entropy, target: api}`); None (its problems recorded) when it is not valid."""
        # the client holds every cause: it is never one
        layers = tuple(layer.value for layer in Layer if layer is not Layer.CLIENT)
        if isinstance(raw, str):
            if raw in layers:
                return CauseRef(raw)
            self.problems.add(path, f"must be one of {', '.join(layers)}, got {show(raw)}")
            return None
        if not isinstance(raw, dict) or not mapping:
            self.problems.add(
                path,
                f"expected a layer{' or {layer: LAYER, target: TARGET}' if mapping else ' or a list'}, "
                f"got {'nothing' if raw is None else type(raw).__name__}",
                "e.g. {layer: entropy, target: api}" if mapping else "e.g. entropy, or [entropy, network]",
            )
            return None
        f = Fields(raw, path, self.problems)
        layer = f.choice("layer", layers, "", required=True)
        target = f.name("target") or None
        if target and target not in targets:
            self.problems.add(f.at("target"), f"unknown target {show(target)}", known(targets))
        f.finish()
        return CauseRef(layer, target) if layer else None


def _text(value: object) -> str:
    """Free text (descriptions): never used in a command; lines and tabs are fine, other control
    characters (a terminal's escapes) are not, and it is at most 10,000 characters."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    if bad := control_characters(value.replace("\n", "").replace("\t", "")):
        raise ValueError(f"contains control characters ({bad})")
    if len(value) > 10_000:
        raise ValueError("at most 10,000 characters")
    return value


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a fraction between 0 and 1, e.g. 0.01")
    if not 0 <= float(value) <= 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return float(value)


def _check_overlaps(faults: list[FaultSpec], problems: Problems) -> None:
    """Two faults of one phase may not act on the same thing of one target (its CPU limit, its
    process, a tracer, the traffic of one link): the second would fail, or undo the first."""
    from chaoslab.faults import FAULT_KINDS

    held: list[tuple[FaultSpec, str]] = []
    for spec in faults:
        if spec.kind not in FAULT_KINDS or not spec.target:
            continue
        for claim in FAULT_KINDS[spec.kind].claims(spec):
            other = next((o for o, c in held if o.target == spec.target and _overlap(c, claim)), None)
            if other is not None:
                problems.add(
                    spec.path,
                    f"the {claim} of {spec.target} is already faulted in this phase by {other.path} "
                    f"({other.kind})",
                    "one fault per thing per phase: combine the effects in one fault, or use two phases",
                )
                break
        else:
            held += [(spec, c) for c in FAULT_KINDS[spec.kind].claims(spec)]


def _overlap(a: str, b: str) -> bool:
    """Claims overlap when equal, or when one is the other made narrower ('egress traffic' holds
    'egress traffic to host')."""
    return a == b or a.startswith(b + " ") or b.startswith(a + " ")
