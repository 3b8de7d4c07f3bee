"""``LimitedSite`` on real sockets: slow-header connections are cut at the header timeout, honest clients
served; a streamed body is read from its socket a mebibyte at a time.

The site listens on 127.0.0.1 (port 0) on the real reactor; the clients are blocking
sockets on a worker thread, so the reactor keeps serving while they wait.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import termios
import time
from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import tcp, threads
from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.yarn_api.http_limits import HttpLimits, LimitedSite
from cortex_rm.yarn_api.http_streams import STREAM_READ_BYTES, BodyControl
from tests.support.reactor import reactor, wait_until
from tests.unit.test_http_streams import RecordingStream, Uploads

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
SLOW_CONNECTIONS = 100
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # (Linux's; Python names only SO_RCVBUF)


class Info(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"clusterInfo": {}}'


@dataclass
class Storm:
    honest: bytes
    honest_done_s: float  # since the storm began
    opened_s: list[float]
    closed_s: list[float]
    answers: list[bytes]


def _read_to_end(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _storm(port: int) -> Storm:
    """Open the slow connections (a request line and one header, never the end of the head), make
    one honest request meanwhile, then read each slow connection until the server ends it."""
    start = time.monotonic()
    slow: list[socket.socket] = []
    opened: list[float] = []
    for _ in range(SLOW_CONNECTIONS):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /ws/v1/cluster/info HTTP/1.1\r\nHost: slow\r\n")
        slow.append(s)
        opened.append(time.monotonic() - start)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as honest:
        honest.sendall(b"GET /ws/v1/cluster/info HTTP/1.1\r\nHost: honest\r\nConnection: close\r\n\r\n")
        answer = _read_to_end(honest)
    honest_done = time.monotonic() - start
    closed: list[float] = []
    answers: list[bytes] = []
    for s in slow:
        answers.append(_read_to_end(s))
        closed.append(time.monotonic() - start)
        s.close()
    return Storm(answer, honest_done, opened, closed, answers)


@pytest_twisted.inlineCallbacks
def test_slow_header_connections_are_closed_at_the_header_timeout_while_an_honest_request_is_answered():  # type: ignore[no-untyped-def]
    """100 connections that never finish their headers each get 408 and are closed once the header
    timeout has passed (not before); an honest request made meanwhile is answered at once."""
    root = Resource()
    ws = Resource()
    root.putChild(b"ws", ws)
    v1 = Resource()
    ws.putChild(b"v1", v1)
    cluster = Resource()
    v1.putChild(b"cluster", cluster)
    cluster.putChild(b"info", Info())
    limits = HttpLimits(header_timeout_s=HEADER_TIMEOUT_S, linger_s=1.0)
    site = LimitedSite(root, limits=limits, clock=reactor(), name="loopback web")
    port = reactor().listenTCP(0, site, interface="127.0.0.1")
    try:
        storm: Storm = yield threads.deferToThread(_storm, port.getHost().port)
        yield wait_until(lambda: site.open_connections == 0, "every connection is closed", 10)
    finally:
        yield port.stopListening()

    assert storm.honest.startswith(b"HTTP/1.1 200") and storm.honest.endswith(b'{"clusterInfo": {}}')
    assert storm.honest_done_s < min(storm.closed_s), "the honest request waited for the slow ones"
    for opened, closed, answer in zip(storm.opened_s, storm.closed_s, storm.answers, strict=True):
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:100]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert "did not arrive within 2 s" in body["RemoteException"]["message"]
        # Cut at the timeout, not before; the upper bound only keeps a hung server from passing.
        assert HEADER_TIMEOUT_S * 0.95 <= closed - opened < HEADER_TIMEOUT_S + 10
    assert site.refusals.total == SLOW_CONNECTIONS


class PausingStream(RecordingStream):
    """Pauses the body at its first piece, so that the rest of it waits in the socket."""

    def data(self, piece: bytes) -> None:
        if not self.pieces:
            self.control.pause()
        super().data(piece)


class PausingUploads(Uploads):
    """Streams each body into a ``PausingStream``; records the connection's TCP transport."""

    stream_class = PausingStream

    def __init__(self) -> None:
        super().__init__()
        self.transports: list[tcp.Server] = []

    def open_body(self, request: Request, control: BodyControl) -> RecordingStream | None:
        stream = super().open_body(request, control)
        transport: object = request.channel.transport
        assert isinstance(transport, tcp.Server)
        self.transports.append(transport)
        return stream


def _upload(port: int, body: bytes) -> socket.socket:
    """Send a streamed PUT with ``body``; it has left this socket when this returns."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(f"PUT /up/file?ticket=good HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        s.sendall(body)
    except BaseException:
        s.close()
        raise
    return s


def _waiting(transport: tcp.Server) -> int:
    """How many bytes wait unread in the transport's socket (FIONREAD)."""
    return int(struct.unpack("i", fcntl.ioctl(transport.socket.fileno(), termios.FIONREAD, b"\0" * 4))[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_RCVBUFFORCE needs root (CAP_NET_ADMIN)")
@pytest_twisted.inlineCallbacks
def test_a_streamed_body_is_read_from_its_real_socket_a_mebibyte_at_a_time():  # type: ignore[no-untyped-def]
    """With more than a mebibyte of body waiting in the socket, one read of the real TCP transport
    takes ``STREAM_READ_BYTES`` (Twisted's own read size is 64 KiB); once the body is in, the
    connection's read size is Twisted's again.  The stream pauses at its first piece; the
    server's receive buffer is made big enough (as root, ``SO_RCVBUFFORCE``) that the rest of the
    body waits in it meanwhile, which the test sees before it resumes."""
    uploads = PausingUploads()
    root = Resource()
    root.putChild(b"up", uploads)
    site = LimitedSite(root, limits=HttpLimits(), clock=reactor(), name="loopback web", untyped_prefixes=(b"/up",))
    port = reactor().listenTCP(0, site, interface="127.0.0.1")
    body = bytes(range(256)) * (12 << 10)  # 3 MiB: at least 2 left after the first read
    client = None
    try:
        port.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # (the accepted one inherits it)
        client = yield threads.deferToThread(_upload, port.getHost().port, body)
        yield wait_until(lambda: any(s.pieces for s in uploads.opened), "the body's first piece is read", 30)
        (stream,) = uploads.opened
        (transport,) = uploads.transports
        first = len(stream.pieces[0])
        yield wait_until(lambda: _waiting(transport) == len(body) - first, "the rest of the body waits in the socket", 30)
        assert transport.bufferSize == STREAM_READ_BYTES
        stream.control.resume()
        yield wait_until(lambda: bool(uploads.rendered), "the body is in and the request answered", 30)
        answer = yield threads.deferToThread(client.recv, 65536)
    finally:
        if client is not None:
            client.close()
        for transport in uploads.transports:
            transport.abortConnection()  # type: ignore[no-untyped-call]
        yield wait_until(lambda: site.open_connections == 0, "every connection is closed", 10)
        yield port.stopListening()

    assert b"".join(stream.pieces) == body and answer.startswith(b"HTTP/1.1 200")
    sizes = [len(p) for p in stream.pieces]
    assert first <= STREAM_READ_BYTES and max(sizes) == STREAM_READ_BYTES, sizes
    assert transport.bufferSize == 65536
