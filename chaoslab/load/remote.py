"""Locust workers on other hosts: how one joins a run, and what travels over Locust's own
master/worker connection (ZeroMQ), the only connection a remote worker has to the run.

Runs inside Locust processes only (gevent), imported by chaoslab/load/locustfile.py.

Joining (`join`, in a remote worker as it imports the locustfile, before Locust's worker
runner connects, as Locust's own download of the locustfile from the master does): a
temporary client of the master's port asks the master's time CLOCK_ROUNDS times, and the
answer with the shortest round trip gives this host's clock offset against the run's, as NTP
takes it (the midpoint of the question and the answer here, less the master's time then:
right to within half that round trip). It then asks to join, and gets its worker index, the
load's configuration and the files the configuration names (CA certificates, gRPC descriptor
sets), which it writes to a directory of its own.

During the run (`serve` on the master, `Shipper` on a remote worker):
- the master announces t0 to every worker once the run has written it;
- a remote worker sends its records to the master every 0.2 s and at its end; the master
  appends them to that worker's records file in the run's directory, which the run reads as
  it reads a local worker's;
- a remote worker reads the run's clock: its own less its offset. Due times, phase edges and
  the records' times are so on one clock, and a latency, a difference of two readings on one
  host, owes nothing to the offset: an error in it moves a request across a phase edge by that
  error at most.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import gevent
import gevent.lock
from locust.rpc import zmqrpc
from locust.rpc.protocol import Message as _Message

Message: Any = _Message  # locust's RPC is untyped

CLOCK_ROUNDS = 8
NO_RUN, REFUSED = 10, 11  # exit codes of a worker that found no run, or was refused a place
ANSWER_WAIT = 1.0  # seconds for one answer of the master before asking again
DRAIN_WAIT = 0.05  # for the answers queued behind it
SHIP_EVERY = 0.2
FINISH_WAIT = 5.0  # seconds a remote worker waits for its requests in flight at the run's end


def split_address(text: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` or `[V6]:PORT`."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _recv(client: Any, timeout: float) -> Any:
    msg = None
    with gevent.Timeout(timeout, False):
        msg = client.recv()
    return msg


def join(master: str, wait: float, clock: Callable[[], float] = time.time) -> tuple[str, int, float, float]:
    """Join the run whose Locust master listens at `master`: (configuration file, worker index,
    clock offset s, round trip s), the offset of `clock` (this host's) against the master's.
    Exits the process with NO_RUN when no master answers in `wait` seconds, REFUSED when the
    run has no place left, each with a message."""
    host, port = split_address(master)
    ident = f"{socket.gethostname()}_chaoslab_join_{uuid.uuid4().hex}"
    client: Any = None
    try:
        deadline = time.monotonic() + wait
        # Until the master answers, each question goes on a new connection: one asked before it
        # listened would wait in the old connection's queue, and a long wait would fill it.
        # Answers are matched to questions by number, and one that took longer than a question's
        # time (asked before the master listened) is left out.
        samples: list[tuple[float, float]] = []
        asked: dict[int, float] = {}
        seq = 0
        while len(samples) < CLOCK_ROUNDS:
            if time.monotonic() > deadline:
                _leave(NO_RUN, f"no run's Locust master answered at {master} in {wait:g}s")
            if client is None or not samples:
                if client is not None:
                    client.close(linger=0)
                client = zmqrpc.Client(host, port, ident)  # type: ignore[no-untyped-call]
                asked.clear()
            seq += 1
            asked[seq] = clock()
            client.send(Message("chaoslab_time", {"seq": seq}, ident))
            msg = _recv(client, ANSWER_WAIT)
            while msg is not None:
                t2 = clock()
                if msg.type == "chaoslab_time" and msg.data.get("seq") in asked:
                    t1 = asked.pop(msg.data["seq"])
                    if t2 - t1 < ANSWER_WAIT:  # asked of a master that was listening
                        samples.append((t2 - t1, (t1 + t2) / 2 - msg.data["t"]))
                msg = _recv(client, DRAIN_WAIT)
        rtt, offset = min(samples)
        hello = {"id": ident, "host": socket.gethostname(), "offset": offset, "rtt": rtt}
        client.send(Message("chaoslab_join", hello, ident))
        msg = None
        while msg is None or msg.type != "chaoslab_config":
            msg = _recv(client, 10.0)
            if msg is None:
                _leave(NO_RUN, f"the Locust master at {master} did not answer its join")
        if "error" in msg.data:
            _leave(REFUSED, f"the run at {master} refused it: {msg.data['error']}")
    finally:
        if client is not None:
            client.close(linger=0)
    return _write_config(msg.data), int(msg.data["index"]), offset, rtt


def _leave(code: int, message: str) -> NoReturn:
    sys.stderr.write(f"chaoslab worker: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _write_config(data: dict[str, Any]) -> str:
    """The run's configuration with every file it names written here, and its own records and
    t0 files; the path of the configuration file."""
    given = os.environ.get("CHAOSLAB_WORKER_DIR")  # `chaoslab worker` removes it after the run
    d = Path(given) if given else Path(tempfile.mkdtemp(prefix="chaoslab-worker-"))
    config, files = data["config"], data["files"]
    names: dict[str, str] = {}
    for i, (path, content) in enumerate(sorted(files.items())):
        local = d / f"file-{i}{Path(path).suffix}"
        local.write_bytes(content)
        names[path] = str(local)
    config["ca"] = {base: names.get(path) if path else None for base, path in config["ca"].items()}
    for r in config["requests"]:
        if r.get("grpc"):
            r["grpc"]["descriptors"] = names[r["grpc"]["descriptors"]]
    config["records"] = str(d / "requests-{worker}.bin")
    config["go"] = str(d / "load-t0")
    out = d / "load.json"
    out.write_text(json.dumps(config))
    return str(out)


def _files(config: dict[str, Any]) -> dict[str, bytes]:
    """The files a configuration names, by path, with their contents."""
    paths = [p for p in config["ca"].values() if p]
    paths += [r["grpc"]["descriptors"] for r in config["requests"] if r.get("grpc")]
    return {p: Path(p).read_bytes() for p in sorted(set(paths))}


def serve(environment: Any, config: dict[str, Any]) -> None:
    """On the run's Locust master: answer the remote workers' clock questions and joins, take
    in their records, announce t0, and at the end have every remote worker send what it has."""
    runner = environment.runner
    free = list(range(int(config["local_workers"]), int(config["workers"])))
    joined: dict[str, int] = {}  # join id -> worker index
    written: dict[int, int] = {}  # worker index -> bytes of its records written here
    places = int(config["workers"]) - int(config["local_workers"])
    log = Path(config["workers_log"])

    def note(entry: dict[str, Any]) -> None:
        with log.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def on_time(environment: Any, msg: Any, **_kw: Any) -> None:
        answer = {"seq": msg.data.get("seq"), "t": time.time()}
        runner.send_message("chaoslab_time", answer, client_id=msg.node_id)

    def on_join(environment: Any, msg: Any, **_kw: Any) -> None:
        ident = msg.data.get("id", msg.node_id)
        if ident not in joined:
            if not free:
                error = f"every one of its {places} remote places is taken"
                runner.send_message("chaoslab_config", {"error": error}, client_id=msg.node_id)
                return
            joined[ident] = index = free.pop(0)
            entry = {k: msg.data.get(k) for k in ("host", "offset", "rtt")}
            note({"index": index, **entry, "joined": time.time()})
        data = {"index": joined[ident], "config": config, "files": _files(config)}
        runner.send_message("chaoslab_config", data, client_id=msg.node_id)

    def on_records(environment: Any, msg: Any, **_kw: Any) -> None:
        """Each chunk says where in the worker's file it starts: a chunk sent twice is written
        once, and a chunk after a gap is not written (the entries after a gap cannot be read),
        the gap noted for the run to report."""
        index, offset, data = int(msg.data["worker"]), int(msg.data["offset"]), msg.data["data"]
        size = written.get(index, 0)
        if offset > size:
            note({"index": index, "gap": offset - size})
            return
        fresh = data[size - offset :]
        if fresh:
            with open(config["records"].format(worker=index), "ab") as fh:
                fh.write(fresh)
            written[index] = size + len(fresh)

    def on_finished(environment: Any, msg: Any, **_kw: Any) -> None:
        # after its last records on the same connection: they are written by now
        note({"index": int(msg.data["worker"]), "finished": written.get(int(msg.data["worker"]), 0)})

    runner.register_message("chaoslab_time", on_time)
    runner.register_message("chaoslab_join", on_join)
    runner.register_message("chaoslab_records", on_records)
    runner.register_message("chaoslab_finished", on_finished)
    gevent.spawn(_announce, runner, config["go"], config["finish"])


def _announce(runner: Any, go: str, finish: str) -> None:
    """t0 to every worker once the run has written it, again every second (a worker that was
    reconnecting missed it); then, once the run asks for it, the end to every worker, again
    every half second until the run stops this process."""
    t0 = None
    while t0 is None:
        try:
            with open(go) as fh:
                t0 = float(fh.read())
        except (OSError, ValueError):
            gevent.sleep(0.02)
    while not os.path.exists(finish):
        runner.send_message("chaoslab_go", {"t0": t0})
        for _ in range(50):
            if os.path.exists(finish):
                break
            gevent.sleep(0.02)
    while True:
        runner.send_message("chaoslab_finish", None)
        gevent.sleep(0.5)


class Shipper:
    """On a remote worker: its records file's new bytes to the master, every SHIP_EVERY and at
    its end, each chunk with its offset in the file; t0 from the master into its own t0 file;
    at the run's end, once its requests in flight are answered (`busy`, FINISH_WAIT at most),
    what is left, then word that it has sent everything."""

    def __init__(
        self,
        environment: Any,
        worker: int,
        records: str,
        go: str,
        busy: Callable[[], int],
        flush: Callable[[], None],
    ) -> None:
        self.runner = environment.runner
        self.worker = worker
        self.path = records
        self.go = go
        self.busy = busy
        self.flush = flush
        self.sent = 0
        self.finished = False
        self.lock = gevent.lock.Semaphore()
        self.runner.register_message("chaoslab_go", self._on_go)
        self.runner.register_message("chaoslab_finish", self._on_finish)

    def _on_go(self, environment: Any, msg: Any, **_kw: Any) -> None:
        if os.path.exists(self.go):
            return
        tmp = self.go + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{float(msg.data['t0']):.6f}")
        os.replace(tmp, self.go)

    def _on_finish(self, environment: Any, msg: Any, **_kw: Any) -> None:
        if not self.finished:
            self.finished = True
            gevent.spawn(self._finish)

    def _finish(self) -> None:
        deadline = time.monotonic() + FINISH_WAIT
        while self.busy() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self.flush()
        self.ship()
        self.runner.send_message("chaoslab_finished", {"worker": self.worker})

    def ship(self) -> None:
        with self.lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self.sent)
                    chunk = fh.read()
            except OSError:
                return
            if chunk:
                self.runner.send_message(
                    "chaoslab_records", {"worker": self.worker, "offset": self.sent, "data": chunk}
                )
                self.sent += len(chunk)

    def run(self) -> None:
        while True:
            gevent.sleep(SHIP_EVERY)
            try:
                self.flush()
                self.ship()
            except Exception as exc:  # a send that failed is sent again from the same offset
                logging.warning("chaoslab: could not send records to the master: %s", exc)
