"""Ring transports on 127.0.0.1: real sockets, real mutual TLS with fresh identities, real Thrift frames.

Each test waits on conditions (bounded, only so that a broken test cannot hang),
or on the Deferred of a closing connection; none sleeps for correctness.
"""

from __future__ import annotations

import dataclasses

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.dht import chord_messages as chord
from cortex_rm.dht import kv_messages as kv
from cortex_rm.dht import swim_messages as swim
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.peer import Peer
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.ring_codec import MAX_FRAME_BYTES, encode_envelope
from cortex_rm.internal.ring_transport import RingTransport
from cortex_rm.internal.tls import MutualTLS
from tests.support.reactor import reactor
from tests.support.reactor import wait_until as wait_for

pytestmark = pytest.mark.integration

WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], what: str) -> defer.Deferred:
    """Wait (bounded by WAIT_S) until ``condition`` holds."""
    return wait_for(condition, what, WAIT_S)


@dataclass
class Member:
    """A ring member's transport, what it received, and how others address it."""

    identity: NodeIdentity
    transport: RingTransport
    received: list[Envelope] = field(default_factory=list)
    port: int = 0

    @property
    def peer(self) -> Peer:
        return Peer(self.identity.ring_id, f"127.0.0.1:{self.port}")

    def envelope(self, body: Any, piggyback: tuple[Any, ...] = ()) -> Envelope:
        return Envelope(self.peer, body, piggyback)


def member(
    on_envelope: Callable[[Envelope], None] | None = None,
    idle_timeout: float = 30.0,
    max_queued: int = 64,
    on_link_checked: Callable[[Peer, int | None], None] | None = None,
) -> Member:
    """A member with a fresh identity, not listening yet."""
    identity = NodeIdentity.generate()
    received: list[Envelope] = []
    transport = RingTransport(
        identity,
        MutualTLS(identity),
        reactor(),
        on_envelope or received.append,
        connect_timeout=5.0,
        idle_timeout=idle_timeout,
        max_queued=max_queued,
        on_link_checked=on_link_checked,
    )
    return Member(identity, transport, received)


@defer.inlineCallbacks
def listening(m: Member, port: int = 0):  # type: ignore[no-untyped-def]
    """``m`` listening on 127.0.0.1:``port`` (0: any free port)."""
    listening_port = yield m.transport.listen("127.0.0.1", port)
    m.port = listening_port.getHost().port
    return m


@defer.inlineCallbacks
def stop_all(*members: Member):  # type: ignore[no-untyped-def]
    yield defer.gatherResults([m.transport.stop() for m in members])


def warnings(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") is LogLevel.warn]


def errors(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]


@implementer(IHandshakeListener)
class RawPeer(Protocol):
    """A TLS client that writes ``payload`` once the handshake completes; ``closed`` fires when it ends."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.handshaken = False
        self.closed: defer.Deferred[str] = defer.Deferred()

    def handshakeCompleted(self) -> None:
        self.handshaken = True
        transport: Any = self.transport
        transport.write(self.payload)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(reason.getErrorMessage())


@defer.inlineCallbacks
def raw_exchange(target: Member, identity: NodeIdentity, payload: bytes):  # type: ignore[no-untyped-def]
    """Connect to ``target`` as ``identity``, write ``payload``, wait (bounded) until ``target`` hangs up."""
    peer = RawPeer(payload)
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", target.port, timeout=5)
    factory: Any = TLSMemoryBIOFactory(MutualTLS(identity), True, Factory.forProtocol(lambda: peer))  # type: ignore
    yield endpoint.connect(factory)
    yield peer.closed.addTimeout(WAIT_S, reactor())
    return peer


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


# ------------------------------------------------------------- the tests


@pytest_twisted.inlineCallbacks
def test_three_members_exchange_envelopes_both_ways(log_events: list[LogEvent]):  # type: ignore[no-untyped-def]
    """Every member sends to the other two; each gets exactly what was sent to it, in order, over one connection."""
    a, b, c = (yield listening(member())), (yield listening(member())), (yield listening(member()))
    try:
        members = (a, b, c)
        sent: dict[int, list[Envelope]] = {m.identity.ring_id: [] for m in members}
        for sender in members:
            for to in members:
                if to is sender:
                    continue
                for i in range(5):
                    update = swim.MemberUpdate(to.peer, swim.MemberStatus.ALIVE, i)
                    env = sender.envelope(chord.FindSuccessor(i, to.identity.ring_id), (update,))
                    sender.transport.send(to.peer, env)
                    sent[to.identity.ring_id].append(env)
        yield wait_until(lambda: all(len(m.received) == 10 for m in members), "each member got its 10 envelopes")
        for m in members:
            for sender in members:
                if sender is not m:
                    mine = [e for e in m.received if e.sender == sender.peer]
                    assert {e.sender_key for e in mine} == {sender.identity.spki}  # from the TLS certificate
                    mine = [dataclasses.replace(e, sender_key=b"") for e in mine]
                    assert mine == [e for e in sent[m.identity.ring_id] if e.sender == sender.peer]
            assert m.transport.connected_peers() == {o.peer for o in members if o is not m}
            assert m.transport.incoming_count() == 2
        # a reply goes back on the replier's own connection
        b.transport.send(a.peer, b.envelope(kv.GetReply(7, kv.Record("k", b"v", 1, b.identity.ring_id))))
        yield wait_until(lambda: len(a.received) == 11, "a got b's reply")
        assert a.received[-1].body == kv.GetReply(7, kv.Record("k", b"v", 1, b.identity.ring_id))
        assert warnings(log_events) == [] and errors(log_events) == []
    finally:
        yield stop_all(a, b, c)


@pytest_twisted.inlineCallbacks
def test_an_impostor_is_refused_and_the_listener_serves_an_honest_peer(  # type: ignore[no-untyped-def]
    log_events: list[LogEvent],
):
    """A valid certificate whose envelope claims another member's ring id loses its connection; nothing is delivered."""
    victim, honest, target = member(), (yield listening(member())), (yield listening(member()))
    try:
        forged = Envelope(Peer(victim.identity.ring_id, "127.0.0.1:9"), chord.Notify())
        impostor = yield raw_exchange(target, NodeIdentity.generate(), frame(encode_envelope(forged)))
        assert impostor.handshaken
        assert target.received == []
        assert any("claims sender" in w for w in warnings(log_events)), warnings(log_events)
        honest.transport.send(target.peer, honest.envelope(chord.Notify()))
        yield wait_until(lambda: len(target.received) == 1, "the honest peer's envelope arrived")
        assert target.received[0].sender == honest.peer
    finally:
        yield stop_all(victim, honest, target)


@pytest_twisted.inlineCallbacks
def test_a_listener_with_another_ring_id_gets_nothing(log_events: list[LogEvent]):  # type: ignore[no-untyped-def]
    """Dialling an address that expects ring id X but finds another certificate drops the queue and says so;
    the transport's ``on_link_checked`` hears each handshake's expected peer and the id shown."""
    checked: list[tuple[Peer, int | None]] = []
    a = yield listening(member(on_link_checked=lambda peer, shown: checked.append((peer, shown))))
    b = yield listening(member())
    try:
        expected = NodeIdentity.generate().ring_id
        wrong = Peer(expected, b.peer.address)
        for i in range(3):
            a.transport.send(wrong, a.envelope(chord.Ping(i)))
        yield wait_until(lambda: not a.transport.connected_peers(), "a dropped the connection to the wrong listener")
        assert b.received == []
        expected_hex = f"{expected:040x}"
        found = [w for w in warnings(log_events) if "not the expected" in w]
        assert found and b.peer.address in found[0] and expected_hex in found[0] and b.identity.ring_id_hex in found[0]
        assert "3 queued envelopes" in found[0]
        # the right ring id at the same address is reached
        a.transport.send(b.peer, a.envelope(chord.Ping(9)))
        yield wait_until(lambda: len(b.received) == 1, "b got the envelope meant for it")
        assert checked == [(wrong, b.identity.ring_id), (b.peer, b.identity.ring_id)]
    finally:
        yield stop_all(a, b)


@pytest_twisted.inlineCallbacks
def test_oversized_and_garbage_frames_close_only_their_connection(  # type: ignore[no-untyped-def]
    log_events: list[LogEvent],
):
    """A too-long frame and an undecodable frame each lose their own connection; an established peer goes on."""
    honest, target = (yield listening(member())), (yield listening(member()))
    try:
        honest.transport.send(target.peer, honest.envelope(swim.Probe(1)))
        yield wait_until(lambda: len(target.received) == 1, "the honest peer is connected")
        stranger = NodeIdentity.generate()
        oversized = yield raw_exchange(target, stranger, struct.pack("!I", MAX_FRAME_BYTES + 1) + b"x" * 64)
        behind = frame(encode_envelope(honest.envelope(swim.Probe(5))))  # valid, but after the garbage
        garbage = yield raw_exchange(target, stranger, frame(b"\xff" * 12) + behind)
        assert oversized.handshaken and garbage.handshaken
        assert any("exceeds" in w for w in warnings(log_events)), warnings(log_events)
        assert any("malformed envelope" in w for w in warnings(log_events)), warnings(log_events)
        assert len(target.received) == 1  # not the honest-looking frame behind the garbage either
        honest.transport.send(target.peer, honest.envelope(swim.Probe(2)))
        yield wait_until(lambda: len(target.received) == 2, "the honest peer's next envelope arrived")
        assert target.transport.incoming_count() == 1
        assert errors(log_events) == []
    finally:
        yield stop_all(honest, target)


@pytest_twisted.inlineCallbacks
def test_a_dead_address_fails_silently_and_a_later_send_gets_through(  # type: ignore[no-untyped-def]
    log_events: list[LogEvent],
):
    """Sending to nobody drops the envelope quietly; once the peer listens there, the next send arrives."""
    from cortex_rm.local_cluster import free_ports

    (port,) = free_ports(1)
    a, b = (yield listening(member())), member()
    b.port = port
    try:
        a.transport.send(b.peer, a.envelope(chord.Ping(1)))
        yield wait_until(lambda: not a.transport.connected_peers(), "the failed connection was forgotten")
        yield listening(b, port)
        a.transport.send(b.peer, a.envelope(chord.Ping(2)))
        yield wait_until(lambda: len(b.received) == 1, "the later envelope arrived")
        assert b.received[0].body == chord.Ping(2)
        assert warnings(log_events) == [] and errors(log_events) == []
    finally:
        yield stop_all(a, b)


@pytest.mark.expect_logged_errors("on_envelope failed .*RuntimeError: core bug")
@pytest_twisted.inlineCallbacks
def test_on_envelope_errors_are_logged_and_the_connection_goes_on(  # type: ignore[no-untyped-def]
    log_events: list[LogEvent],
):
    """An exception from on_envelope is logged as an error; later envelopes on the same connection arrive."""
    got: list[Envelope] = []

    def fragile(env: Envelope) -> None:
        got.append(env)
        if env.body == chord.Ping(1):
            raise RuntimeError("core bug")

    a, b = (yield listening(member())), (yield listening(member(on_envelope=fragile)))
    try:
        a.transport.send(b.peer, a.envelope(chord.Ping(1)))
        a.transport.send(b.peer, a.envelope(chord.Ping(2)))
        yield wait_until(lambda: len(got) == 2, "both envelopes reached on_envelope")
        assert b.transport.incoming_count() == 1
        assert any("on_envelope failed" in e for e in errors(log_events))
    finally:
        yield stop_all(a, b)


@pytest_twisted.inlineCallbacks
def test_the_queue_keeps_the_newest_envelopes_and_idle_connections_close():  # type: ignore[no-untyped-def]
    """Beyond max_queued while connecting the oldest are dropped; an idle connection closes at both ends."""
    a, b = (yield listening(member(idle_timeout=0.3, max_queued=4))), (yield listening(member(idle_timeout=0.3)))
    try:
        for i in range(10):  # all before the reactor runs: the connection cannot be up yet
            a.transport.send(b.peer, a.envelope(chord.Pong(i)))
        yield wait_until(lambda: len(b.received) == 4, "the newest four envelopes arrived")
        assert [e.body for e in b.received] == [chord.Pong(i) for i in range(6, 10)]
        yield wait_until(
            lambda: not a.transport.connected_peers() and b.transport.incoming_count() == 0,
            "the idle connection closed",
        )
        a.transport.send(b.peer, a.envelope(chord.Pong(10)))
        yield wait_until(lambda: len(b.received) == 5, "a new connection carried the next envelope")
    finally:
        yield stop_all(a, b)


@pytest_twisted.inlineCallbacks
def test_a_listener_that_never_finishes_tls_is_given_up_after_the_connect_timeout(  # type: ignore[no-untyped-def]
    log_events: list[LogEvent],
):
    """A TCP listener that accepts but never answers TLS: the queue is dropped after connect_timeout, quietly."""
    silent = yield TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    identity = NodeIdentity.generate()
    a = Member(identity, RingTransport(identity, MutualTLS(identity), reactor(), print, connect_timeout=0.3), port=9)
    try:
        to = Peer(NodeIdentity.generate().ring_id, f"127.0.0.1:{silent.getHost().port}")
        a.transport.send(to, a.envelope(chord.Ping(1)))
        assert a.transport.connected_peers() == {to}
        yield wait_until(lambda: not a.transport.connected_peers(), "the silent listener was given up")
        infos = [formatEvent(e) for e in log_events if e.get("log_level") is LogLevel.info]
        assert any("no verified connection" in i and "1 queued" in i for i in infos), infos
        assert warnings(log_events) == [] and errors(log_events) == []
    finally:
        yield a.transport.stop()
        yield silent.stopListening()


# ------------------------------------------------------------- discovering an introducer


@pytest_twisted.inlineCallbacks
def test_discover_learns_the_ring_id_behind_an_address(log_events: list[LogEvent]):  # type: ignore[no-untyped-def]
    """discover(host:port) completes mutual TLS, fires with the certificate's ring id, and delivers nothing."""
    a, b = (yield listening(member())), (yield listening(member()))
    try:
        found = yield a.transport.discover(b.peer.address)
        assert found == b.peer
        yield wait_until(lambda: b.transport.incoming_count() == 0, "the discovery connection closed")
        assert b.received == [] and a.transport.connected_peers() == frozenset()
        assert warnings(log_events) == [] and errors(log_events) == []
    finally:
        yield stop_all(a, b)


@pytest_twisted.inlineCallbacks
def test_discover_failures_name_the_address_and_what_to_check():  # type: ignore[no-untyped-def]
    """Refused, silent (no TLS within connect_timeout) and malformed addresses fail with IntroducerUnreachable."""
    from cortex_rm.dht.errors import IntroducerUnreachable
    from cortex_rm.local_cluster import free_ports

    (port,) = free_ports(1)
    silent = yield TCP4ServerEndpoint(reactor(), 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    identity = NodeIdentity.generate()
    # (not shorter: HostnameEndpoint reports a refusal only after its 0.3 s attempt delay)
    transport = RingTransport(identity, MutualTLS(identity), reactor(), print, connect_timeout=1.0)
    silent_address = f"127.0.0.1:{silent.getHost().port}"
    try:
        expectations = [
            (f"127.0.0.1:{port}", "connection refused"),
            (silent_address, "within 1 s"),
            ("no-port-here", "not host:port"),
        ]
        for address, what in expectations:
            with pytest.raises(IntroducerUnreachable) as caught:
                yield transport.discover(address)
            assert address in str(caught.value) and what in str(caught.value), str(caught.value)
            assert "check" in str(caught.value)
    finally:
        yield transport.stop()
        yield silent.stopListening()


@pytest_twisted.inlineCallbacks
def test_drained_fires_when_queued_envelopes_are_written_or_dropped():  # type: ignore[no-untyped-def]
    """What a graceful stop waits for: with nothing queued it fires at once; after sends
    to a live peer and to a dead address it fires once the first is written (verified
    connection) and the second dropped (refused), with nothing left queued."""
    from cortex_rm.local_cluster import free_ports

    (dead_port,) = free_ports(1)
    a, b, dead = (yield listening(member())), (yield listening(member())), member()
    dead.port = dead_port
    try:
        assert a.transport.drained().called
        a.transport.send(b.peer, a.envelope(chord.Ping(1)))
        a.transport.send(dead.peer, a.envelope(chord.Ping(2)))
        assert a.transport.queued() == 2
        yield a.transport.drained()
        assert a.transport.queued() == 0
        yield wait_until(lambda: len(b.received) == 1, "the written envelope arrived")
    finally:
        yield stop_all(a, b)
