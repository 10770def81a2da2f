"""Reading an HTTP response, three ways side by side, on a generator that wakes from idle.

One gevent user sends GET /healthz to the Go service (go-api, plain HTTP on loopback) on one
kept connection, at a fixed rate low enough that the process sleeps between requests (as a
load generator does at rest), and reads each response, in turn, with:
  recv     one `recv` of whatever came (the floor: no parsing at all);
  http1    chaoslab/load/http1.py, what the load's HTTP client reads with;
  gevent   geventhttpclient's HTTPSocketResponse (its C parser), what it read with before.
The three take turns request by request, so the machine's drift hits them alike. Prints
each reader's latency from send to body read, p50 and p99, and its p50 less recv's.

    .venv/bin/python bench/response_read.py [--rate 66] [--requests 3000]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gevent
import gevent.socket
from geventhttpclient.response import HTTPSocketResponse

from chaoslab import build
from chaoslab.load import http1
from chaoslab.load.clock import sleeper
from chaoslab.load.records import quantile
from chaoslab.targets import certs


def _recv(sock: socket.socket) -> None:
    sock.recv(65536)


def _http1(sock: socket.socket) -> None:
    http1.read(sock, "GET")


def _gevent(sock: socket.socket) -> None:
    HTTPSocketResponse(sock, method="GET").read()


READERS = {"recv": _recv, "http1": _http1, "gevent": _gevent}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=66.0, help="requests a second (all readers)")
    ap.add_argument("--requests", type=int, default=3000, help="requests in all, at most 100,000")
    args = ap.parse_args()
    n = max(3, min(args.requests, 100_000))
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        c = certs.make(Path(tmp), ["127.0.0.1"])
        api = subprocess.Popen(
            [str(build.go_service("go-api")), "-addr", f"127.0.0.1:{free_port()}", "-http-addr",
             f"127.0.0.1:{port}", "-cert", str(c.cert), "-key", str(c.key)],
        )  # fmt: skip
        try:
            return run(port, args.rate, n)
        finally:
            api.terminate()
            api.wait(10)


def run(port: int, rate: float, n: int) -> int:
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = gevent.socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                print("go-api did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: chaoslab\r\n\r\n".encode()
    names = list(READERS)
    took: dict[str, list[float]] = {name: [] for name in names}
    sleep = sleeper()

    def user() -> None:
        due = time.monotonic() + 0.2
        for i in range(n):
            due += 1 / rate
            wait = due - time.monotonic()
            if wait > 0:
                sleep(wait)
            name = names[i % len(names)]
            t = time.perf_counter()
            sock.sendall(data)
            READERS[name](sock)
            took[name].append(time.perf_counter() - t)

    gevent.spawn(user).join()
    sock.close()
    floor = quantile(sorted(took["recv"]), 0.5)
    print(f"{n} requests at {rate:g}/s, taking turns; ms from send to body read")
    print(f"{'reader':8s} {'p50':>7s} {'p99':>7s} {'p50 - recv':>11s}")
    for name in names:
        xs = sorted(took[name])
        p50, p99 = quantile(xs, 0.5), quantile(xs, 0.99)
        print(f"{name:8s} {p50 * 1e3:7.3f} {p99 * 1e3:7.3f} {(p50 - floor) * 1e3:+11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
