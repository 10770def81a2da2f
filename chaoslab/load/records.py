"""Per-request records from the load generator, and their per-phase summary.

Each Locust process writes its records to its own file, a stream of binary entries, each
led by its kind:
  0  a request: due, sent and end time (epoch s, doubles), status, the request's index in
     the load's mix, its error's number (0: none) and whether its user was idle;
  1  an error's text (UTF-8), numbered 1, 2, ... in the order they come, written before
     the first request that has it;
  2  a user is connected and waits for t0;
  3  the parts of the next request's time (HTTP): connect, TLS handshake, writing the request
     and waiting for the response's head, in seconds (floats); the rest of its time from
     sent to end is receiving the response.
Packing a request is a fraction of the cost of formatting its times as text, and the
times keep every bit the clock gave.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from chaoslab.hist import FineHistogram

LATE_TOLERANCE = 0.010  # a request sent this much after its due time counts as late

REQUEST = struct.Struct("<BdddHHHB")  # kind 0, due, sent, end, status, mix index, error, idle
ERROR = struct.Struct("<BH")  # kind 1, the text's length in bytes; the text follows
READY = b"\x02"
SPLIT = struct.Struct("<Bffff")  # kind 3, connect, tls, send, wait (s)
SPLIT_PARTS = struct.Struct("<ffff")  # the same, past its kind
PARTS = ("late", "connect", "tls", "send", "wait", "receive")  # a request's time, in order


@dataclass(frozen=True, slots=True)
class Request:
    due: float  # epoch seconds the request was scheduled for
    sent: float
    end: float
    status: int
    name: str
    error: str
    # The user was waiting for the due time (open model), so a late send is the
    # generator's own delay, not every user being busy with a slow target.
    idle: bool = True
    # connect, TLS handshake, send, wait for the response's head (s), when the client timed
    # them: the entry's 16 bytes as read (a third of a tuple's memory), unpacked by parts()
    split: bytes | None = None

    def parts(self) -> tuple[float, float, float, float, float, float] | None:
        """The request's time in PARTS, adding up to its latency; None when not timed."""
        if self.split is None:
            return None
        connect, tls, send, wait = SPLIT_PARTS.unpack(self.split)
        return (self.late, connect, tls, send, wait, self.end - self.sent - connect - tls - send - wait)

    @property
    def latency(self) -> float:
        """From due time to response: includes any time the generator sent it late."""
        return self.end - self.due

    @property
    def late(self) -> float:
        return self.sent - self.due

    @property
    def is_late(self) -> bool:
        return self.late > LATE_TOLERANCE

    @property
    def generator_late(self) -> bool:
        return self.idle and self.is_late

    @property
    def ok(self) -> bool:
        return not self.error


def error_entry(error: str) -> bytes:
    text = error.encode()[:0xFFFF]
    return ERROR.pack(1, len(text)) + text


class RecordStream:
    """A records file read as it grows: feed it what was appended, get the requests that
    are now complete (an entry cut short waits for the rest)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names  # the load's mix, in order
        self.errors = [""]
        self.ready = 0  # users that said they were ready
        self._rest = b""
        self._split: bytes | None = None  # read, for the next request

    def feed(self, data: bytes) -> list[Request]:
        buf = self._rest + data if self._rest else data
        out: list[Request] = []
        names, errors, size, unpack = self.names, self.errors, REQUEST.size, REQUEST.unpack_from
        split = self._split
        i, n = 0, len(buf)
        while i < n:
            kind = buf[i]
            if kind == 0:
                if i + size > n:
                    break
                _, due, sent, end, status, name, error, idle = unpack(buf, i)
                out.append(Request(due, sent, end, status, names[name], errors[error], bool(idle), split))
                split = None
                i += size
            elif kind == 3:
                if i + SPLIT.size > n:
                    break
                split = bytes(buf[i + 1 : i + SPLIT.size])
                i += SPLIT.size
            elif kind == 1:
                if i + ERROR.size > n:
                    break
                length = ERROR.unpack_from(buf, i)[1]
                if i + ERROR.size + length > n:
                    break
                errors.append(buf[i + ERROR.size : i + ERROR.size + length].decode(errors="replace"))
                i += ERROR.size + length
            elif kind == 2:
                self.ready += 1
                i += 1
            else:
                raise ValueError(f"not a records file: entry kind {kind} at byte {i}")
        self._rest, self._split = buf[i:], split
        return out


def read_records(path: Path, names: list[str] | None = None) -> list[Request]:
    """Every complete request in a records file; the mix's names by default from the
    load.json beside it (the run's work directory)."""
    if names is None:
        config = json.loads((path.parent / "load.json").read_text())
        names = [r["name"] for r in config["requests"]]
    return RecordStream(names).feed(path.read_bytes())


def quantile(sorted_values: list[float], q: float) -> float:
    """Exact quantile of sorted data (linear interpolation between closest ranks)."""
    if not sorted_values:
        return 0.0
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_histogram(requests: list[Request]) -> FineHistogram:
    return FineHistogram.of(int(r.latency * 1e9) for r in requests if r.ok)
