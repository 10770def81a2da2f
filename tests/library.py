"""Short variants of the shipped scenarios: the same targets, load, faults and expectations,
with each phase cut to a few seconds (a fault phase to at most 8 s, any other to 6 s)."""

from __future__ import annotations

from pathlib import Path

import yaml

FAULT_PHASE = 8.0
OTHER_PHASE = 6.0


def seconds(value: object) -> float:
    from chaoslab.units import parse_duration

    return parse_duration(value)


def short_variant(path: Path) -> str:
    """The scenario's YAML with its phases cut short."""
    data = yaml.safe_load(path.read_text())
    for phase in data["phases"]:
        cap = FAULT_PHASE if phase.get("faults") else OTHER_PHASE
        phase["duration"] = f"{min(seconds(phase['duration']), cap):g}s"
        if "sweep" in phase and "rest" in phase["sweep"]:
            phase["sweep"]["rest"] = f"{min(seconds(phase['sweep']['rest']), 1.0):g}s"
    return yaml.safe_dump(data, sort_keys=False)
