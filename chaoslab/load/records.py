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

The entries are deflated as they are written, as a gzip stream (zlib level 1, a sync flush
every time the process flushes, so the run's tail can read what has been flushed): about 16
bytes a request at 1,500 requests/s (the entries are 32, 49 with a split), so an hour at
5,000 requests/s is about 290 MB instead of 576 MB, for a few ms of the Locust process's CPU
a second. At low rates the flushes (every 0.2 s) weigh more. `zcat requests-0.bin` gives the
entries. A file of entries as they are (no gzip header) reads too.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

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


GZIP_MAGIC = b"\x1f\x8b"  # no entry kind starts with 0x1f: a stream of entries as they are has none
GZIP = 31  # zlib's wbits for a gzip stream


class RecordWriter:
    """A Locust process's records file, its entries deflated (see above); one per process."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "ab", buffering=1 << 16)  # noqa: SIM115 (open for the process's life)
        self._z: zlib._Compress | None = None

    def write(self, entry: bytes) -> None:
        if self._z is None:  # a gzip member per process, and after finish(): the reader takes them all
            self._z = zlib.compressobj(1, zlib.DEFLATED, GZIP)
        out = self._z.compress(entry)
        if out:
            self._fh.write(out)

    def flush(self) -> None:
        """Everything written so far, readable in the file."""
        if self._z is not None:
            self._fh.write(self._z.flush(zlib.Z_SYNC_FLUSH))
        self._fh.flush()

    def finish(self) -> None:
        """The gzip member finished (its trailer written) and flushed: at the process's exit."""
        if self._z is not None:
            self._fh.write(self._z.flush(zlib.Z_FINISH))
            self._z = None
        self._fh.flush()

    def close(self) -> None:
        self.finish()
        self._fh.close()


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
        self._inflate: zlib._Decompress | None = None
        self._raw = False

    def _entries(self, data: bytes) -> bytes:
        """The entries in the file's next bytes: inflated when the file is a gzip stream (of one
        member per process that wrote it)."""
        if not (self._raw or self._inflate):
            if not data:
                return b""
            if data[0] == GZIP_MAGIC[0]:
                self._inflate = zlib.decompressobj(GZIP)
            else:
                self._raw = True
        if self._inflate is None:
            return data
        out = self._inflate.decompress(data)
        while self._inflate.eof and self._inflate.unused_data:  # the next process's member
            rest = self._inflate.unused_data
            self._inflate = zlib.decompressobj(GZIP)
            out += self._inflate.decompress(rest)
        return out

    def feed(self, data: bytes) -> list[Request]:
        """The requests now complete, given the file's next bytes."""
        data = self._entries(data)
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
