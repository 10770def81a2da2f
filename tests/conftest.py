from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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
