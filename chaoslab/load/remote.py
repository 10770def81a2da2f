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
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust.rpc import zmqrpc
from locust.rpc.protocol import Message as _Message

Message: Any = _Message  # locust's RPC is untyped

CLOCK_ROUNDS = 8
ANSWER_WAIT = 1.0  # seconds for one answer of the master before asking again
DRAIN_WAIT = 0.05  # for the answers queued behind it
SHIP_EVERY = 0.2


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
    Exits the process with a message when no master answers in `wait` seconds or the run has no
    place left."""
    host, port = split_address(master)
    ident = f"{socket.gethostname()}_chaoslab_join_{uuid.uuid4().hex}"
    client: Any = zmqrpc.Client(host, port, ident)  # type: ignore[no-untyped-call]
    try:
        deadline = time.monotonic() + wait
        # Questions asked before the master listened wait in the connection's queue and are all
        # answered once it does: each answer is matched to its question by number, and those
        # that waited longer than a question's time (asked before it listened) are left out.
        samples: list[tuple[float, float]] = []
        asked: dict[int, float] = {}
        seq = 0
        while len(samples) < CLOCK_ROUNDS:
            if time.monotonic() > deadline:
                raise SystemExit(f"chaoslab worker: no run's Locust master answered at {master} in {wait:g}s")
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
                raise SystemExit(f"chaoslab worker: the Locust master at {master} did not answer its join")
        if "error" in msg.data:
            raise SystemExit(f"chaoslab worker: the run at {master} refused it: {msg.data['error']}")
    finally:
        client.close(linger=0)
    return _write_config(msg.data), int(msg.data["index"]), offset, rtt


def _write_config(data: dict[str, Any]) -> str:
    """The run's configuration with every file it names written here, and its own records and
    t0 files; the path of the configuration file."""
    d = Path(tempfile.mkdtemp(prefix="chaoslab-worker-"))
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
    in their records, announce t0."""
    runner = environment.runner
    free = list(range(int(config["local_workers"]), int(config["workers"])))
    joined: dict[str, int] = {}  # join id -> worker index
    places = int(config["workers"]) - int(config["local_workers"])
    log = Path(config["workers_log"])

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
            with log.open("a") as fh:
                fh.write(json.dumps({"index": index, **entry, "joined": time.time()}) + "\n")
        data = {"index": joined[ident], "config": config, "files": _files(config)}
        runner.send_message("chaoslab_config", data, client_id=msg.node_id)

    def on_records(environment: Any, msg: Any, **_kw: Any) -> None:
        index = int(msg.data["worker"])
        with open(config["records"].format(worker=index), "ab") as fh:
            fh.write(msg.data["data"])

    runner.register_message("chaoslab_time", on_time)
    runner.register_message("chaoslab_join", on_join)
    runner.register_message("chaoslab_records", on_records)
    gevent.spawn(_announce_t0, runner, config["go"])


def _announce_t0(runner: Any, path: str) -> None:
    while True:
        try:
            with open(path) as fh:
                t0 = float(fh.read())
            break
        except (OSError, ValueError):
            gevent.sleep(0.02)
    runner.send_message("chaoslab_go", {"t0": t0})


class Shipper:
    """On a remote worker: its records file's new bytes to the master, every SHIP_EVERY and at
    its end; t0 from the master into its own t0 file."""

    def __init__(self, environment: Any, worker: int, records: str, go: str) -> None:
        self.runner = environment.runner
        self.worker = worker
        self.path = records
        self.go = go
        self.sent = 0
        self.runner.register_message("chaoslab_go", self._on_go)

    def _on_go(self, environment: Any, msg: Any, **_kw: Any) -> None:
        tmp = self.go + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{float(msg.data['t0']):.6f}")
        os.replace(tmp, self.go)

    def ship(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.sent)
                chunk = fh.read()
        except OSError:
            return
        if chunk:
            self.runner.send_message("chaoslab_records", {"worker": self.worker, "data": chunk})
            self.sent += len(chunk)

    def run(self, flush: Callable[[], None]) -> None:
        while True:
            gevent.sleep(SHIP_EVERY)
            flush()
            self.ship()
