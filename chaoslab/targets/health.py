"""Readiness checks: control traffic from the host to a target, never faulted."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from chaoslab.errors import TargetError


def wait_healthy(url: str, ca: Path, timeout: float, alive: Callable[[], bool] | None = None) -> float:
    """GET `url` until it answers 200; returns the seconds it took."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout:
        if alive is not None and not alive():
            raise TargetError(
                f"{url}: the target exited while starting", "see its log in the run's work directory"
            )
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.1)
    raise TargetError(
        f"{url} did not become healthy in {timeout:.0f}s (last: {last})",
        "see the target's log in the run's work directory",
    )
