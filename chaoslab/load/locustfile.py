"""Locust users for chaoslab: open (arrival-rate) and closed models, HTTP, HTTPS and gRPC.

Runs only inside Locust processes. Configuration comes as JSON in the file named by
$CHAOSLAB_LOAD_CONFIG; $CHAOSLAB_ROLE is `local` (one process), `master` or `worker`, and
$CHAOSLAB_WORKER is this worker's index (of `workers`).

Start: each user opens its connections (and TLS sessions) with untimed requests, writes a
`ready` line, then waits for the run to write t0 into the `go` file. So the first
scheduled request never pays for a connection the baseline would not.

Open model: arrivals are due at the profile's exact times (chaoslab/load/schedule.py);
worker i of n takes arrivals i, i+n, ... The users of a process share its arrivals (one
gevent hub: no locking needed) and bound the requests in flight. A request's latency runs
from its due time, so a stalled target cannot hide behind a generator that waited for it
(coordinated omission): a request sent late carries its lateness. `idle` says whether the
user was waiting for the request's due time; a request sent late by an idle user was
late because the generator itself was slow, not because every user was busy.

Closed model: each user sends, waits for the response, thinks, and sends again.

Output: one TSV line per request in this worker's records file:
due, sent, end (epoch s), status, name, error, idle.
"""

import json
import os
import random
import socket
import time

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from geventhttpclient import connectionpool as _connectionpool
from locust import FastHttpUser, LoadTestShape, events, task
from locust.exception import StopUser

from chaoslab.load.schedule import Profile
from chaoslab.load.workpb import work_pb2

# grpcio's own threads must yield to gevent, or a blocking call stalls every user.
grpc_gevent.init_gevent()

# Every HTTP connection with TCP_NODELAY, as curl, browsers and Go's net/http open theirs:
# without it a new TLS connection's request waited for the server's delayed ACK of the
# handshake's last flight (Nagle), about 40 ms per new connection here.
_tcp_socket = _connectionpool.ConnectionPool._create_tcp_socket


def _nodelay_socket(self, family, socktype, protocol):
    sock = _tcp_socket(self, family, socktype, protocol)
    if family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


_connectionpool.ConnectionPool._create_tcp_socket = _nodelay_socket

with open(os.environ["CHAOSLAB_LOAD_CONFIG"]) as _fh:
    CONFIG = json.load(_fh)
ROLE = os.environ.get("CHAOSLAB_ROLE", "local")
WORKER = int(os.environ.get("CHAOSLAB_WORKER", "0"))
WORKERS = int(CONFIG["workers"])
OPEN = CONFIG["model"] == "open"
DURATION = float(CONFIG["duration"])
TIMEOUT = float(CONFIG["timeout"])
THINK = float(CONFIG.get("think", 0.0))
MAX_REQUESTS = int(CONFIG["max_requests"])  # per worker: every load loop is bounded
REQUESTS = CONFIG["requests"]
WEIGHTS = [r["weight"] for r in REQUESTS]
PROFILE = Profile(CONFIG["start"], [tuple(s) for s in CONFIG["stages"]])


def _pem(path):
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()


CA_PEM = {base: _pem(path) for base, path in CONFIG["ca"].items()}  # None: not verified


class Run:
    """This process's view of the run: t0, its arrivals, its records file."""

    def __init__(self):
        self.t0 = None
        self.sent = 0
        self.out = None
        self._arrivals = PROFILE.arrivals(WORKER, WORKERS)
        if ROLE != "master":
            # Open for the whole life of the process; flushed by _flusher and on quit.
            self.out = open(CONFIG["records"].format(worker=WORKER), "a", buffering=1 << 16)  # noqa: SIM115

    def ready(self):
        self.out.write("ready\n")
        self.out.flush()

    def poll_t0(self):
        """t0 once the run has written it, else None."""
        if self.t0 is None:
            try:
                with open(CONFIG["go"]) as fh:
                    self.t0 = float(fh.read())
            except (OSError, ValueError):
                pass
        return self.t0

    def wait_t0(self):
        while self.poll_t0() is None:
            gevent.sleep(0.02)
        return self.t0

    def next_due(self):
        """The next arrival's due time (epoch s), or None when the run is over."""
        if self.sent >= MAX_REQUESTS:
            return None
        offset = next(self._arrivals)
        if offset >= DURATION:
            return None
        self.sent += 1
        return self.t0 + offset

    def record(self, due, sent, end, status, name, error, idle):
        self.out.write(f"{due:.6f}\t{sent:.6f}\t{end:.6f}\t{status}\t{name}\t{error}\t{int(idle)}\n")


RUN = Run()


def _flusher():
    while True:
        gevent.sleep(0.2)
        RUN.out.flush()


@events.test_start.add_listener
def _on_start(environment, **_kw):
    if RUN.out is not None:
        gevent.spawn(_flusher)


@events.quitting.add_listener
def _on_quit(environment, **_kw):
    if RUN.out is not None:
        RUN.out.flush()


def _grpc_error(exc):
    code = exc.code() if hasattr(exc, "code") else None
    return f"grpc-{code.name}" if code is not None else type(exc).__name__


class ChaoslabUser(FastHttpUser):
    # The schedule (open) or the think time (closed) paces requests, not Locust.
    def wait_time(self):
        return 0

    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT
    host = CONFIG["host"]  # the HTTP client's default; every request names its full URL

    def on_start(self):
        self.channels = {}
        self.stubs = {}
        for base in sorted({r["base"] for r in REQUESTS}):
            self._connect(base)
        RUN.ready()
        RUN.wait_t0()
        if OPEN:
            return
        # Closed model: spread the users' first requests over one think time (or start together).
        start = RUN.t0 + (random.random() * THINK)
        gevent.sleep(max(start - time.time(), 0))

    def on_stop(self):
        for ch in self.channels.values():
            ch.close()

    def _connect(self, base):
        """Open this user's connection to one (protocol, target), untimed."""
        url = CONFIG["urls"][base]
        if base.startswith("grpc"):
            # A local subchannel pool: each user has its own HTTP/2 connection, like an HTTP user.
            ch = grpc.secure_channel(
                url,
                grpc.ssl_channel_credentials(root_certificates=CA_PEM[base]),
                options=[("grpc.use_local_subchannel_pool", 1)],
            )
            self.channels[base] = ch
            self.stubs[base] = {
                "Do": ch.unary_unary(
                    "/chaoslab.work.v1.Work/Do",
                    request_serializer=work_pb2.WorkRequest.SerializeToString,
                    response_deserializer=work_pb2.WorkReply.FromString,
                ),
                "Stream": ch.unary_stream(
                    "/chaoslab.work.v1.Work/Stream",
                    request_serializer=work_pb2.WorkRequest.SerializeToString,
                    response_deserializer=work_pb2.WorkReply.FromString,
                ),
            }
            for _ in range(50):
                try:
                    self.stubs[base]["Do"](work_pb2.WorkRequest(work=0), timeout=2)
                    return
                except grpc.RpcError:
                    gevent.sleep(0.1)
            return
        for _ in range(50):
            try:
                with self.client.get(url + CONFIG["warmup"][base], name="warmup", catch_response=True) as r:
                    if r.status_code:
                        r.success()
                        return
            except Exception:
                pass
            gevent.sleep(0.1)

    @task
    def fire(self):
        idle = True
        if OPEN:
            due = RUN.next_due()
            if due is None:
                raise StopUser()
            wait = due - time.time()
            idle = wait > 0
            if idle:
                gevent.sleep(wait)
        else:
            if time.time() >= RUN.t0 + DURATION or RUN.sent >= MAX_REQUESTS:
                raise StopUser()
            RUN.sent += 1
            due = time.time()
        req = random.choices(REQUESTS, WEIGHTS)[0]
        sent = time.time()
        if req["protocol"] == "grpc":
            status, error = self._grpc(req, sent)
        else:
            status, error = self._http(req)
        RUN.record(due, sent, time.time(), status, req["name"], error, idle)
        if THINK > 0:
            gevent.sleep(THINK)

    def _http(self, req):
        url = CONFIG["urls"][req["base"]] + req["path"]
        status, error = 0, ""
        try:
            with self.client.request(
                req["method"],
                url,
                name=req["name"],
                headers=req["headers"] or None,
                data=req["body"] or None,
                catch_response=True,
            ) as resp:
                status = resp.status_code or 0
                if status != req["status"]:
                    error = (
                        f"http-{status}"
                        if status
                        else type(resp.error).__name__
                        if resp.error
                        else "no-response"
                    )
                    resp.failure(error)
                else:
                    resp.success()
        except Exception as exc:
            error = type(exc).__name__
        return status, error

    def _grpc(self, req, sent):
        msg = work_pb2.WorkRequest(work=req["work"], messages=req["messages"])
        stub = self.stubs[req["base"]][req["rpc"]]
        error, exc = "", None
        try:
            if req["rpc"] == "Stream":
                got = sum(1 for _ in stub(msg, timeout=TIMEOUT))
                if got != req["messages"]:
                    error = "grpc-short-stream"
            else:
                stub(msg, timeout=TIMEOUT)
        except grpc.RpcError as e:
            error, exc = _grpc_error(e), e
        events.request.fire(
            request_type="grpc",
            name=req["name"],
            response_time=(time.time() - sent) * 1000,
            response_length=0,
            exception=exc,
            context={},
        )
        return (0 if error else 200), error


if not OPEN and CONFIG["stages"]:

    class UserStages(LoadTestShape):
        """Closed model with stages: the user count follows the profile from t0."""

        def tick(self):
            t0 = RUN.poll_t0()
            if t0 is None:
                return (max(int(CONFIG["start"]), WORKERS), CONFIG["spawn_rate"])
            elapsed = time.time() - t0
            if elapsed > DURATION:
                return None
            return (max(round(PROFILE.value_at(elapsed)), WORKERS), CONFIG["spawn_rate"])
