"""Diagnostics that a test or a bench turns on from the environment.

CHAOSLAB_COUNT_REQUESTS=FILE: for the run's whole life (load, phases, analysis, report), a
thread counts every half second the request records (load.records.Request) alive in the
process, among the objects the garbage collector tracks, and keeps FILE holding the largest
count and every sample, as JSON. A run that kept every request would count them all by its
end; one that counts them as they come holds a few batches at a time, however long it runs.

CHAOSLAB_RECOUNT=FILE: the analysis counts the run's requests again, in one pass over its
records after the run, and writes FILE: whether the counts made as the run went (analysis/
settle.py) had every span, where they differ from the recount, and how many requests they held
back (JSON). The report is built from the recount then.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

EVERY = 0.5  # seconds between counts


def count_requests_from_env() -> Callable[[], None]:
    """Start counting when the environment asks for it; returns what stops it (a last count)."""
    path = os.environ.get("CHAOSLAB_COUNT_REQUESTS")
    if not path:
        return lambda: None
    from chaoslab.load.records import Request

    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def count() -> None:
        n = sum(1 for o in gc.get_objects() if type(o) is Request)
        samples.append((round(time.time(), 2), n))
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps({"max": max(c for _, c in samples), "samples": samples}))
        tmp.replace(path)

    def loop() -> None:
        while not stop.wait(EVERY):
            count()

    thread = threading.Thread(target=loop, name="count-requests", daemon=True)
    thread.start()

    def done() -> None:
        stop.set()
        thread.join()
        count()

    return done


def recount_path() -> str:
    return os.environ.get("CHAOSLAB_RECOUNT", "")


def write_recount(path: str, complete: bool, differences: list[str], held_most: int, at_end: int) -> None:
    """`held_most`, `at_end`: the most requests the live counts held back at once, and those
    held when the run ended (the end's share of the counting)."""
    Path(path).write_text(
        json.dumps(
            {"complete": complete, "differences": differences, "held_most": held_most, "at_end": at_end},
            indent=1,
        )
    )
