"""A port under hostile load, on a fake clock: caps, the shared buffer budget, timeouts and refusal logs.

Each connection is a protocol from the factory over a ``StringTransport`` with its own
peer address; time is a ``Clock``.  Refusals must take Hadoop's form (a FATAL
``RetriableException`` the Java client turns into an exception) and honest
connections must go on being served.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, Logger, LogLevel
from twisted.python.failure import Failure

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_limits import (
    BUFFER_BUDGET_EXHAUSTED,
    FRAME_TIMEOUT,
    HEADER_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    IpcLimits,
)
from cortex_rm.yarn_api.ipc_refusals import PROTOCOL_ERRORS_SUPPRESSED
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.rpc_protocol import CallContext, RpcProtocol
from tests.support.ipc_frames import (
    FATAL,
    SUCCESS,
    TEST_PROTOCOL,
    TEST_SERVICE,
    ParsedResponse,
    call_frame,
    context_frame,
    parse_responses,
    ping_frame,
    preamble,
)

HANDSHAKE = preamble() + context_frame(TEST_PROTOCOL)
ALICE = UserInformationProto(effectiveUser="alice")


class Port:
    """A factory serving echoUser on a fake clock, with its log events captured."""

    def __init__(self, limits: IpcLimits, *, max_data_length: int = 64 * 1024, handler: Any = None) -> None:
        self.clock = Clock()
        self.log_events: list[LogEvent] = []
        self.factory = IpcServerFactory(
            [RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": handler or (lambda c, r: r)})],
            max_data_length=max_data_length,
            limits=limits,
            log=Logger(namespace="test", observer=self.log_events.append),
            clock=self.clock,
        )

    def connect(self, host: str = "10.0.0.1", port: int = 40000) -> Conn:
        """Accept a connection from ``host``."""
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        return Conn(protocol, transport)

    def warnings(self, reason: str | None = None) -> list[LogEvent]:
        """Captured warnings (only the refusals for ``reason`` if given)."""
        found = [e for e in self.log_events if e["log_level"] is LogLevel.warn]
        return found if reason is None else [e for e in found if e.get("reason") == reason]


class Conn:
    """One accepted connection seen from the client side."""

    def __init__(self, protocol: Any, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def send(self, data: bytes) -> list[ParsedResponse]:
        """Deliver ``data``; the replies written so far."""
        self.protocol.dataReceived(data)
        return self.replies()

    def replies(self) -> list[ParsedResponse]:
        """Everything the server wrote, parsed."""
        return parse_responses(self.transport.value())

    @property
    def closing(self) -> bool:
        """The server closed (or is closing) this connection."""
        return bool(self.transport.disconnecting)

    def hang_up(self) -> None:
        """The transport is gone (as after the server's close completes)."""
        self.protocol.connectionLost(Failure(ConnectionError("closed")))


def assert_refused(conn: Conn, text: str) -> None:
    """The connection got one FATAL RetriableException whose message contains ``text``, and is closing."""
    [reply] = conn.replies()
    assert (reply.status, reply.exception_class) == (FATAL, errors.RETRIABLE_EXCEPTION)
    assert reply.header.errorDetail == errors.FATAL_UNKNOWN
    assert text in reply.header.errorMsg, reply.header.errorMsg
    assert conn.closing


def assert_serves(conn: Conn, call_id: int = 1) -> None:
    """A call on an established connection is answered SUCCESS."""
    before = len(conn.replies())
    replies = conn.send(call_frame(call_id, "echoUser", TEST_PROTOCOL, ALICE))
    assert [(r.call_id, r.status) for r in replies[before:]] == [(call_id, SUCCESS)]


def test_connections_over_the_port_cap_get_a_fatal_and_are_closed() -> None:
    """With max_connections=3 the fourth connection is refused at once; a freed slot admits the next."""
    port = Port(IpcLimits(max_connections=3, max_connections_per_address=3))
    honest = [port.connect(f"10.0.0.{i}") for i in range(3)]
    for conn in honest:
        conn.send(HANDSHAKE)
    extra = port.connect("10.0.0.9")
    assert_refused(extra, "this IPC port has 3 connections open")
    extra.hang_up()  # a refused connection holds no slot
    for conn in honest:
        assert_serves(conn)
    honest[0].hang_up()
    assert port.connect("10.0.0.9").send(HANDSHAKE) == []
    assert port.factory.slots.total == 3


def test_connections_over_the_per_address_cap_are_refused_while_other_hosts_get_in() -> None:
    """With 2 per address, a third from the same host is refused; another host is admitted."""
    port = Port(IpcLimits(max_connections=10, max_connections_per_address=2))
    for _ in range(2):
        port.connect("192.0.2.7").send(HANDSHAKE)
    refused = port.connect("192.0.2.7")
    assert_refused(refused, "192.0.2.7 already has 2 connections open")
    refused.protocol.dataReceived(HANDSHAKE)  # input to a refused connection is ignored
    assert len(refused.replies()) == 1
    other = port.connect("192.0.2.8")
    other.send(HANDSHAKE)
    assert_serves(other)


def test_refusals_are_logged_as_counts_per_reason_per_interval() -> None:
    """50 refused connections from 5 hosts give one warning per reason when the interval ends, no client bytes."""
    port = Port(IpcLimits(max_connections=4, max_connections_per_address=2, refusal_log_interval_s=10))
    for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"):
        port.connect(host)
    for i in range(50):
        port.connect(f"10.0.0.{i % 5 + 1}")
    assert port.warnings() == []
    port.clock.advance(10)
    [warning] = port.warnings(TOO_MANY_CONNECTIONS)
    assert (warning["count"], warning["addresses"], warning["top_count"]) == (50, 5, 10)
    assert warning["port"] == TEST_PROTOCOL.rsplit(".", 1)[-1]
    assert len(port.warnings()) == 2  # and one for the 4 admitted ones that never sent their header
    port.clock.advance(30)
    assert len(port.warnings()) == 2


def test_a_frame_over_the_budget_is_refused_and_logged_without_its_bytes() -> None:
    """Declared frames cost nothing; arriving bytes that overflow the budget refuse that connection."""
    port = Port(IpcLimits(max_buffered_bytes=100 * 1024), max_data_length=64 * 1024)
    hostile = [port.connect(f"198.51.100.{i}") for i in range(3)]
    for conn in hostile:
        conn.send(HANDSHAKE + (60 * 1024).to_bytes(4, "big"))
    assert port.factory.budget.total == 3 * 4  # declared, not sent: only the length prefixes are held
    hostile[0].send(b"\xee" * 40 * 1024)
    hostile[1].send(b"\xee" * 40 * 1024)
    hostile[2].send(b"\xee" * 30 * 1024)  # 110 KiB would be held: the one overflowing is refused
    assert_refused(hostile[2], "Server too busy")
    assert port.factory.budget.total == 2 * (4 + 40 * 1024)
    port.clock.advance(10)
    [warning] = port.warnings(BUFFER_BUDGET_EXHAUSTED)
    assert (warning["count"], warning["top_address"]) == (1, "198.51.100.2")
    assert "\xee" not in str(warning) and "ee" * 4 not in str(warning)


def test_an_honest_small_frame_evicts_the_holder_of_the_largest_frame() -> None:
    """With the budget full of hostile partial frames, an honest split call gets in: the largest frame's holder goes."""
    port = Port(IpcLimits(max_buffered_bytes=100 * 1024), max_data_length=64 * 1024)
    big, bigger = port.connect("198.51.100.1"), port.connect("198.51.100.2")
    big.send(HANDSHAKE + (50 * 1024).to_bytes(4, "big"))
    bigger.send(HANDSHAKE + (60 * 1024).to_bytes(4, "big"))
    big.send(b"\x00" * 40 * 1024)
    bigger.send(b"\x00" * 59 * 1024)  # 99 KiB of the 100 KiB held
    honest = port.connect("10.0.0.1")
    honest.send(HANDSHAKE)
    call = call_frame(1, "echoUser", TEST_PROTOCOL, UserInformationProto(effectiveUser="a" * 2000))
    honest.send(call[:1000])
    honest.send(call[1000:])
    assert [(r.call_id, r.status) for r in honest.replies()] == [(1, SUCCESS)]
    assert_refused(bigger, "holds the most")
    assert not big.closing


def test_a_frame_over_max_data_length_is_still_refused_at_once() -> None:
    """The per-frame limit holds as before: FATAL_INVALID_RPC_HEADER when the length arrives."""
    port = Port(IpcLimits(), max_data_length=64 * 1024)
    conn = port.connect()
    [reply] = conn.send(HANDSHAKE + (64 * 1024 + 1).to_bytes(4, "big"))
    assert (reply.status, reply.header.errorDetail) == (FATAL, errors.FATAL_INVALID_RPC_HEADER)
    assert port.factory.budget.total == 0


def test_a_connection_without_its_header_in_time_is_refused() -> None:
    """No context within the header timeout: FATAL and close; one that finished its header stays."""
    port = Port(IpcLimits(header_timeout_s=10, idle_timeout_s=20))
    silent, partial, honest = port.connect("10.0.0.1"), port.connect("10.0.0.2"), port.connect("10.0.0.3")
    partial.send(preamble())  # preamble, but no context
    honest.send(HANDSHAKE)
    port.clock.advance(9.9)
    assert not silent.closing and not partial.closing
    port.clock.advance(0.1)
    assert_refused(silent, HEADER_TIMEOUT)
    assert_refused(partial, HEADER_TIMEOUT)
    assert not honest.closing
    assert_serves(honest)


def test_a_stalled_partial_frame_is_cut_but_slow_complete_frames_are_not() -> None:
    """A partial frame pending for the frame timeout is refused; a client sending whole frames slowly stays."""
    port = Port(IpcLimits(frame_timeout_s=5, idle_timeout_s=20))
    stalled, slow = port.connect("10.0.0.1"), port.connect("10.0.0.2")
    stalled.send(HANDSHAKE)
    slow.send(HANDSHAKE)
    port.clock.advance(30)  # idle, no partial frame: only the idle timeout applies ...
    assert stalled.closing and slow.closing  # ... and it closed both, quietly
    assert stalled.replies() == [] and slow.replies() == []
    stalled, slow = port.connect("10.0.0.1"), port.connect("10.0.0.2")
    stalled.send(HANDSHAKE + call_frame(1, "echoUser", TEST_PROTOCOL, ALICE)[:-3])
    slow.send(HANDSHAKE)
    for call_id in range(1, 4):  # a whole call every 4 s, each split over two reads
        port.clock.advance(3)
        frame = call_frame(call_id, "echoUser", TEST_PROTOCOL, ALICE)
        slow.send(frame[:10])
        port.clock.advance(1)
        slow.send(frame[10:])
    assert_refused(stalled, FRAME_TIMEOUT)
    assert [r.status for r in slow.replies()] == [SUCCESS] * 3 and not slow.closing


def test_the_frame_timeout_waits_while_the_server_is_not_reading() -> None:
    """Paused at max_outstanding_calls, a partial frame is not the client's fault; its time restarts on resume."""
    pending: list[Deferred[UserInformationProto]] = []

    def slow(call: CallContext, request: UserInformationProto) -> Deferred[UserInformationProto]:
        pending.append(Deferred())
        return pending[-1]

    port = Port(IpcLimits(max_outstanding_calls=1, frame_timeout_s=5, idle_timeout_s=20), handler=slow)
    conn = port.connect()
    second = call_frame(2, "echoUser", TEST_PROTOCOL, ALICE)
    conn.send(HANDSHAKE + call_frame(1, "echoUser", TEST_PROTOCOL, ALICE) + second[:5])
    assert conn.transport.producerState == "paused"
    port.clock.advance(30)
    assert not conn.closing
    pending[0].callback(ALICE)
    assert conn.transport.producerState == "producing"
    port.clock.advance(4.9)
    assert not conn.closing
    port.clock.advance(0.1)
    assert conn.replies()[-1].status == FATAL and conn.closing


def test_idle_connections_close_quietly_and_pings_keep_them() -> None:
    """No input and no running call for the idle timeout: closed without a reply; pings count as input."""
    port = Port(IpcLimits(idle_timeout_s=20))
    idle, pinging = port.connect("10.0.0.1"), port.connect("10.0.0.2")
    idle.send(HANDSHAKE)
    pinging.send(HANDSHAKE)
    for _ in range(5):
        port.clock.advance(9)
        pinging.send(ping_frame())
    assert idle.closing and idle.replies() == []
    assert not pinging.closing
    assert port.warnings() == []  # an idle close is not a refusal


def test_closed_connections_leave_no_timers() -> None:
    """A connection that goes away cancels its deadline check."""
    port = Port(IpcLimits())
    conn = port.connect()
    conn.send(HANDSHAKE)
    conn.hang_up()
    assert port.clock.getDelayedCalls() == []


def test_a_peer_that_does_not_read_its_replies_stops_being_read() -> None:
    """Twisted pauses the reply producer when replies pile up unsent: reading stops until they drain.

    Reading resumes only when neither unsent replies nor the outstanding-call limit hold it.
    """
    pending: list[Deferred[UserInformationProto]] = []

    def slow(call: CallContext, request: UserInformationProto) -> Deferred[UserInformationProto]:
        pending.append(Deferred())
        return pending[-1]

    port = Port(IpcLimits(max_outstanding_calls=1), handler=slow)
    conn = port.connect()
    conn.send(HANDSHAKE)
    replies = conn.transport.producer
    assert replies is not None and conn.transport.streaming
    replies.pauseProducing()  # as Twisted does past 64 KiB unsent
    assert conn.transport.producerState == "paused"
    replies.resumeProducing()
    assert conn.transport.producerState == "producing"
    conn.send(call_frame(1, "echoUser", TEST_PROTOCOL, ALICE))  # the call limit pauses too
    replies.pauseProducing()
    replies.resumeProducing()
    assert conn.transport.producerState == "paused"  # still one call unanswered
    pending[0].callback(ALICE)
    assert conn.transport.producerState == "producing"


def test_closing_unregisters_the_reply_producer() -> None:
    """A FATAL close unregisters the producer first, or Twisted would never close the transport."""
    port = Port(IpcLimits())
    conn = port.connect()
    conn.send(preamble(version=8))
    assert conn.replies()[0].status == FATAL
    assert conn.closing and conn.transport.producer is None


def test_a_flood_of_bad_connections_logs_ten_lines_and_a_count() -> None:
    """30 connections with a bad preamble in one interval: 10 detailed warnings, then one count of 20."""
    port = Port(IpcLimits())
    for i in range(30):
        conn = port.connect(f"203.0.113.{i % 4}")
        assert conn.send(preamble(version=8))[0].status == FATAL
        conn.hang_up()
    detailed = [e for e in port.warnings() if "error_class" in e]
    assert len(detailed) == 10 and all(e["error_class"] == errors.RPC_VERSION_MISMATCH for e in detailed)
    port.clock.advance(10)
    [summary] = port.warnings(PROTOCOL_ERRORS_SUPPRESSED)
    assert (summary["count"], summary["addresses"]) == (20, 4)
