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
from chaoslab.scenario.model import HealthSpec

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


def _control_socket(host: str, timeout: float) -> socket.socket:
    """A TCP socket bound to a free port of the control block (never faulted)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        bind_from_block(sock, CONTROL_PORT)
    except OSError:
        sock.close()
        raise
    return sock


def get_status(url: str, ctx: ssl.SSLContext | None, timeout: float) -> int:
    """One GET from a control source port (https when `ctx` is given); returns the HTTP status."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    sock = _control_socket(host, timeout)
    try:
        sock.connect((host, port))
        conn = (
            http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
            if parts.scheme == "https"
            else http.client.HTTPConnection(host, port, timeout=timeout)
        )
        conn.sock = ctx.wrap_socket(sock, server_hostname=host) if ctx is not None else sock
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        return conn.getresponse().status
    finally:
        sock.close()


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """Verify against `ca`, or not at all when it is None (a target with tls: {verify: false})."""
    ctx = ssl._create_unverified_context() if ca is None else ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    return ctx


def tcp_connect(host: str, port: int, timeout: float) -> None:
    sock = _control_socket(host, timeout)
    try:
        sock.connect((host, port))
    finally:
        sock.close()


# grpc.health.v1.Health/Check: HealthCheckRequest{service} and a reply whose status 1 is SERVING
HEALTH_METHOD = "/grpc.health.v1.Health/Check"


def grpc_serving(host: str, port: int, service: str, ca: Path | None, secure: bool, timeout: float) -> str:
    """'' when the gRPC health service says SERVING, else why not. (grpcio picks its own source
    port: a gRPC check is not control traffic, so it is used when no fault is active.)"""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if secure:
        roots = ca.read_bytes() if ca is not None else None
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))
    else:
        channel = grpc.insecure_channel(target)
    name = service.encode()
    request = (b"\n" + bytes([len(name)]) + name) if name else b""
    try:
        reply = channel.unary_unary(HEALTH_METHOD)(request, timeout=timeout)
    except grpc.RpcError as exc:
        return f"gRPC {exc.code().name if exc.code() else 'error'}: {exc.details() or ''}".strip()
    finally:
        channel.close()
    return "" if reply == b"\x08\x01" else f"gRPC health status {reply.hex() or 'UNKNOWN'}"


def check(health: HealthSpec, host: str, ca: Path | None, timeout: float = 2.0, port: int = 0) -> str:
    """One health check of a target reached at `host` (and `port`, when its health port is
    published on another): '' when healthy, else what it answered."""
    port = port or health.port
    try:
        if health.protocol in ("https", "http"):
            ctx = tls_context(ca) if health.protocol == "https" else None
            url = f"{health.protocol}://{host}:{port}{health.path}"
            status = get_status(url, ctx, timeout)
            return "" if status == health.status else f"HTTP {status} (expected {health.status})"
        if health.protocol in ("grpc", "grpc-plain"):
            return grpc_serving(host, port, health.service, ca, health.protocol == "grpc", timeout)
        if health.protocol == "tcp":
            tcp_connect(host, port, timeout)
        return ""
    except (OSError, http.client.HTTPException) as exc:
        return str(exc) or type(exc).__name__


def wait_healthy(
    name: str,
    health: HealthSpec,
    host: str,
    ca: Path | None,
    alive: Callable[[], bool] | None = None,
    log: Callable[[], str] | None = None,
    port: int = 0,
) -> float:
    """Check until healthy, for at most the health check's timeout; returns the seconds it took.
    A failure says what the target last answered and, when `log` gives them, its last log lines."""
    start = time.monotonic()
    last = "no answer"
    while True:
        if alive is not None and not alive():
            raise TargetError(
                f"{name} exited while starting{_tail(log)}", "see its log in the run's work directory"
            )
        last = check(health, host, ca, port=port)
        if not last:
            return time.monotonic() - start
        if time.monotonic() - start > health.timeout:
            break
        time.sleep(0.1)
    raise TargetError(
        f"{name} did not become healthy in {health.timeout:g}s ({health.describe()}; last: {last})"
        + _tail(log),
        "check its ports and health in the scenario, and its log in the run's work directory",
    )


def _tail(log: Callable[[], str] | None, lines: int = 8) -> str:
    text = log() if log is not None else ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return ("; its log ends:\n    " + "\n    ".join(tail)) if tail else ""
