"""`sweep:` on a phase: its fault run at a list or a range of values of one parameter.

    - name: delay
      duration: 10s
      faults: [{kind: network, target: api, delay: 1ms}]
      sweep:
        param: delay                               # a numeric parameter of the fault
        range: {from: 1ms, to: 64ms, factor: 2}    # or step: 5%, or values: [1ms, 5ms, 20ms]
        rest: 5s                                   # a fault-free phase between two values
        max_duration: 30m                          # the cap on the sweep's time (default 1h)

The phase becomes one phase per value, named NAME@VALUE, each compared with the baseline like
any fault phase, and a rest NAME@VALUE-rest after each value but the last. Every value goes
through the fault's own parser, so a value out of the fault's bounds is refused with the
fault's own message, at the value's path. The curve is drawn in the fault's unit (the parsed
spec's field of the parameter's name: seconds for a delay, percent for a loss, cores for cpus).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from chaoslab.quote import show
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import PhaseSpec, SweepPoint, SweepSpec

MAX_VALUES = 50
DEFAULT_CAP = 3600.0  # seconds a sweep may take, values and rests together
HIGHEST_CAP = 24 * 3600.0
NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Z%/]*)\s*\Z")
SIGNIFICANT = 10  # digits a range's computed value keeps (0.1 + 0.2 is 0.3)

# parses one phase of `phases:` at a path, saying its problems to the list given
ParsePhase = Callable[[object, str, Problems], PhaseSpec]


@dataclass(frozen=True)
class Expanded:
    spec: SweepSpec
    phases: list[PhaseSpec]
    # a value of the swept parameter in the fault's unit (None: the fault refuses it)
    canon: Callable[[object], float | None]


def number(value: object) -> tuple[float, str] | None:
    """(number, unit) of `4ms`, `5%`, `0.5`, 3; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return (float(value), "") if math.isfinite(value) else None
    if isinstance(value, str):
        m = NUMBER.match(value)
        if m and math.isfinite(float(m[1])):
            return float(m[1]), m[2]
    return None


def _shown(x: float, unit: str) -> object:
    """A computed value as the YAML would give it: a plain number, or text with its unit
    (plain decimals, never an exponent: `16777216B`, `0.0000015s`)."""
    x = float(f"{x:.{SIGNIFICANT}g}")
    if not unit:
        return int(x) if x.is_integer() and abs(x) < 1e15 else x
    return f"{_plain(x)}{unit}"


def _plain(x: float) -> str:
    text = f"{x:.{SIGNIFICANT}f}".rstrip("0").rstrip(".")
    return text if float(text or 0) == x else f"{x:.{SIGNIFICANT}g}"


def expand(item: dict[object, object], path: str, problems: Problems, parse: ParsePhase) -> Expanded | None:
    """The phases a swept phase runs, or None (with the problems said) when it cannot run."""
    at = join(path, "sweep")
    before = len(problems.items)  # the scenario's other problems are not this sweep's
    sf = Fields(item.get("sweep"), at, problems)
    param = sf.string("param", required=True)
    index = sf.integer("fault", 0, low=0, high=1000)
    rest = sf.duration("rest", 0.0, positive=False, high=3600.0)
    cap = sf.duration("max_duration", DEFAULT_CAP, high=HIGHEST_CAP)
    raw_values = _values(sf, problems, before)
    sf.finish()
    template = {k: v for k, v in item.items() if k != "sweep"}
    faults = template.get("faults")
    fault_at = join(join(path, "faults"), index)
    fault = faults[index] if isinstance(faults, list) and index < len(faults) else None
    if not isinstance(fault, dict):
        where = join(path, "faults")
        problems.add(
            sf.at("fault") if index else at,
            f"the phase has no fault {fault_at} to sweep",
            f"give the phase the fault under {where}, or name its index with sweep.fault",
        )
        return None
    if not param or raw_values is None:
        return None
    numeric = sorted(
        str(k) for k, v in fault.items() if number(v) is not None and k not in ("kind", "target")
    )
    if param not in fault:
        problems.add(
            sf.at("param"),
            f"the fault {fault_at} sets no {show(param)} to sweep",
            f"sweep one of its numeric parameters: {', '.join(numeric)}"
            if numeric
            else "give the fault the parameter with its first value, then sweep it",
        )
        return None
    if number(fault[param]) is None:
        problems.add(
            sf.at("param"),
            f"{fault_at}.{param} is {show(fault[param])}: not a number, it cannot be swept",
            f"sweep one of its numeric parameters: {', '.join(numeric)}" if numeric else "",
        )
        return None

    def run(value: object, name: str, scratch: Problems) -> PhaseSpec:
        raw = copy.deepcopy(template)
        raw["faults"][index][param] = value  # type: ignore[index]
        return replace(parse(raw, path, scratch), name=name)

    def canon(value: object) -> float | None:
        if number(value) is None:
            return None
        scratch = Problems()
        phase = run(value, "x", scratch)
        if scratch or index >= len(phase.faults):
            return None
        return _x(phase, index, param, value)

    base = Problems()
    name = Fields(dict(template), path, base).name("name")
    if not name:  # the phase's own problems are said by parsing it once
        parse(template, path, problems)
        return None
    phases: list[PhaseSpec] = []
    points: list[SweepPoint] = []
    said: set[tuple[str, str]] = set()
    param_at = join(fault_at, param)
    for i, (value, value_at) in enumerate(raw_values):
        text = str(_shown(*number(value))) if isinstance(value, int | float) else str(value).strip()  # type: ignore[misc]
        scratch = Problems()
        phase = run(value, f"{name}@{text}", scratch)
        own = [p for p in scratch if p.path == param_at or p.path.startswith(param_at + ".")]
        for p in own:
            problems.add(value_at, f"{text}: {p.message}", p.hint)
        for p in [] if own else scratch:  # a refused value's other problems follow from it
            if (p.path, p.message) not in said:
                said.add((p.path, p.message))
                problems.add(p.path, p.message, p.hint)
        if scratch or index >= len(phase.faults):
            continue
        x = _x(phase, index, param, value)
        twin = next((q for q in points if q.x == x), None)
        if twin is not None:
            problems.add(value_at, f"{text} is the value {twin.value} again", "give each value once")
            continue
        points.append(SweepPoint(text, x, phase.name))
        if i and rest:
            phases.append(PhaseSpec(f"{phases[-1].name}-rest", rest))
        phases.append(phase)
    units = {number(p.value)[1] == "%" for p in points}  # type: ignore[index]
    if len(units) > 1:
        problems.add(
            join(at, "values"),
            "mixes shares (%) with other values: the curve needs one axis",
            "give every value as a share, or none",
        )
    if len(problems.items) > before or not points:
        return None
    first = phases[0]
    spec = SweepSpec(
        name,
        at,
        fault_at,
        first.faults[index].kind,
        first.faults[index].target,
        param,
        tuple(points),
        first.duration,
        rest,
    )
    if spec.total > cap:
        problems.add(
            at,
            f"the sweep would run {spec.total:g}s ({len(points)} values of {spec.duration:g}s"
            + (f", {len(points) - 1} rests of {rest:g}s" if rest else "")
            + f"), over its cap of {cap:g}s",
            "sweep fewer values or shorten the phase, or raise sweep.max_duration",
        )
        return None
    return Expanded(spec, phases, canon)


def _x(phase: PhaseSpec, index: int, param: str, value: object) -> float:
    """The value in the fault's unit: what the parsed fault says of the parameter (its `axis`,
    for a parameter of more than one form), its field of that name, else as written."""
    spec = phase.faults[index]
    axis = getattr(spec, "axis", None)
    if callable(axis):
        x = axis(param)
        if isinstance(x, int | float):
            return float(x)
    parsed = getattr(spec, param, None)
    if isinstance(parsed, int | float) and not isinstance(parsed, bool):
        return float(parsed)
    n = number(value)
    return n[0] if n else 0.0


def _values(sf: Fields, problems: Problems, before: int) -> list[tuple[object, str]] | None:
    """The sweep's values with each one's YAML path: `values: [...]` or `range: {...}`."""
    if sf.has("values") == sf.has("range"):
        problems.add(
            sf.path,
            "a sweep takes its values from 'values' or from 'range'"
            + (", not both" if sf.has("values") else ""),
            "values: [1ms, 4ms, 16ms], or range: {from: 1ms, to: 64ms, factor: 2} (or step: 5ms)",
        )
        sf.value("values"), sf.value("range")
        return None
    if sf.has("values"):
        items = sf.sequence("values")
        if not items:
            problems.add(sf.at("values"), "is empty", "give at least one value")
            return None
        if len(items) > MAX_VALUES:
            problems.add(sf.at("values"), f"at most {MAX_VALUES} values, got {len(items)}")
            return None
        out = []
        for i, v in enumerate(items):
            if number(v) is None:
                problems.add(join(sf.at("values"), i), f"{show(v)} is not a number", "4ms, 5%, 0.5, 100")
            out.append((v, join(sf.at("values"), i)))
        return None if len(out) != len(items) or any(number(v) is None for v, _ in out) else out
    return _range(Fields(sf.mapping("range"), sf.at("range"), problems), problems, before)


def _range(rf: Fields, problems: Problems, before: int) -> list[tuple[object, str]] | None:
    ends = {}
    for key in ("from", "to", "step", "factor"):
        raw = rf.value(key)
        if raw is None:
            continue
        n = number(raw)
        if n is None:
            problems.add(rf.at(key), f"{show(raw)} is not a number", "4ms, 5%, 0.5, 100")
        else:
            ends[key] = n
    for key in ("from", "to"):
        if key not in ends and rf.ok and not any(p.path == rf.at(key) for p in problems):
            problems.add(rf.at(key), "is required")
    if ("step" in ends) == ("factor" in ends) and rf.ok:
        problems.add(
            rf.path, "a range goes by a step or by a factor", "step: 5ms (adds), or factor: 2 (multiplies)"
        )
    rf.finish()
    if len(problems.items) > before or "from" not in ends or "to" not in ends:
        return None
    (lo, unit), (hi, unit_to) = ends["from"], ends["to"]
    if unit_to != unit:
        problems.add(
            rf.at("to"),
            f"is in {unit_to or 'no unit'}, 'from' in {unit or 'no unit'}",
            "give both in one unit",
        )
        return None
    xs: list[float] = []
    if "step" in ends:
        step, step_unit = ends["step"]
        if step_unit not in ("", unit):
            problems.add(
                rf.at("step"), f"is in {step_unit}, the range in {unit or 'no unit'}", "give it in one unit"
            )
            return None
        if step <= 0:
            problems.add(
                rf.at("step"), "must be above 0 (a range from a higher to a lower value goes down by it)"
            )
            return None
        span = abs(hi - lo) / step * (1 + 1e-9)
        if not math.isfinite(span) or span >= MAX_VALUES:
            many = f"{math.floor(span) + 1}" if span < 1e6 else "too many"
            problems.add(rf.path, f"the range has {many} values, at most {MAX_VALUES}", "take a larger step")
            return None
        count = math.floor(span) + 1
        sign = 1 if hi >= lo else -1
        xs = [lo + sign * k * step for k in range(count)]
    else:
        factor, factor_unit = ends["factor"]
        if factor_unit or factor <= 0 or factor == 1:
            problems.add(
                rf.at("factor"), f"{factor:g}{factor_unit} is not a factor above 0 other than 1", "factor: 2"
            )
            return None
        if lo == 0 or (hi != 0 and (lo > 0) != (hi > 0)):
            problems.add(
                rf.at("from"), "a range by a factor starts from a number other than 0, of the sign of 'to'"
            )
            return None
        if (abs(hi) > abs(lo)) != (factor > 1) and hi != lo:
            way = "up" if abs(hi) > abs(lo) else "down"
            problems.add(
                rf.path,
                f"the range from {lo:g}{unit} to {hi:g}{unit} by a factor of {factor:g} is empty",
                f"going {way} takes a factor {'above' if way == 'up' else 'below'} 1",
            )
            return None
        x = lo
        while (abs(x) <= abs(hi) * (1 + 1e-9)) if factor > 1 else (abs(x) >= abs(hi) * (1 - 1e-9)):
            xs.append(x)
            if len(xs) > MAX_VALUES:
                problems.add(rf.path, f"the range has more than {MAX_VALUES} values", "take a larger factor")
                return None
            x *= factor
    return [(_shown(x, unit), rf.path) for x in xs]
