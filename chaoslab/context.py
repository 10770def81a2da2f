"""The composition root of a run: built once from a validated scenario, passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from chaoslab.events import EventBus
from chaoslab.journal import Journal
from chaoslab.scenario.model import Scenario


@dataclass
class RunContext:
    scenario: Scenario
    run_id: str
    out_dir: Path
    journal: Journal
    say: Callable[[str], None]
    console: Console | None = None
    events: EventBus = field(default_factory=EventBus)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "work"

    @property
    def short_id(self) -> str:
        return self.run_id[:6]
