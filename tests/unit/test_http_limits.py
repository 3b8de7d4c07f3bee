"""``LimitedSite``: a twisted.web site bounded in size, time and connections, refusing in JSON.

Each test drives a real ``LimitedSite`` over in-memory transports (``StringTransport``,
with the half-close a TCP transport has) on a ``Clock``: no sockets, no sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, Logger, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from cortex_rm.yarn.errors import IllegalTransition
from cortex_rm.yarn_api import rest_errors
from cortex_rm.yarn_api.http_channel import LimitedChannel
from cortex_rm.yarn_api.http_limits import HttpLimits, LimitedSite
from cortex_rm.yarn_api.http_phases import TRANSITIONS, Event, Phase, body_window_need, next_phase
from cortex_rm.yarn_api.http_refusals import Refusal, RefusalLog
from cortex_rm.yarn_api.log_text import sanitise

LIMITS = HttpLimits(
    max_request_line_bytes=100,
    max_header_bytes=200,
    max_headers=5,
    header_timeout_s=10,
    idle_timeout_s=30,
    max_body_bytes=1000,
    min_body_bytes_per_s=10,
    body_window_s=5,
    max_connections=3,
    max_connections_per_address=2,
    linger_s=2,
    refusal_log_interval_s=60,
)


class Echo(Resource):
    """GET: a small JSON answer; POST: the length of the body it got."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"ok": true}'

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return json.dumps({"length": len(request.content.read())}).encode()


class Slow(Resource):
    """GET: answered only when the test says so (the site is still working on it)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Request] = []

    def render_GET(self, request: Request) -> int:
        self.pending.append(request)
        return NOT_DONE_YET


class Broken(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        raise KeyError("boom")


class HalfClosingTransport(StringTransport):
    """A ``StringTransport`` that can stop writing and keep reading, as a TCP connection can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class Site:
    def __init__(self, limits: HttpLimits = LIMITS) -> None:
        self.clock = Clock()
        self.slow = Slow()
        root = Resource()
        root.putChild(b"echo", Echo())
        root.putChild(b"slow", self.slow)
        root.putChild(b"broken", Broken())
        root.putChild(b"webhdfs", Echo())
        self.site = LimitedSite(root, limits=limits, clock=self.clock, name="test web", untyped_prefixes=(b"/webhdfs/",))

    def connect(self, host: str = "10.0.0.1") -> Connection:
        return Connection(self.site, host)


class Connection:
    def __init__(self, site: LimitedSite, host: str) -> None:
        self.transport = HalfClosingTransport()
        self.channel: LimitedChannel = site.buildProtocol(IPv4Address("TCP", host, 40000))
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    @property
    def closed(self) -> bool:
        """The server ended the connection (closed it, or stopped writing to it)."""
        return bool(self.transport.disconnecting or self.transport.write_closed)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        data = self.transport.value()
        assert b"\r\n\r\n" in data, data
        head, body = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body[: int(headers.get("content-length", len(body)))]

    def remote_exception(self, status: int) -> dict[str, Any]:
        """The refusal answered: its status, JSON body and the end of the connection."""
        code, headers, body = self.response()
        assert code == status, (code, body)
        assert headers["connection"] == "close" and self.closed
        exception: dict[str, Any] = json.loads(body)["RemoteException"]
        assert set(exception) == {"exception", "javaClassName", "message"}
        return exception


def get(path: str = "/echo", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: rm.test\r\n{extra}\r\n".encode()


# ------------------------------------------------------------------ sizes


def test_an_honest_request_is_answered_and_the_connection_kept() -> None:
    """A request within every limit is served; the connection stays open for the next one."""
    s = Site()
    c = s.connect()
    c.send(get())
    code, _, body = c.response()
    assert (code, body) == (200, b'{"ok": true}') and not c.closed
    assert c.channel.phase is Phase.IDLE


def test_a_request_line_over_the_limit_is_414_in_json() -> None:
    """A request line longer than max_request_line_bytes is 414 URI Too Long, RemoteException JSON."""
    c = Site().connect()
    c.send(get("/echo?" + "a" * 100))
    exception = c.remote_exception(414)
    assert exception["exception"] == "WebApplicationException" and "longer than 100 bytes" in exception["message"]
    assert c.response()[1]["content-type"].startswith("application/json")


def test_a_request_line_that_never_ends_is_414() -> None:
    """Bytes with no line end, past every line limit, are refused as a too-long request line, not dropped silently."""
    c = Site().connect()
    c.send(b"GET /" + b"a" * 300)
    c.remote_exception(414)


def test_an_endless_line_behind_an_answered_request_is_414() -> None:
    """A too-long request line that came with the request before it is refused too (not a crash of the channel)."""
    c = Site().connect()
    c.send(get() + b"GET /" + b"a" * 300)
    assert c.transport.value().startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 414 URI Too Long" in c.transport.value() and c.closed


def test_headers_over_the_limit_are_431() -> None:
    """Header lines larger together than max_header_bytes are 431."""
    c = Site().connect()
    c.send(get(extra="X-A: " + "a" * 120 + "\r\nX-B: " + "b" * 120 + "\r\n"))
    assert "headers are larger than 200 bytes" in c.remote_exception(431)["message"]


def test_one_endless_header_line_is_431() -> None:
    """A header line with no end past the line limit is 431, not a silent close."""
    c = Site().connect()
    c.send(b"GET /echo HTTP/1.1\r\nX-A: " + b"a" * 300)
    c.remote_exception(431)


def test_too_many_headers_are_431() -> None:
    """More than max_headers header lines are 431."""
    c = Site().connect()
    c.send(get(extra="".join(f"X-{i}: 1\r\n" for i in range(6))))
    assert "more than 5 headers" in c.remote_exception(431)["message"]


@pytest.mark.parametrize(
    "data",
    [b"GARBAGE\x00\x01 x\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /echo HTTP/1.1\r\nno colon\r\n\r\n",
     b"GET /echo HTTP/1.1\r\nX: a\x00b\r\n\r\n", b"POST /echo HTTP/1.1\r\nContent-Length: ten\r\n\r\n"],
)
def test_malformed_requests_are_400_in_json(data: bytes) -> None:
    """What twisted.web answers with a bare 400 is a 400 BadRequestException in JSON."""
    c = Site().connect()
    c.send(data)
    exception = c.remote_exception(400)
    assert exception["javaClassName"] == "org.apache.hadoop.yarn.webapp.BadRequestException"


def test_a_declared_body_over_the_limit_is_413_at_once_without_100_continue() -> None:
    """A Content-Length over max_body_bytes is refused before any of the body, and no 100 Continue invites it."""
    c = Site().connect()
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 99999999999\r\n\r\n")
    assert not c.transport.value().startswith(b"HTTP/1.1 100")
    assert "larger than the limit of 1000 bytes" in c.remote_exception(413)["message"]


def test_a_chunked_body_is_refused_413_once_it_passes_the_limit() -> None:
    """A chunked body has no declared length: it is counted as it is decoded and refused past the limit."""
    c = Site().connect()
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(b"258\r\n" + b"x" * 600 + b"\r\n")
    assert c.transport.value() == b"" and c.channel.phase is Phase.BODY
    c.send(b"258\r\n" + b"x" * 600 + b"\r\n0\r\n\r\n")
    c.remote_exception(413)


def test_a_body_at_the_limit_is_served() -> None:
    """A body of exactly max_body_bytes (declared or chunked) reaches the resource."""
    c = Site().connect()
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    assert c.response()[2] == b'{"length": 1000}'
    c = Site().connect()
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n")
    assert c.response()[2] == b'{"length": 1000}'


# ------------------------------------------------------------------ methods and pages


def test_a_method_the_resource_does_not_serve_is_405_json_with_allow() -> None:
    """PUT on a GET/POST resource is 405 WebApplicationException with Allow, not twisted.web's HTML page."""
    c = Site().connect()
    c.send(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    code, headers, body = c.response()
    assert code == 405 and "html" not in headers.get("content-type", "")
    assert json.loads(body)["RemoteException"]["exception"] == "WebApplicationException"
    assert set(headers["allow"].split(", ")) >= {"GET", "POST"}


def test_a_method_http_does_not_define_is_501_json() -> None:
    """An unknown method is 501 in JSON, not "Huh?"."""
    c = Site().connect()
    c.send(b"BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    code, _, body = c.response()
    assert code == 501 and "not implemented" in json.loads(body)["RemoteException"]["message"]


def test_head_of_a_get_resource_is_still_answered() -> None:
    """HEAD on a GET resource is twisted.web's: the GET's headers, no body."""
    c = Site().connect()
    c.send(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.transport.value().startswith(b"HTTP/1.1 200")


def test_an_unknown_path_is_a_json_404() -> None:
    """twisted.web's "No Such Resource" page is a 404 NotFoundException in JSON."""
    c = Site().connect()
    c.send(get("/nothing/here"))
    code, headers, body = c.response()
    assert code == 404 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["RemoteException"]["exception"] == "NotFoundException"


def test_webhdfs_refusals_name_no_content_type() -> None:
    """Under an untyped prefix (WebHDFS) the JSON refusal has no Content-Type, so Hadoop's client parses it."""
    c = Site().connect()
    c.send(b"PUT /webhdfs/v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
    code, headers, _ = c.response()
    assert code == 413 and "content-type" not in headers


@pytest.mark.expect_logged_errors("GET /broken failed")
def test_a_failing_resource_is_a_json_500() -> None:
    """An exception in a resource is a logged 500 YarnRuntimeException, not twisted.web's HTML."""
    c = Site().connect()
    c.send(get("/broken"))
    code, _, body = c.response()
    assert code == 500 and "KeyError" in json.loads(body)["RemoteException"]["message"]


# ------------------------------------------------------------------ time


def test_a_head_not_complete_within_the_header_timeout_is_408_however_it_trickles() -> None:
    """Bytes trickling in do not extend the header timeout: the whole head must arrive in time."""
    s = Site()
    c = s.connect()
    for _ in range(9):
        c.send(b"X")
        s.clock.advance(1)
    assert not c.closed
    s.clock.advance(1)
    assert "did not arrive within 10 s" in c.remote_exception(408)["message"]


def test_a_connection_that_sends_nothing_is_408_after_the_header_timeout() -> None:
    """A connection that never sends a byte is refused after the header timeout too."""
    s = Site()
    c = s.connect()
    s.clock.advance(10)
    c.remote_exception(408)


def test_a_refused_connection_is_half_closed_then_cut_after_the_linger() -> None:
    """After a refusal the server stops writing, drops what the client still sends, and aborts after linger_s."""
    s = Site()
    c = s.connect()
    c.send(get("/echo?" + "a" * 100))
    assert c.transport.write_closed and not c.transport.disconnecting
    answered = c.transport.value()
    c.send(get())  # dropped
    assert c.transport.value() == answered
    s.clock.advance(2)
    assert c.transport.disconnected


def test_a_body_slower_than_the_minimum_pace_is_408() -> None:
    """A body must bring min_body_bytes_per_s x body_window_s per window (or all it has left)."""
    s = Site()
    c = s.connect()
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(3):  # 50 bytes per 5 s window: the pace
        c.send(b"x" * 50)
        s.clock.advance(5)
    assert c.transport.value() == b""
    c.send(b"x" * 49)
    s.clock.advance(5)
    assert "slower than 10 bytes/s" in c.remote_exception(408)["message"]


def test_a_short_body_must_arrive_whole_within_one_window() -> None:
    """A declared body shorter than a window's pace must all arrive in the first window."""
    s = Site()
    c = s.connect()
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n" + b"x" * 29)
    s.clock.advance(5)
    c.remote_exception(408)


def test_no_clock_runs_while_the_site_answers() -> None:
    """A request the site is still working on is not timed out, however long it takes."""
    s = Site()
    c = s.connect()
    c.send(get("/slow"))
    s.clock.advance(3600)
    assert not c.closed and c.channel.phase is Phase.HANDLING
    request = s.slow.pending[0]
    request.write(b"late")
    request.finish()
    assert c.transport.value().startswith(b"HTTP/1.1 200")


def test_a_response_its_client_does_not_read_is_cut_after_the_stalled_response_timeout() -> None:
    """While the site answers no clock runs, except when the connection's send buffer stays full
    (the client reads nothing): after stalled_response_timeout_s the connection is cut (counted,
    nothing more can be answered).  A buffer that drains in time starts the wait again."""
    s = Site()
    c = s.connect()
    c.send(get("/slow"))
    s.slow.pending[0].write(b"x" * 100)
    c.channel.pauseProducing()  # the transport's buffer is full ...
    s.clock.advance(LIMITS.stalled_response_timeout_s - 1)
    c.channel.resumeProducing()  # ... and drains: the client reads, slowly
    c.channel.pauseProducing()
    s.clock.advance(LIMITS.stalled_response_timeout_s - 1)
    s.slow.pending[0].write(b"x" * 100)  # written while full: the transport says pause again
    c.channel.pauseProducing()
    assert not c.transport.disconnected and c.channel.phase is Phase.HANDLING
    s.clock.advance(1)
    assert c.transport.disconnected and s.site.refusals.counts() == {"response-stalled": 1}


class EagerProducer:
    """A push producer that writes as soon as it is resumed (a DataNode's ThreadedBody whose worker
    already waits with its next piece): ``fill`` is what the transport does when that write fills it."""

    def __init__(self, request: Request, fill: Callable[[], None]) -> None:
        self.request = request
        self.fill = fill

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        self.request.write(b"y" * 100)
        self.fill()

    def stopProducing(self) -> None:  # noqa: N802
        pass


def test_a_producer_that_fills_the_transport_again_as_it_resumes_is_still_timed() -> None:
    """Found by the loopback test: the pause that a resumed producer's first write brings happens
    inside the resume; the wait it arms must survive the resume's return."""
    s = Site()
    c = s.connect()
    c.send(get("/slow"))
    request = s.slow.pending[0]
    request.registerProducer(EagerProducer(request, c.channel.pauseProducing), True)
    c.channel.pauseProducing()
    c.channel.resumeProducing()  # drained; the producer writes, the transport is full again
    s.clock.advance(LIMITS.stalled_response_timeout_s)
    assert c.transport.disconnected and s.site.refusals.counts() == {"response-stalled": 1}


def test_an_idle_kept_alive_connection_is_closed_quietly() -> None:
    """Between requests a connection may idle idle_timeout_s; then it is closed, with no answer and no refusal."""
    s = Site()
    c = s.connect()
    c.send(get())
    answered = c.transport.value()
    s.clock.advance(29)
    assert not c.closed
    s.clock.advance(1)
    assert c.transport.disconnecting and c.transport.value() == answered
    assert s.site.refusals.total == 0
    s.clock.advance(LIMITS.linger_s)  # the client left its answer unread (else it would be closed now)
    assert c.transport.disconnected


def test_the_next_request_on_a_kept_alive_connection_has_its_own_header_timeout() -> None:
    """The first byte of the next request starts its header timeout (the idle time does not count)."""
    s = Site()
    c = s.connect()
    c.send(get())
    s.clock.advance(20)
    c.send(b"GET /echo")
    s.clock.advance(9)
    assert not c.closed
    c.send(b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.transport.value().count(b"HTTP/1.1 200") == 2
    s.clock.advance(30)
    assert c.transport.disconnecting


def test_pipelined_requests_are_all_answered() -> None:
    """Requests sent together are answered in order (the limits do not break pipelining)."""
    c = Site().connect()
    c.send(get() + get() + get())
    assert c.transport.value().count(b"HTTP/1.1 200") == 3


def test_a_partial_request_behind_a_pipelined_one_has_the_header_timeout() -> None:
    """The head of a request that arrived with the one before it is timed from when it begins to be parsed."""
    s = Site()
    c = s.connect()
    c.send(get() + b"GET /echo HTTP/1.1\r\n")
    assert c.channel.phase is Phase.HEAD
    s.clock.advance(10)
    assert c.transport.value().count(b"HTTP/1.1 200") == 1
    assert b"HTTP/1.1 408" in c.transport.value() and c.closed


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", list(Event))
def test_the_transition_table_is_complete(phase: Phase, event: Event) -> None:
    """Every phase/event pair is either in the table or an IllegalTransition (a bug, never silently ignored)."""
    if (phase, event) in TRANSITIONS:
        assert next_phase(phase, event) is TRANSITIONS[phase, event]
    else:
        with pytest.raises(IllegalTransition, match=event.name):
            next_phase(phase, event)


# ------------------------------------------------------------------ connections


def test_connections_over_the_cap_are_503_and_a_closed_one_frees_its_place() -> None:
    """At most max_connections in all and max_connections_per_address from one host; more get 503 JSON."""
    s = Site()
    a1, a2 = s.connect("10.0.0.1"), s.connect("10.0.0.1")
    a3 = s.connect("10.0.0.1")
    assert a3.remote_exception(503)["message"].startswith("too many connections")
    b1 = s.connect("10.0.0.2")
    c1 = s.connect("10.0.0.3")
    c1.remote_exception(503)
    assert not (a1.closed or a2.closed or b1.closed)
    assert s.site.open_connections == 3
    a1.channel.connectionLost(None)  # type: ignore[arg-type]
    c2 = s.connect("10.0.0.3")
    c2.send(get())
    assert c2.response()[0] == 200


# ------------------------------------------------------------------ logging


def test_refusals_are_logged_as_one_summary_per_interval_without_client_bytes(logged: list[LogEvent]) -> None:
    """A storm of refusals writes one line per interval: counts per reason and distinct addresses, nothing the clients sent."""
    s = Site(replace(LIMITS, max_connections=1000, max_connections_per_address=1000))
    for i in range(200):
        c = s.connect(f"10.0.1.{i % 50}")
        c.send(b"GARBAGE\x00\x1b[31m /\xff" + b"\r\n\r\n" if i % 2 else get("/echo?" + "\x7f" * 200))
    s.clock.advance(59)
    lines = [formatEvent(e) for e in logged if e.get("log_namespace", "").startswith("cortex_rm.yarn_api.http")]
    assert lines == []
    s.clock.advance(1)
    lines = [formatEvent(e) for e in logged if e.get("log_namespace", "").startswith("cortex_rm.yarn_api.http")]
    assert len(lines) == 1
    assert "refused 200" in lines[0] and "from 50 addresses" in lines[0]
    assert "bad-request 100" in lines[0] and "uri-too-long 100" in lines[0]
    assert not any(c in lines[0] for c in "\x00\x1b\x7f\xff")
    s.clock.advance(600)
    assert len([e for e in logged if e.get("log_namespace", "").startswith("cortex_rm.yarn_api.http")]) == 1


def test_access_lines_are_sanitised_and_refusals_have_none(logged: list[LogEvent]) -> None:
    """An answered request's access line escapes what is not printable ASCII; a 404 is only counted."""
    s = Site()
    c = s.connect()
    c.send(b"GET /echo?q=\x80\x90\\ HTTP/1.1\r\nHost: x\r\n\r\n")  # (twisted.web lets 0x7f-0xb0 through)
    c.send(get("/nothing"))
    lines = [formatEvent(e) for e in logged if e.get("log_namespace") == "cortex_rm.yarn_api.http_access"]
    assert len(lines) == 1
    assert "GET /echo?q=\\x80\\x90\\x5c -> 200" in lines[0]
    assert s.site.refusals.counts() == {"not-found": 1}


def test_a_refused_rest_call_is_logged_without_the_clients_control_bytes() -> None:
    """An application-level refusal quoting a client's id (unquoted from %00%1b...) is logged sanitised."""
    events: list[LogEvent] = []
    logger = Logger(observer=events.append)  # type: ignore[arg-type]
    error = rest_errors.bad_request("invalid application id: \x00\x1b[2J\n2026 forged line")
    rest_errors.log_refused(logger, "GET", "/ws/v1/cluster/apps/\x00\x1b[2J", error)
    line = formatEvent(events[0])
    assert not any(c in line for c in "\x00\x1b\n")
    assert "invalid application id: \\x00\\x1b[2J\\x0a2026 forged line" in line


def test_the_summary_counts_at_most_a_bounded_number_of_addresses() -> None:
    """Beyond the addresses it tracks, the summary says "at least" (memory stays bounded)."""
    clock = Clock()
    refusals = RefusalLog("x", clock, 1)
    for i in range(10_005):
        refusals.record(Refusal.HEADER_TIMEOUT, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(refusals._addresses) == 10_000 and refusals._more_addresses


@pytest.mark.parametrize(
    ("raw", "limit", "shown"),
    [(b"/a b", 10, "/a b"), (b"\x00\x1b\xff\\", 40, "\\x00\\x1b\\xff\\x5c"), (b"a" * 12, 10, "aaaaaaaaaa...(+2)"),
     (None, 10, "-"), ("é", 10, "\\xc3\\xa9")],
)
def test_sanitise(raw: bytes | str | None, limit: int, shown: str) -> None:
    """Printable ASCII is kept, every other byte escaped, the length bounded with a count of what was cut."""
    assert sanitise(raw, limit) == shown


@pytest.mark.parametrize(
    ("declared", "received", "need"),
    [(None, 0, 50), (None, 10_000, 50), (1000, 0, 50), (1000, 980, 20), (30, 0, 30), (1000, 1000, 0)],
)
def test_body_window_need(declared: int | None, received: int, need: int) -> None:
    """A window needs the pace's share (10 bytes/s x 5 s) or what is left of a declared body, if less."""
    assert body_window_need(LIMITS, declared, received) == need


def test_limits_must_be_positive_and_consistent() -> None:
    """A zero or negative limit, a per-address cap over the total, or a paused-body bound shorter
    than a pace window (our own slowness would be judged more harshly than a client's) is a ValueError."""
    with pytest.raises(ValueError, match="header_timeout_s"):
        HttpLimits(header_timeout_s=0)
    with pytest.raises(ValueError, match="paused_body_timeout_s"):
        HttpLimits(body_window_s=30, paused_body_timeout_s=29)
    with pytest.raises(ValueError, match="per_address"):
        HttpLimits(max_connections=10, max_connections_per_address=11)


def test_a_content_length_of_thousands_of_digits_is_413_not_a_crash() -> None:
    """Found by bench/soak.py: twisted.web's int() of a 15,000-digit Content-Length raised
    (Python's limit on digits) and the connection died unanswered."""
    c = Site(HttpLimits()).connect()  # the daemon's own limits: a 16 KiB head lets 15,000 digits through
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 15000 + b"\r\n\r\n")
    assert "larger than the limit" in c.remote_exception(413)["message"]
