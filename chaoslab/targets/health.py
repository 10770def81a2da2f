"""Readiness checks: control traffic from the host to a target, never faulted.

Control traffic leaves from a reserved source-port block outside Linux's ephemeral range
(32768-60999), aligned so one mask matches it (u32 filters, iptables ranges): every network
fault exempts it, so a health check always sees the target itself, never the fault.
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from chaoslab.errors import TargetError

CONTROL_PORT = 61440  # first source port of the control block
CONTROL_MASK = 0xFE00  # the block is CONTROL_PORT..CONTROL_LAST
CONTROL_LAST = CONTROL_PORT + (0xFFFF & ~CONTROL_MASK)
# The block after it carries a fault's own checks (round trips that must cross the fault):
# faults do not exempt it, but the probes leave it out, so checking a fault adds nothing
# to the layers it is checked against.
CHECK_PORT = CONTROL_LAST + 1


def bind_from_block(sock: socket.socket, first: int, tries: int = 20) -> None:
    """Bind `sock` to a free source port of the 512-port block starting at `first`."""
    for _ in range(tries):
        try:
            sock.bind(("", random.randint(first, first + (0xFFFF & ~CONTROL_MASK))))
            return
        except OSError as exc:
            if exc.errno != 98:  # EADDRINUSE: that port is busy, take another
                raise
    raise OSError(98, f"no free source port in {first}-{first + (0xFFFF & ~CONTROL_MASK)}")


def get_status(url: str, ctx: ssl.SSLContext, timeout: float) -> int:
    """One GET from a control source port; returns the HTTP status."""
    parts = urlsplit(url)
    for _ in range(20):
        port = random.randint(CONTROL_PORT, CONTROL_LAST)
        conn = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ctx, source_address=("", port)
        )
        try:
            conn.request("GET", parts.path or "/")
            return conn.getresponse().status
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE: that control port is busy, take another
                continue
            raise
        finally:
            conn.close()
    raise OSError("no free control source port")


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
            status = get_status(url, ctx, 2.0)
            if status == 200:
                return time.monotonic() - start
            last = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TargetError(
        f"{url} did not become healthy in {timeout:.0f}s (last: {last})",
        "see the target's log in the run's work directory",
    )
