"""An HTTP/1.1 response read off a socket with a few bytes operations.

The load's HTTP client sends its requests as prebuilt bytes (`Wire` in locustfile.py) and reads
each response here. The head is found with one search and put in lower case once; the fields
that frame the body (Connection, Transfer-Encoding, Content-Length) are found with one search
each; the body is framed as RFC 9112 section 6.3 says (no body for a HEAD, a 1xx, 204 or 304;
chunked; Content-Length; else to the connection's close). Other fields are looked up only when
asked for (a redirect's Location).

Why so little code on the common path (a sized body that came with its head): a generator
that wakes from idle for each request runs this code cold, and every Python call and object it
touches costs. On go-api's /healthz at 66 requests/s, against one bare `recv` of the response
(bench/response_read.py, the readers taking turns): geventhttpclient's HTTPSocketResponse (a
C parser that calls back into Python for every header field) 0.11 to 0.13 ms slower at the
p50, a parser of these same rules made of a class with a method a step 0.05 to 0.07 ms, this
function 0.025 to 0.05 ms.

Only `recv` is asked of the socket, so a gevent socket, a TLS one or a plain one will do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

BLOCK = 65536
MAX_HEAD = 64 * 1024  # a longer head is an error, not a reason to read on forever
MAX_CHUNK_LINE = 4096


class ConnectionClosed(Exception):
    """The connection closed before any byte of the response: a kept connection the server
    closed while idle, which the client may send the request on again."""


class BadResponse(Exception):
    """Bytes that are not an HTTP/1.x response, or a connection closed in the middle of one."""


class Socket(Protocol):
    def recv(self, n: int, /) -> bytes: ...


class Response:
    """A response's status and body; `close` when the connection cannot carry another request;
    `head_at` when its head had come; its header fields read on demand."""

    __slots__ = ("body", "close", "head", "head_at", "low", "status")

    def __init__(self, status: int, head: bytes, low: bytes, head_at: float) -> None:
        self.status = status
        self.head = head  # from the status line's CRLF to the last field's end
        self.low = low  # the same in lower case
        self.head_at = head_at
        self.body = b""
        self.close = False

    def field(self, name: str) -> str | None:
        """A header field's value (its lines joined by ", " when it came more than once, RFC
        9110 section 5.3), None when the head has none; `name` in lower case."""
        key = b"\r\n" + name.encode("latin-1") + b":"
        low = self.low
        at = low.find(key)
        if at < 0:
            return None
        values = []
        while at >= 0:
            start = at + len(key)
            end = low.find(b"\r\n", start)
            values.append(self.head[start : end if end >= 0 else len(low)].strip())
            at = low.find(key, start)
        return b", ".join(values).decode("latin-1")


def read(sock: Socket, method: str, now: Callable[[], float] = time.time) -> Response:
    """The final response to a request of `method` (1xx interim responses are read past),
    its `head_at` read from `now`. ConnectionClosed, or the socket's ConnectionResetError,
    when nothing of it came."""
    buf = sock.recv(BLOCK)
    if not buf:
        raise ConnectionClosed()
    try:
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                buf, end = _rest_of_head(sock, buf)
            head_at = now()
            # "HTTP/1.1 200 OK": a version, a space, three digits, then a space or the line's end
            if (
                buf[:7] != b"HTTP/1."
                or buf[8:9] != b" "
                or not buf[9:12].isdigit()
                or buf[12:13] not in b" \r"
            ):
                raise BadResponse(f"not an HTTP/1.x status line: {buf[: min(end, 80)]!r}")
            status = int(buf[9:12])
            # from the status line's CRLF: every field's line starts with one
            head = buf[buf.find(b"\r\n") : end]
            resp = Response(status, head, head.lower(), head_at)
            rest = buf[end + 4 :]
            if 100 <= status < 200 and status != 101:
                buf = rest or sock.recv(BLOCK)
                if not buf:
                    raise BadResponse("the connection closed in the middle of the response")
                continue
            low = resp.low
            connection = (resp.field("connection") or "").lower() if b"\r\nconnection:" in low else ""
            close = "close" in connection or (buf[5:8] == b"1.0" and "keep-alive" not in connection)
            if method == "HEAD" or status in (204, 304) or status < 200:
                pass
            elif b"\r\ntransfer-encoding:" in low:
                if not (resp.field("transfer-encoding") or "").lower().endswith("chunked"):
                    return _to_close(sock, resp, rest)
                resp.body, rest = _chunked(sock, rest)
            elif (at := low.find(b"\r\ncontent-length:")) >= 0:
                eol = low.find(b"\r\n", at + 17)
                size = low[at + 17 : eol if eol >= 0 else len(low)].strip()
                if not size.isdigit() or low.find(b"\r\ncontent-length:", at + 17) >= 0:
                    size = _one_length(resp.field("content-length") or "")
                n = int(size)
                while len(rest) < n:
                    rest += _more(sock)
                resp.body, rest = rest[:n], rest[n:]
            else:
                return _to_close(sock, resp, rest)
            # bytes past the response on a connection that sent no other request: not ours to read
            resp.close = close or bool(rest)
            return resp
    except ConnectionResetError:  # after the first bytes: not a request to send again
        raise BadResponse("the connection was reset in the middle of the response") from None


def _more(sock: Socket) -> bytes:
    data = sock.recv(BLOCK)
    if not data:
        raise BadResponse("the connection closed in the middle of the response")
    return data


def _rest_of_head(sock: Socket, buf: bytes) -> tuple[bytes, int]:
    while True:
        if len(buf) > MAX_HEAD:
            raise BadResponse(f"no end of the response's head in {MAX_HEAD} bytes")
        data = sock.recv(BLOCK)
        if not data:
            raise BadResponse("the connection closed in the middle of the response's head")
        buf += data
        end = buf.find(b"\r\n\r\n", max(len(buf) - len(data) - 3, 0))
        if end >= 0:
            return buf, end


def _one_length(field: str) -> bytes:
    """A Content-Length sent more than once (or as a list) is one length, or the response is
    not one (RFC 9112 section 6.3)."""
    values = {v.strip() for v in field.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise BadResponse(f"Content-Length {field!r}")
    return values.pop().encode()


def _chunked(sock: Socket, buf: bytes) -> tuple[bytes, bytes]:
    """A chunked body and what came after it."""
    parts: list[bytes] = []
    while True:
        line, buf = _line(sock, buf)
        size = line.split(b";", 1)[0].strip()
        try:
            n = int(size, 16)
        except ValueError:
            raise BadResponse(f"chunk size {size[:40]!r}") from None
        if n == 0:
            while True:  # trailer fields, up to the empty line
                line, buf = _line(sock, buf)
                if not line:
                    return b"".join(parts), buf
        while len(buf) < n + 2:
            buf += _more(sock)
        if buf[n : n + 2] != b"\r\n":
            raise BadResponse("a chunk not ended by CRLF")
        parts.append(buf[:n])
        buf = buf[n + 2 :]


def _line(sock: Socket, buf: bytes) -> tuple[bytes, bytes]:
    end = buf.find(b"\r\n")
    while end < 0:
        if len(buf) > MAX_CHUNK_LINE:
            raise BadResponse(f"a chunk line over {MAX_CHUNK_LINE} bytes")
        buf += _more(sock)
        end = buf.find(b"\r\n")
    return buf[:end], buf[end + 2 :]


def _to_close(sock: Socket, resp: Response, buf: bytes) -> Response:
    """A body that runs to the connection's close."""
    parts = [buf]
    while data := sock.recv(BLOCK):
        parts.append(data)
    resp.body, resp.close = b"".join(parts), True
    return resp
