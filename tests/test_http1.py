"""The load's HTTP/1.1 response reader (chaoslab/load/http1.py), on real socket pairs: every
framing RFC 9112 gives a response, each sent whole and cut into pieces that arrive apart."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from chaoslab.load.http1 import MAX_HEAD, BadResponse, ConnectionClosed, Response, read


def response(pieces: list[bytes], method: str = "GET", close: bool = True) -> Response:
    """The response read of `pieces`, written to a socket pair one by one with a pause between
    them (so that they arrive as separate reads)."""
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
        return read(a, method)
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


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer-Field: x\r\n\r\n"
)


@pytest.mark.parametrize(
    ("pieces", "body"),
    [(p, b"ok\n") for p in cuts(GO)] + [(p, b"hello, world") for p in cuts(CHUNKED)],
    ids=[f"{framing}-{cut}" for framing in ("sized", "chunked") for cut in ("whole", "bytes", "thirds")],
)
def test_a_body_sized_or_chunked_with_extensions_and_trailers(pieces: list[bytes], body: bytes) -> None:
    resp = response(pieces, close=False)
    assert (resp.status, resp.body, resp.close) == (200, body, False)


def test_fields_are_read_on_demand() -> None:
    resp = response([GO], close=False)
    assert resp.field("content-type") == "text/plain; charset=utf-8"
    assert resp.field("date") == "Sat, 05 Dec 2026 06:30:00 GMT"
    assert resp.field("content-length") == "3" and resp.field("location") is None


def test_no_body_for_head_204_304_and_past_interim_responses() -> None:
    # a HEAD's Content-Length is the GET's: nothing follows it
    resp = response([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"], method="HEAD", close=False)
    assert (resp.status, resp.body, resp.close) == (200, b"", False)
    for status in (204, 304):
        resp = response([b"HTTP/1.1 %d X\r\n\r\n" % status], close=False)
        assert (resp.status, resp.body, resp.close) == (status, b"", False)
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
    resp = response([early + GO], close=False)
    assert (resp.status, resp.body, resp.field("link")) == (200, b"ok\n", None)


def test_a_body_to_the_close_and_the_connection_s_end() -> None:
    resp = response([b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"])
    assert (resp.status, resp.body, resp.close) == (200, b"all of it", True)
    resp = response([GO.replace(b"Date", b"Connection: close\r\nDate")], close=False)
    assert (resp.body, resp.close) == (b"ok\n", True)
    resp = response([GO.replace(b"HTTP/1.1", b"HTTP/1.0")], close=False)
    assert (resp.body, resp.close) == (b"ok\n", True)
    resp = response(
        [GO.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Date", b"Connection: Keep-Alive\r\nDate")]
    )
    assert (resp.body, resp.close) == (b"ok\n", False)
    # bytes after the response, unasked for: the connection is not used again
    resp = response([GO + b"HTTP/1.1 200"], close=False)
    assert (resp.body, resp.close) == (b"ok\n", True)


def test_a_field_sent_twice_is_one_list_and_names_are_not_cased() -> None:
    head = b"HTTP/1.1 302 Found\r\nVary: a\r\nLOCATION: /b?x=Y\r\nvary:b \r\nContent-Length: 0\r\n\r\n"
    resp = response([head], close=False)
    assert (resp.field("vary"), resp.field("location"), resp.body) == ("a, b", "/b?x=Y", b"")
    # no reason phrase, no fields
    resp = response([b"HTTP/1.1 204\r\n\r\n"], close=False)
    assert (resp.status, resp.body, resp.field("vary")) == (204, b"", None)


def reset_after(sent: bytes) -> Response:
    """The response read off a loopback TCP connection whose server sends `sent`, then
    resets the connection (SO_LINGER 0)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        conn, _ = server.accept()
        conn.sendall(sent)
        time.sleep(0.05)  # what was sent has come before the reset
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        time.sleep(0.05)
        try:
            return read(client, "GET")
        finally:
            client.close()


def test_nothing_of_a_response_can_be_sent_again_and_a_response_cut_short_cannot() -> None:
    # closed or reset before any byte: the server never took the request (a kept connection
    # it closed while idle), and the client may send it again
    with pytest.raises(ConnectionClosed):
        response([])
    with pytest.raises(ConnectionResetError):
        reset_after(b"")
    # reset in the middle of the response: the server took it, so it is an error, not a retry
    with pytest.raises(BadResponse, match="reset in the middle of the response"):
        reset_after(GO[:30])


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Le", "in the middle of the response's head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "in the middle of the response"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", "not ended by CRLF"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD // 6 + 10), "no end of the response's head"),
    ],
)
def test_what_is_not_a_response_is_named(data: bytes, what: str) -> None:
    with pytest.raises(BadResponse, match=what):
        response([data])
