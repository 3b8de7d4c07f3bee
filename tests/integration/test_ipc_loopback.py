"""A real IPC server on 127.0.0.1: abusive clients do not disturb a well-behaved one.

One client keeps making pipelined calls on one connection and checks every answer,
while another opens connection after connection and sends malformed input
(truncated, oversized, garbage, out of order, unknown method, HTTP, bad preamble).
Each bad connection must get Hadoop's answer for its fault; the good client must get
every answer right throughout.  The load generator is also checked against it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import LogEvent, Logger, LogLevel
from twisted.python.failure import Failure

from bench.ipc_load import run_load
from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
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
    delimited,
    frame,
    parse_responses,
    ping_frame,
    preamble,
    request_header,
)
from tests.support.reactor import reactor

pytestmark = pytest.mark.integration

HANDSHAKE = preamble() + context_frame(TEST_PROTOCOL)
MAX_DATA_LENGTH = 64 * 1024
TIMEOUT = 20.0


def echo_user(call: CallContext, request: UserInformationProto) -> UserInformationProto:
    """Answer with the request, so the client can check each answer is its own."""
    return request


@dataclass
class Server:
    """The listening server, its port, and its log events."""

    port: int
    log_events: list[LogEvent]

    def at_level(self, level: LogLevel) -> list[LogEvent]:
        """Log events of one level."""
        return [e for e in self.log_events if e["log_level"] is level]


@pytest.fixture
def server() -> Any:
    """A server on 127.0.0.1, port 0 (the kernel picks), stopped after the test."""
    log_events: list[LogEvent] = []
    factory = IpcServerFactory(
        [RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": echo_user})],
        max_data_length=MAX_DATA_LENGTH,
        log=Logger(namespace="loopback", observer=log_events.append),
    )
    listening = reactor().listenTCP(0, factory, interface="127.0.0.1")
    yield Server(listening.getHost().port, log_events)
    pytest_twisted.blockon(defer.maybeDeferred(listening.stopListening))


class RawClient(Protocol):
    """Collects everything the server sends; fires ``closed`` when the connection ends."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._reader = ResponseReader()
        self.replies: list[ParsedResponse] = []
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        """Keep the bytes; parse replies unless this is an HTTP answer."""
        self.received += data
        if not self.received.startswith(b"HTTP"):
            self.replies.extend(self._reader.feed(data))
        for count, waiter in list(self._waiting):
            if len(self.replies) >= count:
                self._waiting.remove((count, waiter))
                waiter.callback(None)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Signal the end."""
        self.closed.callback(None)

    def replies_count(self, count: int) -> defer.Deferred[None]:
        """Fires once ``count`` replies have arrived in total."""
        if len(self.replies) >= count:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((count, waiter))
        return waiter.addTimeout(TIMEOUT, reactor())


async def connect(port: int) -> RawClient:
    """A new TCP connection to the server."""
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", port)
    return await connectProtocol(endpoint, RawClient())


async def well_behaved(port: int, abuse_running: Callable[[], bool], min_rounds: int = 20) -> tuple[int, int]:
    """Pipelined calls (with pings) on one connection, every answer checked.

    Runs until the abuse is over (and at least ``min_rounds`` rounds of 8 calls);
    returns the number of calls and of rounds completed while the abuse was running.
    """
    client = await connect(port)
    client.transport.write(HANDSHAKE)
    expected: dict[int, UserInformationProto] = {}
    call_id = rounds = overlapping = 0
    while rounds < min_rounds or abuse_running():
        batch = b""
        for _ in range(8):
            expected[call_id] = UserInformationProto(effectiveUser=f"user-{call_id}")
            batch += call_frame(call_id, "echoUser", TEST_PROTOCOL, expected[call_id])
            call_id += 1
        client.transport.write(ping_frame() + batch)
        await client.replies_count(call_id)
        rounds += 1
        overlapping += abuse_running()
    for reply in client.replies:
        assert reply.status == SUCCESS, reply.header
        assert reply.parse_body(UserInformationProto) == expected[reply.call_id]
    assert sorted(r.call_id for r in client.replies) == list(range(call_id))
    client.transport.loseConnection()
    await client.closed
    return call_id, overlapping


def expect_fatal(detail: int) -> Callable[[RawClient], None]:
    """The connection ended with a FATAL reply carrying ``detail``."""

    def check(client: RawClient) -> None:
        replies = parse_responses(client.received)
        assert replies and replies[-1].status == FATAL, client.received
        assert replies[-1].header.errorDetail == detail

    return check


def expect_http_404(client: RawClient) -> None:
    """The connection got the plain-text HTTP answer."""
    assert client.received.startswith(b"HTTP/1.1 404 Not Found")


def expect_nothing(client: RawClient) -> None:
    """The server said nothing (the client hung up mid-frame)."""
    assert client.received == b""


GOOD_CALL = call_frame(1, "echoUser", TEST_PROTOCOL, UserInformationProto(effectiveUser="x"))

# name -> (bytes to send, close ourselves after sending?, check)
MALFORMED: dict[str, tuple[bytes, bool, Callable[[RawClient], None]]] = {
    "truncated": (HANDSHAKE + GOOD_CALL[:-5], True, expect_nothing),
    "truncated-preamble": (b"hrp", True, expect_nothing),
    "oversized": (HANDSHAKE + struct.pack(">I", MAX_DATA_LENGTH + 1) + b"\x00" * 100, False,
                  expect_fatal(errors.FATAL_INVALID_RPC_HEADER)),
    "negative-length": (HANDSHAKE + b"\xff\xff\xff\xff", False, expect_fatal(errors.FATAL_INVALID_RPC_HEADER)),
    "garbage-header": (HANDSHAKE + frame(b"\x0a\xff\xff\xff\xff\xff"), False,
                       expect_fatal(errors.FATAL_DESERIALIZING_REQUEST)),
    "garbage-body": (HANDSHAKE + frame(delimited(request_header(1)), b"\x03\x0a\x09"), False,
                     expect_fatal(errors.FATAL_DESERIALIZING_REQUEST)),
    "random-bytes": (bytes(range(256)) * 4, False, expect_fatal(errors.FATAL_VERSION_MISMATCH)),
    "call-before-context": (preamble() + GOOD_CALL, False, expect_fatal(errors.FATAL_INVALID_RPC_HEADER)),
    "context-before-preamble": (context_frame(TEST_PROTOCOL) + preamble(), False,
                                expect_fatal(errors.FATAL_VERSION_MISMATCH)),
    "wrong-version": (preamble(version=8) + context_frame(TEST_PROTOCOL), False,
                      expect_fatal(errors.FATAL_VERSION_MISMATCH)),
    "unknown-protocol-context": (preamble() + context_frame("org.example.NopePB"), False,
                                 expect_fatal(errors.FATAL_UNAUTHORIZED)),
    "sasl-not-requested": (HANDSHAKE + frame(delimited(request_header(-33)), b"\x02\x10\x01"), False,
                           expect_fatal(errors.FATAL_INVALID_RPC_HEADER)),
    "http-get": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", False, expect_http_404),
}


async def misbehave(port: int, name: str) -> None:
    """One bad connection: send the malformed input and check the server's answer."""
    data, hang_up, check = MALFORMED[name]
    client = await connect(port)
    client.transport.write(data)
    if hang_up:
        client.transport.loseConnection()
    await client.closed.addTimeout(TIMEOUT, reactor())
    check(client)


async def unknown_method_then_good_call(port: int) -> None:
    """An unknown method is an ERROR on a connection that keeps serving."""
    client = await connect(port)
    client.transport.write(HANDSHAKE + call_frame(0, "noSuchMethod", TEST_PROTOCOL, b""))
    await client.replies_count(1)
    assert (client.replies[0].status, client.replies[0].exception_class) == (ERROR, errors.RPC_NO_SUCH_METHOD)
    client.transport.write(GOOD_CALL)
    await client.replies_count(2)
    assert client.replies[1].status == SUCCESS
    client.transport.loseConnection()
    await client.closed


@pytest_twisted.ensureDeferred
async def test_malformed_connections_do_not_disturb_a_well_behaved_client(server: Server) -> None:
    """Rounds of concurrent bad connections while one good client's answers stay correct."""
    done = False

    async def abuse() -> int:
        nonlocal done
        count = 0
        try:
            for _ in range(5):
                scenarios = [misbehave(server.port, name) for name in MALFORMED]
                scenarios.append(unknown_method_then_good_call(server.port))
                await defer.gatherResults(
                    [defer.Deferred.fromCoroutine(s) for s in scenarios], consumeErrors=True
                )
                count += len(scenarios)
        finally:
            done = True
        return count

    good, bad = await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(well_behaved(server.port, lambda: not done)),
            defer.Deferred.fromCoroutine(abuse()),
        ],
        consumeErrors=True,
    )
    calls, overlapping = good
    assert bad == 5 * (len(MALFORMED) + 1)
    assert calls >= 160
    assert overlapping >= 3, "the good client should have been served while the abuse went on"
    # Every FATAL was logged as a warning naming its peer; no handler or core failed.
    fatal_scenarios = sum(1 for _, _, check in MALFORMED.values() if check not in (expect_http_404, expect_nothing))
    assert len(server.at_level(LogLevel.warn)) == 5 * fatal_scenarios
    assert server.at_level(LogLevel.error) == [] and server.at_level(LogLevel.critical) == []


@pytest_twisted.ensureDeferred
async def test_load_generator_gets_every_call_answered(server: Server) -> None:
    """bench/ipc_load.run_load over 2 processes x 4 connections counts exactly the calls asked."""
    request = UserInformationProto(effectiveUser="bench").SerializeToString()
    result = await threads.deferToThread(
        run_load, "127.0.0.1", server.port, TEST_PROTOCOL, "echoUser", request,
        connections=4, processes=2, depth=8, calls=4000, timeout=60,
    )
    assert (result["calls"], result["errors"], result["first_error"]) == (4000, 0, None)
    assert result["calls_per_second"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


@pytest_twisted.ensureDeferred
async def test_load_generator_reports_a_wrong_method(server: Server) -> None:
    """A method the server lacks is reported from the warm-up call, not measured."""
    result = await threads.deferToThread(
        run_load, "127.0.0.1", server.port, TEST_PROTOCOL, "getNewApplication", b"",
        connections=1, processes=1, depth=1, calls=10, timeout=30,
    )
    assert result["calls"] == 0
    assert "RpcNoSuchMethodException" in result["first_error"]
