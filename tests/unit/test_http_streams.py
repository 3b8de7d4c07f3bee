"""Streamed request bodies on a ``LimitedSite`` (``http_streams``): refused before the body is read,
taken as they arrive (chunked too), paused without the pace clock, cut off.

A real ``LimitedSite`` over an in-memory transport on a ``Clock``, as in ``test_http_limits``;
the streaming resource checks a ``ticket`` query parameter the way the DataNode checks its
tickets, and records what its stream is told."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from cortex_rm.yarn_api.http_channel import LimitedChannel
from cortex_rm.yarn_api.http_limits import HttpLimits, LimitedSite
from cortex_rm.yarn_api.http_phases import Phase
from cortex_rm.yarn_api.http_streams import STREAM_READ_BYTES, BodyControl, LimitedRequest, StreamingResource
from cortex_rm.yarn_api.rest_errors import RestError
from tests.unit.test_http_limits import HalfClosingTransport

LIMITS = HttpLimits(max_body_bytes=1000, min_body_bytes_per_s=10, body_window_s=5, linger_s=2)
INVALID_TOKEN = ("InvalidToken", "org.apache.hadoop.security.token.SecretManager$InvalidToken")
GIB = 1 << 30


class RecordingStream:
    def __init__(self, control: BodyControl, max_bytes: int) -> None:
        self.control = control
        self.max_bytes = max_bytes
        self.pieces: list[bytes] = []
        self.ended = False
        self.lost_reason: Failure | None = None

    def data(self, piece: bytes) -> None:
        self.pieces.append(piece)

    def end(self) -> None:
        self.ended = True

    def lost(self, reason: Failure) -> None:
        self.lost_reason = reason


class Uploads(StreamingResource):
    """PUT with ``ticket=good`` streams its body; any other ticket is refused with InvalidToken."""

    stream_class: type[RecordingStream] = RecordingStream

    def __init__(self, max_bytes: int = 4 * GIB) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.opened: list[RecordingStream] = []
        self.rendered: list[Request] = []

    def open_body(self, request: Request, control: BodyControl) -> RecordingStream | None:
        if request.method != b"PUT":
            return None
        if (request.args or {}).get(b"ticket") != [b"good"]:
            raise RestError(403, INVALID_TOKEN, "the ticket's signature does not match (forged or altered)")
        stream = self.stream_class(control, self.max_bytes)
        self.opened.append(stream)
        return stream

    def render_PUT(self, request: Request) -> bytes:
        self.rendered.append(request)
        stream = getattr(request, "body_stream", None)
        assert isinstance(stream, RecordingStream) and stream.ended
        return json.dumps({"received": sum(map(len, stream.pieces))}).encode()


class Spooled(Resource):
    isLeaf = True

    def render_PUT(self, request: Request) -> bytes:
        return str(len(request.content.read())).encode()  # type: ignore[union-attr]


class Connection:
    def __init__(self, uploads: Uploads | None = None, transport: HalfClosingTransport | None = None) -> None:
        self.clock = Clock()
        self.uploads = uploads or Uploads()
        root = Resource()
        root.putChild(b"up", self.uploads)
        root.putChild(b"spooled", Spooled())
        self.site = LimitedSite(root, limits=LIMITS, clock=self.clock, name="test", untyped_prefixes=(b"/up",))
        self.transport = transport or HalfClosingTransport()
        self.channel: LimitedChannel = self.site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def answer(self) -> tuple[int, bytes]:
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    @property
    def request(self) -> LimitedRequest:
        request = self.channel.requests[-1]
        assert isinstance(request, LimitedRequest)
        return request


def put(target: str, headers: str) -> bytes:
    return f"PUT {target} HTTP/1.1\r\nHost: node.test\r\n{headers}\r\n".encode()


def test_a_forged_ticket_with_a_1_gib_body_is_refused_as_soon_as_the_headers_are_in() -> None:
    """The answer (WebHDFS's RemoteException, no Content-Type) goes out before a byte of the body
    is read; no body file is made and what the client sends on is dropped."""
    c = Connection()
    c.send(put("/up/file?ticket=forged", f"Content-Length: {GIB}\r\nExpect: 100-continue\r\n"))
    status, body = c.answer()
    assert status == 403 and b"100 Continue" not in c.transport.value()
    exception: dict[str, Any] = json.loads(body)["RemoteException"]
    assert exception["exception"] == "InvalidToken" and "forged" in exception["message"]
    assert b"content-type" not in c.transport.value().lower().partition(b"\r\n\r\n")[0]
    assert c.transport.write_closed and c.channel.phase is Phase.REFUSED
    assert c.request.content is None  # twisted.web never opened its body file
    c.send(b"x" * 100_000)
    assert c.request.content is None and c.uploads.opened == [] and c.uploads.rendered == []
    assert c.site.refusals.counts() == {"body-refused": 1}


def test_a_refused_head_with_its_body_in_the_same_read_is_answered_and_the_body_dropped() -> None:
    c = Connection()
    c.send(put("/up/file?ticket=forged", "Content-Length: 4\r\n") + b"data")
    assert c.answer()[0] == 403 and c.transport.write_closed and not c.transport.disconnecting
    assert c.request.content is None


def test_a_body_with_a_good_ticket_goes_to_the_stream_as_it_arrives_and_nothing_is_spooled() -> None:
    """A declared 1 GiB (over the site's 1000-byte limit, within the stream's) is taken piece by piece."""
    c = Connection()
    c.send(put("/up/file?ticket=good", f"Content-Length: {GIB}\r\n"))
    (stream,) = c.uploads.opened
    assert c.transport.value() == b"" and c.channel.phase is Phase.BODY
    for _ in range(3):
        c.send(b"y" * 65536)
    assert stream.pieces == [b"y" * 65536] * 3 and not stream.ended
    assert c.request.content is not None and c.request.content.getvalue() == b""  # type: ignore[attr-defined]


def test_a_chunked_body_reaches_the_stream_without_its_framing_and_its_end_renders_the_request() -> None:
    c = Connection()
    c.send(put("/up/file?ticket=good", "Transfer-Encoding: chunked\r\n"))
    c.send(b"5\r\nhello\r\n6\r\n, node\r\n")
    c.send(b"0\r\n\r\n")
    (stream,) = c.uploads.opened
    assert b"".join(stream.pieces) == b"hello, node" and stream.ended
    status, body = c.answer()
    assert status == 200 and json.loads(body) == {"received": 11}


def test_a_stream_over_its_own_limit_is_413_as_it_arrives() -> None:
    c = Connection(Uploads(max_bytes=10))
    c.send(put("/up/file?ticket=good", "Transfer-Encoding: chunked\r\n"))
    c.send(b"8\r\n12345678\r\n8\r\n12345678\r\n")
    assert c.answer()[0] == 413
    (stream,) = c.uploads.opened
    assert stream.lost_reason is not None and not stream.ended


def test_while_the_stream_pauses_the_connection_no_pace_clock_runs_and_it_restarts_on_resume() -> None:
    """Our sink lagging is not the client's slowness: paused for longer than many pace windows (but
    within the paused bound) nothing is refused; once resumed, a window without bytes is 408."""
    c = Connection()
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    (stream,) = c.uploads.opened
    c.send(b"z" * 100)
    stream.control.pause()
    assert c.transport.producerState == "paused" and c.channel.phase is Phase.BODY_PAUSED
    c.clock.advance(LIMITS.paused_body_timeout_s - 0.1)  # a slow disk, not a slow client
    assert c.transport.value() == b""
    stream.control.resume()
    assert c.transport.producerState == "producing" and c.channel.phase is Phase.BODY
    c.clock.advance(LIMITS.body_window_s)  # nothing in a whole window now: the client is too slow
    assert c.answer()[0] == 408 and stream.lost_reason is not None


def test_a_body_paused_past_the_paused_bound_is_503_retriable_and_the_stream_is_told() -> None:
    """A sink that takes nothing more for ``paused_body_timeout_s`` (a stuck disk, every worker busy)
    gets the request refused with Hadoop's RetriableException; the connection reads again during
    the linger (what the client still sends is dropped), then is cut."""
    c = Connection()
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    (stream,) = c.uploads.opened
    c.send(b"z" * 100)
    stream.control.pause()
    c.clock.advance(LIMITS.paused_body_timeout_s)
    status, body = c.answer()
    exception = json.loads(body)["RemoteException"]
    assert status == 503 and exception["javaClassName"] == "org.apache.hadoop.ipc.RetriableException"
    assert "for 120 s" in exception["message"]
    assert stream.lost_reason is not None and c.uploads.rendered == []
    assert c.transport.write_closed and c.transport.producerState == "producing"
    assert c.site.refusals.counts() == {"body-stalled": 1}
    c.send(b"z" * 500)  # dropped
    assert stream.pieces == [b"z" * 100]
    c.clock.advance(LIMITS.linger_s)
    assert c.transport.disconnecting


def test_pauses_that_each_end_within_the_bound_never_cut_a_body_that_keeps_its_pace() -> None:
    """The paused clock starts again at each pause: a slow but moving sink is not a stalled one."""
    c = Connection()
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    (stream,) = c.uploads.opened
    for _ in range(10):
        c.send(b"z" * 100)
        stream.control.pause()
        c.clock.advance(LIMITS.paused_body_timeout_s * 0.9)
        stream.control.resume()
    assert c.transport.value() == b"" and c.channel.phase is Phase.BODY and stream.lost_reason is None


def test_the_transport_draining_does_not_resume_a_paused_body() -> None:
    """twisted.web resumes reading when its transport drains what was written; a body paused by its
    stream stays paused until the stream resumes it (else the pipe's bound would not hold)."""
    c = Connection()
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    (stream,) = c.uploads.opened
    stream.control.pause()
    c.channel.pauseProducing()  # the transport's buffer is full ...
    c.channel.resumeProducing()  # ... and drained
    assert c.transport.producerState == "paused"
    c.channel.pauseProducing()  # full again while the stream resumes: the transport resumes us later
    stream.control.resume()
    assert c.transport.producerState == "paused" and c.channel.phase is Phase.BODY
    c.channel.resumeProducing()
    assert c.transport.producerState == "producing"


def test_a_stream_can_refuse_the_rest_of_its_body_with_an_answer() -> None:
    c = Connection()
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    (stream,) = c.uploads.opened
    c.send(b"z" * 100)
    stream.control.pause()
    stream.control.refuse(RestError(403, ("FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException"), "taken"))
    status, body = c.answer()
    assert status == 403 and json.loads(body)["RemoteException"]["message"] == "taken"
    assert c.transport.write_closed and c.transport.producerState == "producing"  # (the linger drops the rest)
    assert stream.lost_reason is not None


def test_a_client_that_goes_away_mid_body_is_told_to_the_stream() -> None:
    c = Connection()
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    (stream,) = c.uploads.opened
    c.send(b"z" * 100)
    c.channel.connectionLost(Failure(ConnectionResetError("reset")))
    assert stream.lost_reason is not None and not stream.ended and c.uploads.rendered == []


class SocketTransport(HalfClosingTransport):
    bufferSize = 65536  # (as twisted.internet.tcp.Connection: how much one read of the socket takes)


def test_while_a_body_streams_each_socket_read_may_take_a_mebibyte_and_after_it_the_default_again() -> None:
    c = Connection(transport=SocketTransport())
    c.send(put("/spooled", "Content-Length: 5\r\n") + b"hello")
    assert c.transport.bufferSize == 65536  # type: ignore[attr-defined]
    c.send(put("/up/file?ticket=good", "Content-Length: 10\r\n"))
    assert c.transport.bufferSize == STREAM_READ_BYTES == 1 << 20  # type: ignore[attr-defined]
    c.send(b"0123456789")
    assert c.uploads.rendered and c.transport.bufferSize == 65536  # type: ignore[attr-defined]


def test_a_body_cut_off_gives_the_socket_its_read_size_back_and_under_tls_the_tcp_transport_is_the_one_set() -> None:
    class TlsTransport(HalfClosingTransport):
        def __init__(self) -> None:
            super().__init__()
            self.transport = SocketTransport()

    tls = TlsTransport()
    c = Connection(transport=tls)
    c.send(put("/up/file?ticket=good", "Content-Length: 1000000\r\n"))
    assert tls.transport.bufferSize == STREAM_READ_BYTES and not hasattr(tls, "bufferSize")
    c.channel.connectionLost(Failure(ConnectionResetError("reset")))
    assert tls.transport.bufferSize == 65536


def test_other_resources_keep_a_spooled_body_within_the_sites_limit() -> None:
    c = Connection()
    c.send(put("/spooled", "Content-Length: 5\r\n") + b"hello")
    assert c.answer() == (200, b"5")
    c = Connection()
    c.send(put("/spooled", "Content-Length: 1001\r\n"))
    assert c.answer()[0] == 413
