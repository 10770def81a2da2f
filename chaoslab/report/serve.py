"""The live page of `chaoslab run --serve`: the report page, served while the run goes.

The run loop renders a snapshot about once a second (LiveView's `progress` event) and swaps
it in as one immutable object; the server's threads only send the bytes of the newest one.
So any number of browsers cost the run a socket write each per second, never a render, and
a slow browser holds only its own thread. The page polls `fragment` and swaps it in place.
The server listens on loopback unless the user gives another address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chaoslab.context import RunContext
from chaoslab.errors import UsageError
from chaoslab.report import html
from chaoslab.report.model import LiveStatus, Report

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8716
LINGER = 3.0  # seconds the final report stays served after the run, for the pages' last poll


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_address(text: str) -> Address:
    """`PORT`, `:PORT`, `HOST`, `HOST:PORT` or `[V6]:PORT`; the host defaults to 127.0.0.1."""
    text = text.strip()
    host, port = DEFAULT_HOST, str(DEFAULT_PORT)
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        host, port = inside, rest.removeprefix(":") or port
    elif text.count(":") == 1:
        h, port = text.split(":")
        host = h or host
    elif text.isdigit():
        port = text
    elif text:
        host = text
    if host == "localhost":
        host = DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--serve {text!r}: the port must be a number from 0 to 65535", "e.g. --serve :8716")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"--serve {text!r}: {host!r} is not an IP address", "give an address (127.0.0.1, ::1, 0.0.0.0)"
        ) from None
    return Address(host, int(port))


@dataclass(frozen=True)
class Snapshot:
    seq: int
    final: bool
    page: bytes
    fragment: bytes


class LivePage:
    """Binds at once (a busy port fails before anything is started), serves from a thread."""

    def __init__(self, address: Address, scenario: str, linger: float = LINGER) -> None:
        self.linger = linger
        self.scenario = scenario
        self.render_s: list[float] = []
        self.error = ""  # the first snapshot that could not be rendered
        waiting = (
            '<main id="report"><p>The run is starting: targets, probes and load come up first.</p></main>'
        )
        page = html.page(f"chaoslab {scenario}: starting", waiting, script=html.asset("live.js"))
        self.snapshot = Snapshot(0, False, page.encode(), waiting.encode())
        handler = type("Handler", (_Handler,), {"page": self})
        server_class = _Server6 if ":" in address.host else ThreadingHTTPServer
        try:
            self.server = server_class((address.host, address.port), handler)
        except OSError as exc:
            raise UsageError(
                f"--serve: cannot listen on {address.host}:{address.port}: {exc.strerror}",
                "choose another port, or :0 for a free one",
            ) from None
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.address = Address(str(host), int(port))
        self.loopback = self.address.loopback
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="live-page", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"http://{host}:{self.address.port}/"

    def follow(self, ctx: RunContext) -> None:
        ctx.events.subscribe("progress", self._on_progress)

    def _on_progress(self, report: Report, status: LiveStatus) -> None:
        # Called in the run loop: a page that cannot be drawn must not end the run. The last good
        # snapshot stays served and the first error is said at the end (stats()).
        try:
            self._publish(report, status)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    def _publish(self, report: Report, status: LiveStatus) -> None:
        start = time.perf_counter()
        seq = self.snapshot.seq + 1
        main = html.report_main(report, status)
        page = html.live_page(report, status, seq, main)
        self.snapshot = Snapshot(seq, status.final, page.encode(), main.encode())
        self.render_s.append(time.perf_counter() - start)

    def stats(self) -> str:
        """How many snapshots the run loop rendered, and what they cost it."""
        times = sorted(self.render_s)
        failed = f"; a snapshot failed to render ({self.error})" if self.error else ""
        if not times:
            return "no snapshots rendered" + failed
        return (
            f"{len(times)} snapshots rendered in the run loop, "
            f"median {times[len(times) // 2] * 1000:.1f} ms, "
            f"max {times[-1] * 1000:.1f} ms, {len(self.snapshot.page) / 1000:.0f} kB each{failed}"
        )

    def finish(self, report: Report, note: str = "") -> None:
        """The run's final report, with its verdicts: the pages stop polling once they have it."""
        status = LiveStatus(time.time(), "", 0.0, 0.0, [], final=True, note=note)
        self._on_progress(report, status)

    def close(self, linger: bool = False) -> None:
        if linger:
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(self.linger)
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    page: LivePage
    server_version = "chaoslab"

    def do_GET(self) -> None:
        snap = self.page.snapshot
        path = self.path.split("?", 1)[0]
        if path == "/":
            body, ctype = snap.page, "text/html; charset=utf-8"
        elif path == "/fragment":
            body, ctype = snap.fragment, "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Chaoslab-Seq", str(snap.seq))
        self.send_header("X-Chaoslab-Final", "1" if snap.final else "0")
        self.end_headers()
        with contextlib.suppress(OSError):  # a browser that went away
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the run's own output stays readable
