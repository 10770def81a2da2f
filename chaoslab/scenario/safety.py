"""The `abort:` and `switch:` sections: stop conditions, and the dead man's switch's bounds.

abort:
  error_rate: 20%          # client errors / requests ended in the window
  p50: 500ms               # client p50 over the window (answered requests)
  p99: 2s
  window: 5s               # the sliding window of the conditions above and of `added`
  min_requests: 10         # fewer requests in the window decide nothing
  unhealthy: 3s            # a target's own health check failing this long (every target
                           # with one), or {for: 3s, targets: [api]}
  added: {network: 200ms}  # a layer's added time per request at any target, against the baseline
  target_exit: true        # a target's process exiting, or [api, edge]
switch:
  within: 5s               # faults undone within this of chaoslab's last heartbeat (or `switch: 5s`)
  margin: 5s               # and within this after their phase's scheduled end
"""

from __future__ import annotations

from collections.abc import Mapping

from chaoslab.layers import Layer
from chaoslab.quote import show
from chaoslab.scenario.fields import NAME_RE, Fields, Problems, join
from chaoslab.scenario.model import AbortSpec, SwitchSpec, TargetSpec

MIN_WINDOW, MAX_WINDOW = 1.0, 300.0
MIN_WITHIN, MAX_WITHIN = 2.0, 60.0  # the watchdog leaves 1 s of it for the undo itself
MAX_MARGIN = 300.0


def parse_abort(top: Fields, targets: Mapping[str, TargetSpec], problems: Problems) -> AbortSpec:
    if not top.has("abort"):
        return AbortSpec()
    f = Fields(top.mapping("abort"), "abort", problems)
    window = f.duration("window", 5.0, low=MIN_WINDOW, high=MAX_WINDOW)
    min_requests = f.integer("min_requests", 10, low=1, high=1_000_000)
    error_rate = f.get("error_rate", _rate, None) if f.has("error_rate") else None
    p50 = f.duration("p50", high=3600.0) or None
    p99 = f.duration("p99", high=3600.0) or None
    unhealthy, unhealthy_targets = _unhealthy(f, targets)
    added = _added(f)
    target_exit = _target_exit(f, targets)
    f.finish()
    spec = AbortSpec(
        window, min_requests, error_rate, p50, p99, unhealthy, unhealthy_targets, added, target_exit
    )
    if f.ok and not spec.describe():
        problems.add(
            "abort",
            "names no stop condition",
            "give one of error_rate, p50, p99, unhealthy, added, target_exit (or remove abort:)",
        )
    return spec


def parse_switch(top: Fields, problems: Problems) -> SwitchSpec:
    if not top.has("switch"):
        return SwitchSpec()
    if isinstance(top.raw.get("switch"), str):
        within = top.duration("switch", 5.0, low=MIN_WITHIN, high=MAX_WITHIN)
        return SwitchSpec(within=within)
    f = Fields(top.mapping("switch"), "switch", problems)
    within = f.duration("within", 5.0, low=MIN_WITHIN, high=MAX_WITHIN)
    margin = f.duration("margin", 5.0, low=1.0, high=MAX_MARGIN)
    f.finish()
    return SwitchSpec(within, margin)


def _rate(value: object) -> float:
    """20%, '20%' or 0.2."""
    text = value.strip() if isinstance(value, str) else ""
    if text.endswith("%") and text[:-1].replace(".", "", 1).isdigit() and text.isascii():
        number = float(text[:-1]) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"expected a share of the requests, e.g. 20% or 0.2, got {show(value)}")
    if not 0 < number < 1:
        raise ValueError(f"must be above 0% and below 100%, got {show(value)}")
    return number


def _names(f: Fields, key: str, targets: Mapping[str, TargetSpec]) -> tuple[str, ...]:
    out = []
    for i, item in enumerate(f.sequence(key)):
        if not isinstance(item, str) or not NAME_RE.match(item) or item not in targets:
            f.problems.add(
                join(f.at(key), i), f"unknown target {show(item)}", f"targets are: {', '.join(targets)}"
            )
        else:
            out.append(item)
    return tuple(out)


def _unhealthy(f: Fields, targets: Mapping[str, TargetSpec]) -> tuple[float | None, tuple[str, ...]]:
    if not f.has("unhealthy"):
        return None, ()
    if not isinstance(f.raw.get("unhealthy"), dict):
        seconds = f.duration("unhealthy", high=3600.0)
        names: tuple[str, ...] = ()
    else:
        u = Fields(f.mapping("unhealthy"), f.at("unhealthy"), f.problems)
        seconds = u.duration("for", required=True, high=3600.0)
        names = _names(u, "targets", targets)
        for name in names:
            if targets[name].health.protocol == "none":
                u.problems.add(
                    u.at("targets"),
                    f"{name} has no health check (health: none)",
                    "give it one under targets, or leave it out here",
                )
        u.finish()
    if not names and targets and all(t.health.protocol == "none" for t in targets.values()):
        f.problems.add(
            f.at("unhealthy"), "no target has a health check", "give one under targets.NAME.health"
        )
    return seconds or None, names


def _added(f: Fields) -> tuple[tuple[str, float], ...]:
    layers = [str(layer) for layer in Layer if layer is not Layer.CLIENT]
    out = []
    for layer, value in f.mapping("added").items():
        where = join(f.at("added"), layer)
        if layer not in layers:
            f.problems.add(where, f"{show(layer)} is not a probed layer", f"layers: {', '.join(layers)}")
            continue
        lf = Fields({layer: value}, f.at("added"), f.problems)
        seconds = lf.duration(layer, high=3600.0)
        if seconds:
            out.append((layer, seconds))
    return tuple(out)


def _target_exit(f: Fields, targets: Mapping[str, TargetSpec]) -> tuple[str, ...] | None:
    if not f.has("target_exit"):
        return None
    if isinstance(f.raw.get("target_exit"), list):
        names = _names(f, "target_exit", targets)
        return names or None
    return () if f.flag("target_exit") else None
