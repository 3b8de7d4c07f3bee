"""A real IPC port on loopback under hostile load: bounded, and still serving an honest client.

A client that sends calls but never reads its replies must stop being read once
its replies pile up, instead of growing the server's write buffers without bound.

Hostile connections come from 127.0.0.2 (all of 127/8 is loopback on Linux): more than
the per-address cap, each declaring a frame of the maximum size and sending as much of
it as the server takes.  Meanwhile an honest client on 127.0.0.1 makes calls, large
ones included (split over several reads), and every answer must be right.  The port's
buffered bytes must stay within its budget throughout, and every refusal must be a
FATAL ``RetriableException`` the Java client would turn into an exception.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.ipc_limits import IpcLimits, MiB
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.rpc_protocol import CallContext, RpcProtocol
from tests.support.ipc_frames import (
    FATAL,
    SUCCESS,
    TEST_PROTOCOL,
    TEST_SERVICE,
    ResponseReader,
    call_frame,
    context_frame,
    parse_responses,
    preamble,
)
from tests.support.reactor import reactor, wait_until

pytestmark = pytest.mark.integration

HANDSHAKE = preamble() + context_frame(TEST_PROTOCOL)
MAX_DATA_LENGTH = 1 * MiB
LIMITS = IpcLimits(
    max_connections=64,
    max_connections_per_address=30,
    max_buffered_bytes=4 * MiB,
    frame_timeout_s=60.0,  # the hostile connections stay open for the whole test unless refused
    idle_timeout_s=60.0,
)
HOSTILE = 36
TIMEOUT = 30.0


class Hostile(Protocol):
    """Declares a maximum-size frame and sends all but its last byte, in 64 KiB writes, as fast as it can."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.open = False

    def connectionMade(self) -> None:
        """Connected: wait for :meth:`attack`."""
        self.open = True

    def attack(self) -> None:
        """Handshake, declare, then push the body."""
        if not self.open:
            return
        assert self.transport is not None
        self.transport.write(HANDSHAKE + MAX_DATA_LENGTH.to_bytes(4, "big"))
        chunk = b"\x5a" * (64 * 1024)
        for _ in range(MAX_DATA_LENGTH // len(chunk) - 1):
            self.transport.write(chunk)
        self.transport.write(chunk[:-1])

    def dataReceived(self, data: bytes) -> None:
        """Keep what the server says."""
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Signal the end."""
        self.open = False
        self.closed.callback(None)


class Honest(Protocol):
    """Makes calls one at a time and checks each answer."""

    def __init__(self) -> None:
        self.reader = ResponseReader()
        self.replies: list[Any] = []
        self.waiter: defer.Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:
        """Collect replies; wake the waiting call."""
        self.replies.extend(self.reader.feed(data))
        if self.waiter is not None and self.replies:
            waiter, self.waiter = self.waiter, None
            waiter.callback(None)

    async def call(self, call_id: int, request: UserInformationProto) -> Any:
        """One call; its reply."""
        assert self.transport is not None
        self.waiter = defer.Deferred()
        self.transport.write(call_frame(call_id, "echoUser", TEST_PROTOCOL, request))
        await self.waiter.addTimeout(TIMEOUT, reactor())
        return self.replies.pop()


@pytest.fixture
def port() -> Any:
    """A port with small limits on 127.0.0.1, port 0."""
    factory = IpcServerFactory(
        [RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"echoUser": _echo})],
        max_data_length=MAX_DATA_LENGTH,
        limits=LIMITS,
        clock=reactor(),
    )
    listening = reactor().listenTCP(0, factory, interface="127.0.0.1")
    yield factory, listening.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(listening.stopListening))


def _echo(call: CallContext, request: UserInformationProto) -> UserInformationProto:
    return request


@pytest_twisted.ensureDeferred
async def test_honest_calls_are_served_while_hostile_connections_are_open(port: Any) -> None:
    """36 hostile connections from one address, 4 MiB budget: caps and budget hold, the honest client is served."""
    factory, number = port
    peak = 0

    def watch() -> None:
        nonlocal peak
        peak = max(peak, factory.budget.total)

    watcher = LoopingCall(watch)
    watcher.clock = reactor()
    watcher.start(0.005)
    hostile_endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", number, bindAddress=("127.0.0.2", 0))
    hostile = [await connectProtocol(hostile_endpoint, Hostile()) for _ in range(HOSTILE)]
    await wait_until(lambda: sum(not h.open for h in hostile) == HOSTILE - 30, "the per-address cap refused 6", 10)
    for h in hostile:
        h.attack()
    honest = await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", number), Honest())
    honest.transport.write(HANDSHAKE)
    # The honest client works while the hostile bytes pour in: small calls and 200 KB ones.
    for call_id in range(40):
        request = UserInformationProto(effectiveUser=f"user-{call_id}" + ("x" * 200_000 if call_id % 4 == 0 else ""))
        reply = await honest.call(call_id, request)
        assert (reply.call_id, reply.status) == (call_id, SUCCESS), reply.header
        assert reply.parse_body(UserInformationProto) == request
    await wait_until(lambda: sum(not h.open for h in hostile) >= HOSTILE - 4, "the budget refused hostile frames", 20)
    still_open = [h for h in hostile if h.open]
    assert factory.budget.total <= LIMITS.max_buffered_bytes
    watcher.stop()
    assert peak <= LIMITS.max_buffered_bytes
    # Every hostile connection that ended was refused in Hadoop's form.
    refused = [parse_responses(h.received) for h in hostile if not h.open]
    assert all(r and r[-1].status == FATAL and r[-1].exception_class == errors.RETRIABLE_EXCEPTION for r in refused)
    messages = [r[-1].header.errorMsg for r in refused]
    assert sum("already has 30 connections" in m for m in messages) == HOSTILE - 30
    assert sum("buffers" in m for m in messages) >= 30 - 4
    assert factory.slots.from_address("127.0.0.2") == len(still_open)
    for h in still_open:
        h.transport.loseConnection()
    await defer.gatherResults([h.closed for h in hostile])
    honest.transport.loseConnection()
    await wait_until(lambda: factory.slots.total == 0 and factory.budget.total == 0, "all slots given back", 10)


def _deaf(port: int, limit: int) -> int:
    """Send 10 KB calls without ever reading a reply, until the server stops reading us; the bytes it took."""
    frame = call_frame(1, "echoUser", TEST_PROTOCOL, UserInformationProto(effectiveUser="d" * 10_000))
    batch = frame * 100
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(2.0)
        sock.sendall(HANDSHAKE)
        try:
            while sent < limit:
                sock.sendall(batch)
                sent += len(batch)
        except TimeoutError:
            pass
    return sent


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_its_replies_stops_being_read(port: Any) -> None:
    """Unsent replies hold a connection's reading: a deaf client gets only a bounded amount in, others are served."""
    _, number = port
    deaf = threads.deferToThread(_deaf, number, 256 * MiB)
    honest = await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", number), Honest())
    honest.transport.write(HANDSHAKE)
    for call_id in range(20):
        reply = await honest.call(call_id, UserInformationProto(effectiveUser=f"user-{call_id}"))
        assert reply.status == SUCCESS
    taken = await deaf
    # Kernel socket buffers on both sides (a few MB each on loopback) plus 64 KiB of
    # unsent replies: far below what a server reading everything would have taken.
    assert taken < 64 * MiB
    honest.transport.loseConnection()
