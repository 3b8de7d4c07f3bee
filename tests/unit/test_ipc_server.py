"""The Twisted edge: handlers run, results and failures become replies, logs name the call.

No sockets: each connection is a protocol from the factory over a ``StringTransport``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, Logger, LogLevel
from twisted.python.failure import Failure

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.errors import RemoteError
from cortex_rm.yarn_api.ipc_limits import IpcLimits
from cortex_rm.yarn_api.ipc_server import IpcServerFactory, IpcServerProtocol, format_peer
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import IpcConnectionContextProto, UserInformationProto
from cortex_rm.yarn_api.rpc_protocol import CallContext, RpcProtocol
from tests.support.ipc_frames import (
    ERROR,
    FATAL,
    SUCCESS,
    TEST_PROTOCOL,
    TEST_SERVICE,
    ParsedResponse,
    ResponseReader,
    call_frame,
    context_frame,
    ping_frame,
    preamble,
)

HANDSHAKE = preamble() + context_frame(TEST_PROTOCOL)
ALICE = UserInformationProto(effectiveUser="alice")


class RecordingTransport(StringTransport):
    """A StringTransport that remembers each write() separately."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "10.1.2.3", 4567))
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Record, then buffer as usual."""
        self.writes.append(data)
        super().write(data)


class Server:
    """A factory serving the test protocol, with its log events captured."""

    def __init__(self, handlers: dict[str, Callable[..., Any]], **options: Any) -> None:
        self.log_events: list[LogEvent] = []
        self.factory = IpcServerFactory(
            [RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, handlers)],
            log=Logger(namespace="test", observer=self.log_events.append),
            **options,
        )

    def connect(self) -> Client:
        """Accept a new connection and return its client-side view."""
        transport = RecordingTransport()
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        return Client(protocol, transport)

    def events_at(self, level: LogLevel) -> list[LogEvent]:
        """Captured log events of one level."""
        return [e for e in self.log_events if e["log_level"] is level]


class Client:
    """Feeds bytes to one server connection and reads its replies."""

    def __init__(self, protocol: IpcServerProtocol, transport: RecordingTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._reader = ResponseReader()

    def send(self, data: bytes) -> list[ParsedResponse]:
        """Deliver ``data`` and return the replies written since the last read."""
        self.protocol.dataReceived(data)
        return self.read()

    def read(self) -> list[ParsedResponse]:
        """Replies written since the last read."""
        data = self.transport.value()
        self.transport.clear()
        return self._reader.feed(data)


def echo(call: CallContext, request: UserInformationProto) -> UserInformationProto:
    """Answer with the request."""
    return request


def test_pipelined_sync_calls_are_answered_in_one_write() -> None:
    """Calls decoded from one read are answered together, with a single transport.write."""
    client = Server({"echoUser": echo}).connect()
    client.send(HANDSHAKE)
    client.transport.writes.clear()
    replies = client.send(b"".join(call_frame(i, "echoUser", TEST_PROTOCOL, ALICE) for i in range(10)))
    assert [(r.call_id, r.status) for r in replies] == [(i, SUCCESS) for i in range(10)]
    assert len(client.transport.writes) == 1
    assert replies[3].parse_body(UserInformationProto) == ALICE


def test_deferred_handlers_complete_out_of_order() -> None:
    """Replies go out when each Deferred fires, whatever the order of the calls."""
    pending: dict[str, Deferred[UserInformationProto]] = {}

    def slow(call: CallContext, request: UserInformationProto) -> Deferred[UserInformationProto]:
        pending[request.effectiveUser] = Deferred()
        return pending[request.effectiveUser]

    server = Server({"echoUser": slow})
    client = server.connect()
    client.send(HANDSHAKE)
    first, second = UserInformationProto(effectiveUser="first"), UserInformationProto(effectiveUser="second")
    assert client.send(call_frame(1, "echoUser", TEST_PROTOCOL, first) + call_frame(2, "echoUser", TEST_PROTOCOL, second)) == []
    pending["second"].callback(second)
    [reply] = client.read()
    assert (reply.call_id, reply.parse_body(UserInformationProto)) == (2, second)
    pending["first"].callback(first)
    [reply] = client.read()
    assert reply.call_id == 1
    assert client.protocol.core.outstanding == 0


def test_already_fired_deferred_is_answered_in_the_same_write() -> None:
    """A Deferred that has its result already is answered inside the read's batch."""
    client = Server({"echoUser": lambda call, request: succeed(request)}).connect()
    client.send(HANDSHAKE)
    client.transport.writes.clear()
    replies = client.send(call_frame(1, "echoUser", TEST_PROTOCOL, ALICE) + call_frame(2, "echoUser", TEST_PROTOCOL, ALICE))
    assert [r.call_id for r in replies] == [1, 2]
    assert len(client.transport.writes) == 1


def test_coroutine_handlers_are_awaited() -> None:
    """An async handler's return value is the response."""
    gate: Deferred[None] = Deferred()

    async def later(call: CallContext, request: UserInformationProto) -> UserInformationProto:
        await gate
        return request

    client = Server({"echoUser": later}).connect()
    client.send(HANDSHAKE)
    assert client.send(call_frame(1, "echoUser", TEST_PROTOCOL, ALICE)) == []
    gate.callback(None)
    [reply] = client.read()
    assert reply.parse_body(UserInformationProto) == ALICE


@pytest.mark.parametrize("deferred", [False, True], ids=["raised", "errback"])
def test_remote_error_becomes_an_error_reply(deferred: bool) -> None:
    """RemoteError, raised or as a Deferred's failure: ERROR with its class; nothing logged as error."""
    error = RemoteError(errors.APPLICATION_NOT_FOUND, "Application with id 'application_1_0007' doesn't exist in RM.")

    def handler(call: CallContext, request: UserInformationProto) -> Any:
        if deferred:
            return Deferred.fromCoroutine(_raise(error))
        raise error

    server = Server({"echoUser": handler})
    client = server.connect()
    client.send(HANDSHAKE)
    [reply] = client.send(call_frame(4, "echoUser", TEST_PROTOCOL, ALICE, retry_count=1))
    assert (reply.call_id, reply.status, reply.body) == (4, ERROR, None)
    assert reply.exception_class == errors.APPLICATION_NOT_FOUND
    assert reply.header.errorMsg == error.message
    assert reply.header.errorDetail == errors.ERROR_APPLICATION
    assert reply.header.retryCount == 1
    assert server.events_at(LogLevel.error) == [] and server.events_at(LogLevel.critical) == []


async def _raise(error: Exception) -> None:
    raise error


@pytest.mark.parametrize("deferred", [False, True], ids=["raised", "errback"])
def test_unexpected_exception_is_a_yarn_exception_and_is_logged(deferred: bool) -> None:
    """A handler bug: ERROR YarnException naming the method; a failure log with method and peer."""

    def broken(call: CallContext, request: UserInformationProto) -> Any:
        if deferred:
            return Deferred.fromCoroutine(_raise(KeyError("application_1_0001")))
        raise KeyError("application_1_0001")

    server = Server({"echoUser": broken, "whoAmI": lambda call, request: ALICE})
    client = server.connect()
    client.send(HANDSHAKE)
    [reply] = client.send(call_frame(5, "echoUser", TEST_PROTOCOL, ALICE))
    assert reply.status == ERROR
    assert reply.exception_class == errors.YARN_EXCEPTION
    assert "echoUser" in reply.header.errorMsg and "KeyError" in reply.header.errorMsg
    [logged] = server.events_at(LogLevel.error)
    assert logged["method"] == "echoUser"
    assert logged["peer"] == "10.1.2.3:4567"
    assert logged["protocol"] == TEST_PROTOCOL
    assert isinstance(logged["log_failure"], Failure) and logged["log_failure"].check(KeyError)
    # The connection is unharmed.
    [after] = client.send(call_frame(6, "whoAmI", TEST_PROTOCOL, IpcConnectionContextProto()))
    assert after.status == SUCCESS


def test_wrong_response_type_is_an_error_serializing_response() -> None:
    """Returning another message type: ERROR_SERIALIZING_RESPONSE, and an error log."""
    server = Server({"echoUser": lambda call, request: IpcConnectionContextProto(protocol="x")})
    client = server.connect()
    client.send(HANDSHAKE)
    [reply] = client.send(call_frame(1, "echoUser", TEST_PROTOCOL, ALICE))
    assert reply.status == ERROR
    assert reply.header.errorDetail == errors.ERROR_SERIALIZING_RESPONSE
    [logged] = server.events_at(LogLevel.error)
    assert logged["method"] == "echoUser"


def test_fatal_frame_closes_after_the_reply_and_is_logged() -> None:
    """A FATAL is written, then loseConnection; a warning names the peer and exception class."""
    server = Server({"echoUser": echo})
    client = server.connect()
    [fatal] = client.send(preamble() + call_frame(0, "echoUser", TEST_PROTOCOL, ALICE))
    assert fatal.status == FATAL
    assert client.transport.disconnecting
    [warning] = server.events_at(LogLevel.warn)
    assert warning["peer"] == "10.1.2.3:4567"
    assert warning["error_class"] == errors.RPC_SERVER_EXCEPTION
    assert warning["error_message"] == "Connection context not established"


def test_http_get_is_answered_and_closed() -> None:
    """An HTTP request gets the 404 text and the connection closes."""
    client = Server({"echoUser": echo}).connect()
    client.protocol.dataReceived(b"GET /ws/v1/cluster HTTP/1.1\r\n\r\n")
    assert client.transport.value().startswith(b"HTTP/1.1 404")
    assert client.transport.disconnecting


def test_one_bad_connection_does_not_disturb_another() -> None:
    """A FATAL on one connection leaves the factory's other connections serving."""
    server = Server({"echoUser": echo})
    good, bad = server.connect(), server.connect()
    good.send(HANDSHAKE)
    bad.send(HANDSHAKE + b"\x7f\xff\xff\xff")
    assert bad.transport.disconnecting
    [reply] = good.send(call_frame(1, "echoUser", TEST_PROTOCOL, ALICE))
    assert reply.status == SUCCESS and not good.transport.disconnecting
    third = server.connect()
    third.send(HANDSHAKE)
    assert third.send(call_frame(2, "echoUser", TEST_PROTOCOL, ALICE))[0].status == SUCCESS


def test_reply_after_connection_lost_is_dropped() -> None:
    """A Deferred firing after the client left writes nothing and logs no error."""
    pending: list[Deferred[UserInformationProto]] = []
    server = Server({"echoUser": lambda call, request: pending.append(Deferred()) or pending[-1]})
    client = server.connect()
    client.send(HANDSHAKE + call_frame(1, "echoUser", TEST_PROTOCOL, ALICE))
    client.protocol.connectionLost(Failure(ConnectionError("gone")))
    pending[0].callback(ALICE)
    assert client.transport.value() == b""
    assert server.events_at(LogLevel.critical) == [] and server.events_at(LogLevel.error) == []


def test_outstanding_call_limit_pauses_and_resumes_reading() -> None:
    """With max_outstanding_calls=2, the transport is paused at 2 unanswered calls, resumed below."""
    pending: list[Deferred[UserInformationProto]] = []
    server = Server(
        {"echoUser": lambda call, request: pending.append(Deferred()) or pending[-1]}, limits=IpcLimits(max_outstanding_calls=2)
    )
    client = server.connect()
    client.send(HANDSHAKE + call_frame(1, "echoUser", TEST_PROTOCOL, ALICE))
    assert client.transport.producerState == "producing"
    client.send(call_frame(2, "echoUser", TEST_PROTOCOL, ALICE))
    assert client.transport.producerState == "paused"
    pending[0].callback(ALICE)
    assert client.transport.producerState == "producing"
    assert [r.call_id for r in client.read()] == [1]


def test_state_transitions_are_logged_with_stable_fields() -> None:
    """One debug event per transition, with peer, state_from and state_to."""
    server = Server({"echoUser": echo})
    server.connect().send(HANDSHAKE)
    transitions = [(e["state_from"], e["state_to"]) for e in server.log_events if "state_from" in e]
    assert transitions == [("AWAIT_PREAMBLE", "AWAIT_CONTEXT"), ("AWAIT_CONTEXT", "READY")]
    assert all(e["peer"] == "10.1.2.3:4567" for e in server.log_events)


def test_internal_error_in_the_core_aborts_only_that_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the core itself raises, the connection is aborted and the failure logged."""
    server = Server({"echoUser": echo})
    client = server.connect()

    def explode(data: bytes) -> list[object]:
        raise AssertionError("bug")

    monkeypatch.setattr(client.protocol.core, "receive", explode)
    client.protocol.dataReceived(b"hrpc")
    assert client.transport.disconnected
    [logged] = server.events_at(LogLevel.critical)
    assert logged["log_failure"].check(AssertionError)


def test_factory_checks_its_options() -> None:
    """Bad limits fail when the factory is built."""
    protocol = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {})
    with pytest.raises(ValueError):
        IpcServerFactory([protocol], limits=IpcLimits(max_outstanding_calls=0))
    with pytest.raises(ValueError):
        IpcServerFactory([protocol], max_data_length=0)
    with pytest.raises(ValueError):
        IpcServerFactory([protocol, protocol])


def test_format_peer() -> None:
    """host:port for IPv4, [host]:port for IPv6."""
    assert format_peer(IPv4Address("TCP", "127.0.0.1", 8032)) == "127.0.0.1:8032"
    assert format_peer(IPv6Address("TCP", "::1", 8032)) == "[::1]:8032"


def test_idle_connections_are_closed_but_busy_or_active_ones_stay() -> None:
    """No bytes for the idle timeout and no call running: closed; activity or a pending call keeps it."""
    from twisted.internet.task import Clock

    clock = Clock()
    pending: list[Deferred[UserInformationProto]] = []

    def slow(call: CallContext, request: UserInformationProto) -> Deferred[UserInformationProto]:
        pending.append(Deferred())
        return pending[-1]

    server = Server({"echoUser": slow}, limits=IpcLimits(idle_timeout_s=20.0), clock=clock)
    idle, active, busy = server.connect(), server.connect(), server.connect()
    for client in (idle, active, busy):
        client.send(HANDSHAKE)
    busy.send(call_frame(1, "echoUser", TEST_PROTOCOL, ALICE))
    clock.advance(15)
    active.send(ping_frame())
    clock.advance(6)
    assert idle.transport.disconnecting
    assert not active.transport.disconnecting and not busy.transport.disconnecting
    clock.advance(30)
    assert active.transport.disconnecting
    assert not busy.transport.disconnecting  # its call has not been answered
    pending[0].callback(ALICE)
    clock.advance(20)
    assert busy.transport.disconnecting
