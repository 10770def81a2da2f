"""An HTTP/1.1 response read off a socket with a few bytes operations a response.

The load's HTTP client sends its requests as prebuilt bytes (`Wire` in locustfile.py) and reads
each response here: the head is found with one search, split into lines and header fields, and
the body framed as RFC 9112 section 6.3 says (no body for a HEAD, a 1xx, 204 or 304; chunked;
Content-Length; else to the connection's close). A generator that wakes from idle for each
request runs this code cold: geventhttpclient's HTTPSocketResponse (a C parser that calls back
into Python for every header) took about 0.1 ms more a request here than these bytes
operations, inside the request's latency.

Only `recv` is asked of the socket, so a gevent socket, a TLS one or a plain one will do.
"""

from __future__ import annotations

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
    """A response's status, header fields (names in lower case, values as text) and body;
    `close` when the connection cannot carry another request."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, close: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close


class Reader:
    """Reads a response's head, then its body, off `sock` (two steps, so that the caller can
    time the wait for the head apart from the body's receipt)."""

    __slots__ = ("buf", "headers", "sock", "status", "version")

    def __init__(self, sock: Socket) -> None:
        self.sock = sock
        self.buf = b""
        self.status = 0
        self.version = b""
        self.headers: dict[str, str] = {}

    def _more(self) -> bytes:
        data = self.sock.recv(BLOCK)
        if not data:
            raise BadResponse("the connection closed in the middle of the response")
        return data

    def head(self) -> int:
        """The status of the final response (1xx interim responses are read past)."""
        while True:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > MAX_HEAD:
                    raise BadResponse(f"no end of the response's head in {MAX_HEAD} bytes")
                data = self.sock.recv(BLOCK)
                if not data:
                    if buf:
                        raise BadResponse("the connection closed in the middle of the response's head")
                    raise ConnectionClosed()
                buf += data
                end = buf.find(b"\r\n\r\n", max(len(buf) - len(data) - 3, 0))
            self.buf = buf[end + 4 :]
            lines = buf[:end].split(b"\r\n")
            first = lines[0]
            # "HTTP/1.1 200 OK": a version, a space, three digits, then a space or the line's end
            if (
                first[:7] != b"HTTP/1."
                or first[8:9] != b" "
                or not first[9:12].isdigit()
                or first[12:13] not in (b" ", b"")
            ):
                raise BadResponse(f"not an HTTP/1.x status line: {first[:80]!r}")
            self.version = first[5:8]
            self.status = int(first[9:12])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(b":")
                if not colon or not name or name != name.strip():
                    raise BadResponse(f"not a header field: {line[:80]!r}")
                key = name.decode("latin-1").lower()
                text = value.strip().decode("latin-1")
                # a field sent more than once is one list (RFC 9110 section 5.3)
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            self.headers = headers
            if not (100 <= self.status < 200) or self.status == 101:
                return self.status

    def body(self, method: str) -> Response:
        """The body, framed as RFC 9112 section 6.3 says, and whether the connection is done."""
        status, headers = self.status, self.headers
        close = "close" in headers.get("connection", "").lower() or (
            self.version == b"1.0" and "keep-alive" not in headers.get("connection", "").lower()
        )
        if method == "HEAD" or status in (204, 304) or status < 200:
            body = b""
        elif "transfer-encoding" in headers:
            if not headers["transfer-encoding"].lower().endswith("chunked"):
                return self._to_close()
            body = self._chunked()
        elif "content-length" in headers:
            body = self._sized(headers["content-length"])
        else:
            return self._to_close()
        # bytes past the response on a connection that sent no other request: not ours to read
        return Response(status, headers, body, close or bool(self.buf))

    def _sized(self, field: str) -> bytes:
        values = {v.strip() for v in field.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadResponse(f"Content-Length {field!r}")
        n = int(values.pop())
        buf = self.buf
        while len(buf) < n:
            buf += self._more()
        self.buf = buf[n:]
        return buf[:n]

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._line()
            size = line.split(b";", 1)[0].strip()
            try:
                n = int(size, 16)
            except ValueError:
                raise BadResponse(f"chunk size {size[:40]!r}") from None
            if n == 0:
                while self._line():  # trailer fields, up to the empty line
                    pass
                return b"".join(parts)
            buf = self.buf
            while len(buf) < n + 2:
                buf += self._more()
            if buf[n : n + 2] != b"\r\n":
                raise BadResponse("a chunk not ended by CRLF")
            parts.append(buf[:n])
            self.buf = buf[n + 2 :]

    def _line(self) -> bytes:
        buf = self.buf
        end = buf.find(b"\r\n")
        while end < 0:
            if len(buf) > MAX_CHUNK_LINE:
                raise BadResponse(f"a chunk line over {MAX_CHUNK_LINE} bytes")
            buf += self._more()
            end = buf.find(b"\r\n")
        self.buf = buf[end + 2 :]
        return buf[:end]

    def _to_close(self) -> Response:
        """A body that runs to the connection's close."""
        parts = [self.buf]
        while data := self.sock.recv(BLOCK):
            parts.append(data)
        self.buf = b""
        return Response(self.status, self.headers, b"".join(parts), True)
