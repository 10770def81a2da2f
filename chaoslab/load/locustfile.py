"""Locust users for chaoslab: open (arrival-rate) and closed models; HTTP(S), gRPC and tcp.

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

Protocols: HTTP/1.1 and HTTPS on each user's kept connection, each request sent as bytes built
once and its response read by a few bytes operations (chaoslab/load/http1.py); a redirect it
does not expect is followed the same way, as Locust's client follows one. gRPC (`grpc` over
TLS, verified with the target's CA, or `grpc-plain`) through grpcio's generic calls, with no generated
code: the run has compiled the protos (or asked the server by reflection) into descriptor
sets, from which this process builds each request once (chaoslab/load/protos.py); tcp
through gevent's sockets: bytes sent, a reply read until `expect`, `read` bytes, or the
server's close, on the user's kept connection or a new one.

Output: one binary entry per request in this worker's records file (chaoslab/load/records.py):
due, sent, end (epoch s), status, the request, its error, idle; packed as it ends, deflated
and written in 64 KiB blocks, flushed at least every 0.2 s for the run's tail.
"""

import atexit
import contextlib
import errno
import itertools
import json
import os
import random
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import gevent
from gevent import ssl as _ssl
from locust import LoadTestShape, User, events, task
from locust.exception import StopUser

from chaoslab.load import http1
from chaoslab.load import remote as _remote
from chaoslab.load.clock import sleeper
from chaoslab.load.records import READY, REQUEST, SPLIT, RecordWriter, error_entry
from chaoslab.load.schedule import Profile

_sleep = sleeper()  # to a due time, to the tens of microseconds (chaoslab/load/clock.py)
_create_connection = gevent.socket.create_connection
_read = http1.read

ROLE = os.environ.get("CHAOSLAB_ROLE", "local")
# A remote worker (`chaoslab worker`) has no run directory: it joins the run through the
# master's port, and gets its configuration and its index from there (chaoslab/load/remote.py).
# CHAOSLAB_CLOCK_SKEW adds seconds to every reading of this process's clock: a host whose clock
# is off, for the tests of the offset's correction on one machine.
SKEW = float(os.environ.get("CHAOSLAB_CLOCK_SKEW", "0")) if ROLE == "remote" else 0.0
CLOCK_OFFSET = 0.0  # this host's clock less the run's
if ROLE == "remote":
    _config, _index, CLOCK_OFFSET, _rtt = _remote.join(
        os.environ["CHAOSLAB_MASTER"],
        float(os.environ.get("CHAOSLAB_JOIN_WAIT", "600")),
        (lambda: time.time() + SKEW) if SKEW else time.time,
    )
    os.environ["CHAOSLAB_LOAD_CONFIG"] = _config
    os.environ["CHAOSLAB_WORKER"] = str(_index)
if SKEW or CLOCK_OFFSET:

    def _now():
        """The run's clock: this host's, less its offset."""
        return time.time() + SKEW - CLOCK_OFFSET

else:
    _now = time.time

with open(os.environ["CHAOSLAB_LOAD_CONFIG"]) as _fh:
    CONFIG = json.load(_fh)
WORKER = int(os.environ.get("CHAOSLAB_WORKER", "0"))
WORKERS = int(CONFIG["workers"])
OPEN = CONFIG["model"] == "open"
DURATION = float(CONFIG["duration"])
TIMEOUT = float(CONFIG["timeout"])
THINK = float(CONFIG.get("think", 0.0))
MAX_REQUESTS = int(CONFIG["max_requests"])  # per worker: every load loop is bounded
REQUESTS = CONFIG["requests"]
PROFILE = Profile(CONFIG["start"], [tuple(s) for s in CONFIG["stages"]])


def _pem(path):
    if path is None:
        return None
    with open(path, "rb") as fh:
        return fh.read()


CA_PEM = {base: _pem(path) for base, path in CONFIG["ca"].items()}  # None: not verified

if any(r.get("grpc") for r in REQUESTS):
    # Only a mix with gRPC requests loads grpcio and protobuf (about 7,000 more objects for
    # the garbage collector to walk) and turns on grpcio's gevent integration.
    import grpc
    import grpc.experimental.gevent as grpc_gevent

    from chaoslab.load import protos

    # grpcio's own threads must yield to gevent, or a blocking call stalls every user.
    grpc_gevent.init_gevent()


class GrpcMethod:
    """A gRPC request of the mix, ready to send: its path, its message serialized once,
    and its reply's message class, from the run's descriptor set."""

    def __init__(self, call, pools):
        path = call["descriptors"]
        if path not in pools:
            pools[path] = protos.pool_of(protos.read_set(Path(path)))
        method = protos.find_method(pools[path], call["method"])
        self.path = "/" + call["method"]
        self.streaming = call["streaming"]
        self.request = protos.encode(method, call["message"])
        self.reply = protos.message_class(method.output_type).FromString
        self.replies = call["replies"]


class TcpExchange:
    """A tcp request of the mix: bytes to send and how its reply ends."""

    def __init__(self, tcp):
        self.send = bytes.fromhex(tcp["send"])
        self.expect = bytes.fromhex(tcp["expect"])
        self.read = tcp["read"]
        self.keep = tcp["keep"]


_POOLS = {}  # descriptor set file -> its pool, built once per process
GRPC = {r["name"]: GrpcMethod(r["grpc"], _POOLS) for r in REQUESTS if r.get("grpc")}
TCP = {r["name"]: TcpExchange(r["tcp"]) for r in REQUESTS if r.get("tcp")}


class Req:
    """A request of the mix with what sending it needs looked up once: its URL (HTTP), and
    the name of the user's method that sends it."""

    __slots__ = (
        "base", "body", "headers", "index", "method", "name", "path", "send", "split", "status",
        "url", "wire",
    )  # fmt: skip

    def __init__(self, index, r):
        self.index = index  # in the mix: how a record names it
        self.name = r["name"]
        self.base = r["base"]
        self.send = _SENDERS[r["protocol"]]
        # HTTP's client is timed in parts (connect, TLS, ...), when the run reads them
        self.split = self.send == "_http" and bool(CONFIG.get("split"))
        self.path = r.get("path")
        self.method = r.get("method")
        self.headers = r.get("headers") or None
        self.body = r.get("body") or None
        self.status = r.get("status")
        self.url = CONFIG["urls"][self.base] + self.path if self.path is not None else None
        self.wire = Wire(self.url, self.method, self.headers, self.body) if self.send == "_http" else None


class Wire:
    """An HTTP/1.1 request as the bytes it is sent as, built once, and where it goes: sent on
    the user's kept connection to its (host, port, TLS) with no per-request work but the
    send and the response's reading (chaoslab/load/http1.py)."""

    __slots__ = ("data", "host", "key", "method", "port", "server_name", "tls", "url")

    def __init__(self, url, method, headers, body):
        self.url = url
        u = urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise UnsupportedRedirect(f"not an HTTP URL: {url}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        self.key = (self.host, self.port, self.tls)
        self.method = method.upper()
        # SNI only for a name: an address is not one (RFC 6066)
        self.server_name = None if _is_address(self.host) else self.host
        data = body.encode() if isinstance(body, str) else (body or b"")
        fields = {"host": ("Host", u.netloc), "user-agent": ("User-Agent", USER_AGENT)}
        for name, value in (headers or {}).items():
            fields[name.lower()] = (name, value)  # the scenario's own win
        if data or self.method in ("POST", "PUT", "PATCH"):
            fields["content-length"] = ("Content-Length", str(len(data)))
        target = (u.path or "/") + ("?" + u.query if u.query else "")
        head = f"{self.method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.values())
        self.data = (head + "\r\n").encode() + data


class UnsupportedRedirect(Exception):
    """A redirect to somewhere this client does not go (another scheme than HTTP's)."""


class TooManyRedirects(Exception):
    pass


_ERROR_NAMES = {
    TooManyRedirects: "http-too-many-redirects",
    UnsupportedRedirect: "http-redirect-unsupported",
    http1.BadResponse: "http-bad-response",
    http1.ConnectionClosed: "http-closed",
}


def _redirected(req, w, status, location):
    """The request a redirect asks for: to `location` (relative to where `w` went); 303, and
    301/302 of a POST, become a GET without the body, as in Locust's client; another origin
    is not sent the request's Authorization."""
    method = "GET" if status == 303 or (status in (301, 302) and w.method == "POST") else w.method
    body = req.body if method == req.wire.method else None
    url = urljoin(w.url, location)
    to = Wire(url, method, req.headers, body)
    if to.key != w.key and any(k.lower() == "authorization" for k in req.headers or ()):
        to = Wire(url, method, {k: v for k, v in req.headers.items() if k.lower() != "authorization"}, body)
    return to


def _is_address(host):
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


USER_AGENT = "chaoslab"
# As Locust's FastHttpUser (insecure by default): the load does not verify HTTPS certificates.
_TLS = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
_TLS.check_hostname = False
_TLS.verify_mode = _ssl.CERT_NONE
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
MAX_REDIRECTS = 30  # as Locust's FastHttpUser


_SENDERS = {"https": "_http", "http": "_http", "grpc": "_grpc", "grpc-plain": "_grpc", "tcp": "_tcp"}
MIX = [Req(i, r) for i, r in enumerate(REQUESTS)]
_CUM_WEIGHTS = list(itertools.accumulate(r["weight"] for r in REQUESTS))


class Run:
    """This process's view of the run: t0, its arrivals, its records file."""

    def __init__(self):
        self.t0 = None
        self.end = None  # t0 + the run's duration
        self.sent = 0
        self.inflight = 0  # requests sent and not yet recorded
        self.out = None
        self._arrivals = PROFILE.arrivals(WORKER, WORKERS)
        self._errors = {"": 0}  # error text -> its number in the records file
        if ROLE != "master":
            # Open for the whole life of the process; flushed by _flusher and on quit.
            self.out = RecordWriter(CONFIG["records"].format(worker=WORKER))
            self._write = self.out.write

    def busy(self):
        return self.inflight

    def ready(self):
        self.out.write(READY)
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
        self.end = self.t0 + DURATION
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

    def record(self, due, sent, end, status, req, error, idle, marks=None):
        if marks is not None and marks[3]:
            connect, tls, wait, head = marks
            send = max(head - sent - connect - tls - wait, 0.0)
            self._write(_pack_split(3, connect, tls, send, wait))
        number = self._errors.get(error)
        if number is None:
            if len(self._errors) >= MAX_ERRORS:  # numbered in 16 bits: the rest share one text
                error = TOO_MANY_ERRORS
                number = self._errors.get(error)
            if number is None:
                number = self._errors[error] = len(self._errors)
                self._write(error_entry(error))
        self._write(_pack(0, due, sent, end, status & 0xFFFF, req.index, number, idle))


MAX_ERRORS = 0xFFFF - 1  # distinct error texts a records file numbers (u16), the last kept for:
TOO_MANY_ERRORS = "other-error (too many distinct errors to name)"
RUN = Run()
_pack = REQUEST.pack
_pack_split = SPLIT.pack
_choices = random.choices
_ONLY = MIX[0] if len(MIX) == 1 else None  # a mix of one request needs no draw


SHIPPER = None  # a remote worker's: its records to the master, t0 from it


def _flusher():
    while True:
        gevent.sleep(0.2)
        RUN.out.flush()


@events.init.add_listener
def _on_init(environment, **_kw):
    global SHIPPER
    if ROLE == "master" and int(CONFIG.get("local_workers", WORKERS)) < WORKERS:
        _remote.serve(environment, CONFIG)
    elif ROLE == "remote":
        records = CONFIG["records"].format(worker=WORKER)
        SHIPPER = _remote.Shipper(environment, WORKER, records, CONFIG["go"], RUN.busy, RUN.out.flush)
    elif ROLE == "worker":
        # a local worker reads t0 from the run's directory and writes its records there
        for kind in ("chaoslab_go", "chaoslab_finish"):
            environment.runner.register_message(kind, lambda *_a, **_kw: None)


@events.test_start.add_listener
def _on_start(environment, **_kw):
    if SHIPPER is not None:
        gevent.spawn(SHIPPER.run)
    elif RUN.out is not None:
        gevent.spawn(_flusher)


def _flush_all(**_kw):
    if RUN.out is not None:
        RUN.out.flush()
    if SHIPPER is not None:
        SHIPPER.ship()


events.test_stop.add_listener(_flush_all)
# Locust fires `quitting` before it stops the users: requests still in flight are recorded
# after it, and the records' gzip member is finished at the process's exit
events.quitting.add_listener(_flush_all)
if RUN.out is not None:
    atexit.register(RUN.out.finish)


def _grpc_error(exc):
    code = exc.code() if hasattr(exc, "code") else None
    return f"grpc-{code.name}" if code is not None else type(exc).__name__


def _fire(kind, name, sent, error, length=0):
    """Locust's own statistics."""
    events.request.fire(
        request_type=kind,
        name=name,
        response_time=(_now() - sent) * 1000,
        response_length=length,
        exception=RuntimeError(error) if error else None,
        context={},
    )


def _send(sock, data):
    """`sock.sendall(data)`, but one `send` when it takes all the bytes, as it does for a request
    that fits the socket's buffer: gevent's `sendall` reads SO_SNDBUF and the clock first on
    every call, time that lands in the request's latency."""
    n = sock.send(data)
    if n < len(data):
        sock.sendall(memoryview(data)[n:])


def _address(url):
    """(host, port) of a `host:port` or `[v6]:port` address."""
    host, _, port = url.rpartition(":")
    return host.strip("[]"), int(port)


def _exchange(sock, t, deadline):
    """Send a tcp request and read its reply: (error kind or '', whether the server closed)."""
    sock.settimeout(max(deadline - _now(), 0.001))
    sock.sendall(t.send)
    buf, closed = b"", False
    while not (len(buf) >= t.read if t.read else (t.expect and t.expect in buf)):
        left = deadline - _now()
        try:
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(65536)
        except TimeoutError:
            # something else came and nothing more in time: the reply was not the one expected
            return ("tcp-unexpected-reply" if buf and t.expect else "tcp-timeout"), False
        if not chunk:
            closed = True
            break
        buf += chunk
    reply = buf[: t.read] if t.read else buf
    if t.expect and t.expect not in reply:
        return ("tcp-unexpected-reply" if reply else "tcp-closed"), closed
    if t.read and len(reply) < t.read:
        return "tcp-closed", closed
    return "", closed


class ChaoslabUser(User):
    # The schedule (open) or the think time (closed) paces requests, not Locust.
    def wait_time(self):
        return 0

    host = CONFIG["host"]  # shown by Locust; every request names its full URL

    def on_start(self):
        self.channels = {}
        self.calls = {}  # request name -> grpcio's callable on this user's channel
        self.socks = {}  # base -> this user's kept tcp connection
        self.conns = {}  # (host, port, TLS) -> this user's kept HTTP connection
        # The parts of the HTTP request in flight, marked as the client goes, or None when it is
        # not timed in parts: [connect s, TLS handshake s, waits for a response's head s, the
        # last response head read (run clock)]. A request sent again on a new connection adds
        # up its connects, a redirect followed its waits.
        self.marks = None
        # request -> this user's bound method that sends it
        self.senders = {req: getattr(self, req.send) for req in MIX}
        for base in sorted({r["base"] for r in REQUESTS}):
            self._connect(base)
        RUN.ready()
        RUN.wait_t0()
        if OPEN:
            return
        # Closed model: spread the users' first requests over one think time (or start together).
        start = RUN.t0 + (random.random() * THINK)
        gevent.sleep(max(start - _now(), 0))

    def on_stop(self):
        for ch in self.channels.values():
            ch.close()
        for sock in (*self.socks.values(), *self.conns.values()):
            sock.close()

    def _connect(self, base):
        """Open this user's connection to one (protocol, target), untimed."""
        url = CONFIG["urls"][base]
        protocol = base.split(":", 1)[0]
        if protocol.startswith("grpc"):
            self._grpc_channel(base, url, protocol == "grpc")
        elif protocol == "tcp":
            if any(TCP[r["name"]].keep for r in REQUESTS if r["base"] == base):
                # if it cannot connect, its first request tries again and counts the error
                with contextlib.suppress(OSError):
                    self.socks[base] = self._tcp_open(url)
        else:
            self._http_warmup(base, url)

    def _grpc_channel(self, base, url, secure):
        # A local subchannel pool: each user has its own HTTP/2 connection, like an HTTP user.
        options = [("grpc.use_local_subchannel_pool", 1)]
        if secure:
            creds = grpc.ssl_channel_credentials(root_certificates=CA_PEM[base])
            ch = grpc.secure_channel(url, creds, options=options)
        else:
            ch = grpc.insecure_channel(url, options=options)
        self.channels[base] = ch
        for r in REQUESTS:
            if r["base"] == base:
                m = GRPC[r["name"]]
                make = ch.unary_stream if m.streaming else ch.unary_unary
                # the request is sent as the bytes it was serialized to once
                self.calls[r["name"]] = make(m.path, request_serializer=None, response_deserializer=m.reply)
        # Connect (TCP, TLS, HTTP/2) without calling any method of the API; if it cannot,
        # the first requests count what is wrong.
        with contextlib.suppress(grpc.FutureTimeoutError):
            grpc.channel_ready_future(ch).result(timeout=min(TIMEOUT, 10))

    def _http_warmup(self, base, url):
        """Open this user's connection with the untimed request the run chose for it (its
        target's health path, or the first request's)."""
        w = Wire(url + CONFIG["warmup"][base], "GET", None, None)
        for _ in range(50):
            try:
                self._http_exchange(w, None)
                return
            except Exception:
                gevent.sleep(0.1)

    @task
    def fire(self):
        run = RUN
        if OPEN:
            due = run.next_due()
            if due is None:
                raise StopUser()
            wait = due - _now()
            idle = wait > 0
            if idle:
                _sleep(wait)
            sent = _now()
        else:
            # closed: a request is due when the user sends it
            due = sent = _now()
            if sent >= run.end or run.sent >= MAX_REQUESTS:
                raise StopUser()
            run.sent += 1
            idle = True
        req = _ONLY or _choices(MIX, cum_weights=_CUM_WEIGHTS)[0]
        run.inflight += 1
        marks = self.marks = [0.0, 0.0, 0.0, 0.0] if req.split else None
        status, error = self.senders[req](req, sent)
        end = _now()
        run.record(due, sent, end, status, req, error, idle, marks)
        run.inflight -= 1
        if THINK > 0:
            gevent.sleep(THINK)

    def _http(self, req, sent):
        """An HTTP request, and the redirects it does not expect followed as Locust's client
        follows them: on this user's kept connections, its status the last response's."""
        w, m = req.wire, self.marks
        try:
            resp = self._http_exchange(w, m)
            hops = 0
            while (status := resp.status) in _REDIRECTS and status != req.status:
                location = resp.field("location")
                if location is None:
                    break
                if hops == MAX_REDIRECTS:
                    raise TooManyRedirects()
                hops += 1
                w = _redirected(req, w, status, location)
                resp = self._http_exchange(w, m)
        except Exception as exc:
            error = _ERROR_NAMES.get(type(exc)) or type(exc).__name__
            _fire(req.wire.method, req.name, sent, error)
            return 0, error
        error = "" if status == req.status else f"http-{status}"
        _fire(req.wire.method, req.name, sent, error, len(resp.body))
        return status, error

    def _http_exchange(self, w, m):
        """`w` sent on this user's kept connection to its (host, port, TLS), opened if there is
        none, and its response read (chaoslab/load/http1.py). Sent again once on a new
        connection if a kept one turns out closed (the server closed it while idle). The
        connection is kept for the next request unless the response closes it."""
        sock = self.conns.pop(w.key, None)
        try:
            while True:
                kept = sock is not None
                if not kept:
                    sock = self._http_open(w, m)
                try:
                    _send(sock, w.data)
                    if m is not None:
                        written = _now()
                    resp = _read(sock, w.method, _now)
                    if m is not None:
                        m[3] = resp.head_at
                        m[2] += m[3] - written
                    break
                except (http1.ConnectionClosed, BrokenPipeError, ConnectionResetError):
                    # nothing of the response came: a kept connection the server closed
                    sock.close()
                    sock = None
                    if not kept:
                        raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        if resp.close:
            sock.close()
        else:
            self.conns[w.key] = sock
        return resp

    def _http_open(self, w, m):
        """A new connection for `w`: TCP (with TCP_NODELAY, as curl and Go's net/http open
        theirs) and TLS, each timed into the request's marks."""
        t = time.perf_counter()
        try:
            sock = _create_connection((w.host, w.port), timeout=TIMEOUT)
        finally:  # a refused address is connect time too
            if m is not None:
                m[0] += time.perf_counter() - t
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if w.tls:
            t = time.perf_counter()
            try:
                sock = _TLS.wrap_socket(sock, server_hostname=w.server_name)
            except BaseException:
                sock.close()
                raise
            finally:
                if m is not None:
                    m[1] += time.perf_counter() - t
        return sock

    def _grpc(self, req, sent):
        m, call = GRPC[req.name], self.calls[req.name]
        error = ""
        try:
            if m.streaming:
                got = sum(1 for _ in call(m.request, timeout=TIMEOUT))
                if m.replies and got != m.replies:
                    error = "grpc-reply-count"
            else:
                call(m.request, timeout=TIMEOUT)
        except grpc.RpcError as e:
            error = _grpc_error(e)
        _fire("grpc", req.name, sent, error)
        return (0 if error else 200), error

    def _tcp_open(self, url):
        sock = socket.create_connection(_address(url), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _tcp(self, req, sent):
        t, base = TCP[req.name], req.base
        sock = self.socks.pop(base, None) if t.keep else None
        error, closed = "", False
        try:
            if sock is None:
                sock = self._tcp_open(CONFIG["urls"][base])
            error, closed = _exchange(sock, t, sent + TIMEOUT)
        except TimeoutError:
            error = "tcp-timeout"
        except OSError as exc:
            error = "tcp-" + errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        if sock is not None:
            if t.keep and not error and not closed:
                self.socks[base] = sock
            else:
                sock.close()  # a new connection for the next request: this one's state is unknown
        _fire("tcp", req.name, sent, error)
        return (0 if error else 200), error


if not OPEN and CONFIG["stages"]:

    class UserStages(LoadTestShape):
        """Closed model with stages: the user count follows the profile from t0."""

        def tick(self):
            t0 = RUN.poll_t0()
            if t0 is None:
                return (max(int(CONFIG["start"]), WORKERS), CONFIG["spawn_rate"])
            elapsed = _now() - t0
            if elapsed > DURATION:
                return None
            return (max(round(PROFILE.value_at(elapsed)), WORKERS), CONFIG["spawn_rate"])
