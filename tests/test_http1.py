"""The load's HTTP/1.1 response reader (chaoslab/load/http1.py), on real socket pairs: every
framing RFC 9112 gives a response, each sent whole and cut into pieces that arrive apart."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chaoslab.load.http1 import MAX_HEAD, BadResponse, ConnectionClosed, Reader, Response


def read(pieces: list[bytes], method: str = "GET", close: bool = True) -> tuple[Response, bytes]:
    """The response the reader makes of `pieces`, written to a socket pair one by one with a
    pause between them (so that they arrive as separate reads), and what it left unread."""
    a, b = socket.socketpair()
    a.settimeout(5)

    def write() -> None:
        for piece in pieces:
            b.sendall(piece)
            time.sleep(0.002)
        if close:
            b.shutdown(socket.SHUT_WR)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        reader = Reader(a)
        reader.head()
        resp = reader.body(method)
        return resp, reader.buf
    finally:
        writer.join()
        a.close()
        b.close()


def cuts(data: bytes) -> Iterator[list[bytes]]:
    """`data` whole, a byte at a time, and cut at every third byte."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[i : i + 3] for i in range(0, len(data), 3)]


GO = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Date: Sat, 05 Dec 2026 06:30:00 GMT\r\nContent-Length: 3\r\n\r\nok\n"
)


@pytest.mark.parametrize("pieces", list(cuts(GO)), ids=["whole", "bytes", "thirds"])
def test_a_sized_body_and_its_fields(pieces: list[bytes]) -> None:
    resp, left = read(pieces, close=False)
    assert (resp.status, resp.body, resp.close, left) == (200, b"ok\n", False, b"")
    assert resp.headers == {
        "content-type": "text/plain; charset=utf-8",
        "date": "Sat, 05 Dec 2026 06:30:00 GMT",
        "content-length": "3",
    }


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer-Field: x\r\n\r\n"
)


@pytest.mark.parametrize("pieces", list(cuts(CHUNKED)), ids=["whole", "bytes", "thirds"])
def test_a_chunked_body_with_extensions_and_trailers(pieces: list[bytes]) -> None:
    resp, left = read(pieces, close=False)
    assert (resp.status, resp.body, resp.close, left) == (200, b"hello, world", False, b"")


def test_no_body_for_head_204_304_and_past_interim_responses() -> None:
    # a HEAD's Content-Length is the GET's: nothing follows it
    resp, _ = read([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"], method="HEAD", close=False)
    assert (resp.status, resp.body, resp.close) == (200, b"", False)
    for status in (204, 304):
        resp, _ = read([b"HTTP/1.1 %d X\r\n\r\n" % status], close=False)
        assert (resp.status, resp.body, resp.close) == (status, b"", False)
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
    resp, _ = read([early + GO], close=False)
    assert (resp.status, resp.body, "link" in resp.headers) == (200, b"ok\n", False)


def test_a_body_to_the_close_and_the_connection_s_end() -> None:
    resp, _ = read([b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"])
    assert (resp.status, resp.body, resp.close) == (200, b"all of it", True)
    resp, _ = read([GO.replace(b"Date", b"Connection: close\r\nDate")], close=False)
    assert (resp.body, resp.close) == (b"ok\n", True)
    resp, _ = read([GO.replace(b"HTTP/1.1", b"HTTP/1.0")], close=False)
    assert (resp.body, resp.close) == (b"ok\n", True)
    resp, _ = read([GO.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Date", b"Connection: Keep-Alive\r\nDate")])
    assert (resp.body, resp.close) == (b"ok\n", False)
    # bytes after the response, unasked for: the connection is not used again
    resp, left = read([GO + b"HTTP/1.1 200"], close=False)
    assert (resp.body, resp.close, left) == (b"ok\n", True, b"HTTP/1.1 200")


def test_a_field_sent_twice_is_one_list() -> None:
    resp, _ = read([b"HTTP/1.1 200 OK\r\nVary: a\r\nvary: b\r\nContent-Length: 0\r\n\r\n"], close=False)
    assert resp.headers["vary"] == "a, b" and resp.body == b""


def test_closed_before_the_response_can_be_sent_again() -> None:
    with pytest.raises(ConnectionClosed):
        read([])


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Le", "in the middle of the response's head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "in the middle of the response"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "not a header field"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", "not ended by CRLF"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD // 6 + 10), "no end of the response's head"),
    ],
)
def test_what_is_not_a_response_is_named(data: bytes, what: str) -> None:
    with pytest.raises(BadResponse, match=what):
        read([data])
