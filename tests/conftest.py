from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def chaoslab(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaoslab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kw,
    )  # type: ignore[call-overload]


@dataclass(frozen=True)
class ScenarioRun:
    returncode: int
    stdout: str
    stderr: str
    out: Path

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


_runs: dict[str, ScenarioRun] = {}


def run_scenario(name: str, base: Path) -> ScenarioRun:
    """Run tests/scenarios/<name>.yaml once per test session; later callers get the same run."""
    if name not in _runs:
        out = base / name
        res = chaoslab("run", str(SCENARIOS / f"{name}.yaml"), "--out", str(out))
        _runs[name] = ScenarioRun(res.returncode, res.stdout, res.stderr, out)
    return _runs[name]


@pytest.fixture
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ScenarioRun]:
    base = tmp_path_factory.getbasetemp() / "scenario-runs"
    return lambda name: run_scenario(name, base)


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root: run them as root (CI does)")


@pytest.fixture
def clean_machine(root: None) -> Iterator[None]:
    """Nothing of chaoslab's on the machine before the test, and nothing left after it."""
    from chaoslab.residue import leftovers

    assert leftovers() == [], "the machine carried chaoslab state before the test"
    yield
    left = leftovers()
    if left:
        chaoslab("recover", "--force")
    assert left == [], f"left behind: {left}"
