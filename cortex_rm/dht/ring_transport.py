"""Ring envelopes between members: Thrift frames over mutual TLS, fire and forget.

The wire
--------
Each direction of a TCP connection inside mutual TLS (``internal/tls.py``) is a
stream of frames: a 4-byte big-endian length, then that many bytes (Twisted's
``Int32StringReceiver``, the framing of Thrift's ``TFramedTransport``).  A frame
body is one ``RingService.deliver`` oneway call (``ring_codec``), so the bytes
are what the generated RingService client writes; we decode them ourselves
rather than through the generated processor, to validate each envelope and
check its sender before anything reaches a ring core.  Connections are one-way:
the dialling member writes, the listener only reads (an answer is an envelope
on the answerer's own connection to the asker's listening address).

Sending (``send``)
------------------
One cached connection per peer (its address and the ring id expected there):

1. the first envelope for a peer opens the connection and waits in its queue
   (at most ``max_queued``; beyond that the oldest is dropped);
2. once TLS is up, the ring id of the certificate the listener showed must be
   ``to.node_id``; if not, the connection and its queue are dropped with a
   warning naming the address and both ids;
3. then the queue is written, and later envelopes go straight out;
4. a connection that fails (refused, TLS failure, ``connect_timeout`` without a
   verified handshake) drops its queue; the next ``send`` dials again;
5. a connection idle for ``idle_timeout`` seconds is closed.

The ring cores expect loss: every request has its own timeout, so a dropped
envelope costs a retry, never a hang.

Receiving (``listen``)
----------------------
Each accepted connection learns its peer's ring id from the TLS handshake.
Frames longer than ``MAX_FRAME_BYTES`` are refused from their length prefix,
before being buffered.  A frame that does not decode to a valid envelope, or an
envelope whose ``sender.node_id`` is not the certificate's ring id (an
impostor), closes that connection with a warning and reaches nobody; other
connections go on.  An exception from ``on_envelope`` is logged and the
connection goes on.  Incoming connections close after ``2 * idle_timeout``
without a frame (twice, so the dialling end, which saw the same silence first,
is the one that closes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.identity import NodeIdentity
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_codec import MAX_FRAME_BYTES, decode_envelope, encode_envelope
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, peer_ring_id

log = Logger()

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_QUEUED = 64  # envelopes waiting for one peer's connection


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as (host, port); ValueError when it is not one."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdecimal() or not 0 < int(port) <= 65535:
        raise ValueError(f"not host:port: {address!r}")
    return host, int(port)


class _Timer:
    """A restartable one-shot call on the injected clock."""

    def __init__(self, clock: Any, seconds: float, action: Callable[[], None]) -> None:
        self._call: Any = clock.callLater(seconds, action)  # IDelayedCall
        self._seconds = seconds

    def restart(self) -> None:
        if self._call.active():
            self._call.reset(self._seconds)

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


# ------------------------------------------------------------- receiving


@implementer(IHandshakeListener)
class RingServerConnection(Int32StringReceiver):
    """One accepted connection (inside TLS): bounded frames, decoded, checked against the certificate."""

    MAX_LENGTH = MAX_FRAME_BYTES

    def __init__(self, ring: RingTransport) -> None:
        self.ring = ring
        self.remote = "?"
        self.peer_id: int | None = None
        self.closing = False
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._idle: _Timer | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        remote = transport.getPeer()
        self.remote = f"{getattr(remote, 'host', '?')}:{getattr(remote, 'port', '?')}"
        self.ring._incoming.add(self)
        self._idle = _Timer(self.ring.clock, 2 * self.ring.idle_timeout, lambda: self.close("idle"))

    def handshakeCompleted(self) -> None:
        try:
            self.peer_id = peer_ring_id(self.transport)
        except PeerCertificateMissing:  # cannot happen: MutualTLS demands a certificate
            self.close("no peer certificate")

    def close(self, why: str) -> None:
        """Stop reading (frames already buffered are ignored) and drop the connection."""
        if not self.closing:
            self.closing = True
            log.debug("ring connection from {remote} closed: {why}", remote=self.remote, why=why)
            self.transport.abortConnection()  # type: ignore[union-attr]

    def stringReceived(self, frame: bytes) -> None:
        if self.closing:
            return
        if self.peer_id is None:  # cannot happen: TLS delivers no data before the handshake
            self.close("data before the TLS handshake")
            return
        if self._idle is not None:
            self._idle.restart()
        try:
            envelope = decode_envelope(frame)
        except MalformedEnvelope as e:
            log.warn(
                "ring connection from {remote} (ring id {presented_id}): malformed envelope ({error}); closing it",
                remote=self.remote,
                presented_id=format_id(self.peer_id),
                error=str(e),
            )
            self.close("malformed envelope")
            return
        if envelope.sender.node_id != self.peer_id:
            log.warn(
                "ring connection from {remote}: the envelope claims sender {sender_id} but the certificate's "
                "ring id is {presented_id}; closing it",
                remote=self.remote,
                sender_id=format_id(envelope.sender.node_id),
                presented_id=format_id(self.peer_id),
            )
            self.close("impostor")
            return
        self.ring._deliver(envelope)

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn(
            "ring connection from {remote}: a {length}-byte frame exceeds {limit} bytes; closing it",
            remote=self.remote,
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.close("frame too long")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
        self.ring._incoming.discard(self)
        self.lost.callback(None)


class _ServerFactory(Factory):
    noisy = False

    def __init__(self, ring: RingTransport) -> None:
        self.ring = ring

    def buildProtocol(self, addr: Any) -> RingServerConnection:
        return RingServerConnection(self.ring)


# ------------------------------------------------------------- sending


@implementer(IHandshakeListener)
class RingClientConnection(Int32StringReceiver):
    """The dialling side of one connection: writes frames, expects to read nothing."""

    MAX_LENGTH = 0  # the listener never writes: any frame at all is refused

    def __init__(self, link: _OutgoingLink) -> None:
        self.link = link

    def handshakeCompleted(self) -> None:
        self.link.handshaken(self)

    def stringReceived(self, frame: bytes) -> None:
        self.lengthLimitExceeded(len(frame))

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn("ring listener at {address} wrote to us; closing the connection", address=self.link.peer.address)
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.link.lost(reason)


class _ClientFactory(ClientFactory):
    noisy = False

    def __init__(self, link: _OutgoingLink) -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> RingClientConnection:
        return RingClientConnection(self.link)


class _OutgoingLink:
    """One cached connection to one peer: CONNECTING (queueing) -> READY -> closed (forgotten)."""

    def __init__(self, ring: RingTransport, peer: Peer) -> None:
        self.ring = ring
        self.peer = peer
        self.ready = False
        self.closed = False
        self.queue: deque[bytes] = deque()
        self.protocol: RingClientConnection | None = None
        self.lost_d: defer.Deferred[None] = defer.Deferred()
        self._idle: _Timer | None = None
        self._deadline = _Timer(ring.clock, ring.connect_timeout, self._timed_out)
        host, port = split_address(peer.address)
        endpoint = HostnameEndpoint(ring.reactor, host, port, timeout=ring.connect_timeout)
        # (mypy without the zope plugin cannot see that MutualTLS and the factories provide the interfaces)
        factory: Any = TLSMemoryBIOFactory(ring.tls, True, _ClientFactory(self), clock=ring.clock)  # type: ignore
        self._connecting: defer.Deferred[Any] = endpoint.connect(factory)  # type: ignore[arg-type]
        self._connecting.addErrback(self._connect_failed)

    def send(self, frame: bytes) -> None:
        if self.ready and self.protocol is not None:
            self.protocol.sendString(frame)
            if self._idle is not None:
                self._idle.restart()
            return
        self.queue.append(frame)
        if len(self.queue) > self.ring.max_queued:
            self.queue.popleft()
            log.debug("ring: queue for {address} full; dropped its oldest envelope", address=self.peer.address)

    def handshaken(self, protocol: RingClientConnection) -> None:
        """TLS is up: pin the listener's ring id to the one we meant to reach, then flush the queue."""
        self.protocol = protocol
        try:
            presented: int | None = peer_ring_id(protocol.transport)
        except PeerCertificateMissing:
            presented = None
        if presented != self.peer.node_id:
            log.warn(
                "ring: {address} presented ring id {presented_id}, not the expected {expected_id}; dropping the "
                "connection and {dropped} queued envelopes",
                address=self.peer.address,
                presented_id=format_id(presented) if presented is not None else "none",
                expected_id=format_id(self.peer.node_id),
                dropped=len(self.queue),
            )
            self.close()
            return
        self._deadline.cancel()
        self.ready = True
        self._idle = _Timer(self.ring.clock, self.ring.idle_timeout, self._went_idle)
        while self.queue:
            protocol.sendString(self.queue.popleft())

    def _went_idle(self) -> None:
        log.debug("ring: connection to {address} idle; closing it", address=self.peer.address)
        self.close(abort=False)

    def _timed_out(self) -> None:
        log.info(
            "ring: no verified connection to {address} within {timeout} s; dropping {dropped} queued envelopes",
            address=self.peer.address,
            timeout=self.ring.connect_timeout,
            dropped=len(self.queue),
        )
        self.close()

    def _connect_failed(self, failure: Failure) -> None:
        if not self.closed:
            log.info(
                "ring: cannot connect to {address} ({error}); dropping {dropped} queued envelopes",
                address=self.peer.address,
                error=failure.getErrorMessage(),
                dropped=len(self.queue),
            )
        self._forget()

    def close(self, abort: bool = True) -> None:
        """Drop the queue and the connection (``abort``: now; else after writing what is buffered)."""
        self.queue.clear()
        self.ready = False
        transport: Any = self.protocol.transport if self.protocol is not None else None
        if transport is not None:
            if abort:
                transport.abortConnection()
            else:
                transport.loseConnection()
        elif not self._connecting.called:
            self._connecting.cancel()  # -> _connect_failed -> _forget
        else:
            self._forget()

    def lost(self, reason: Failure) -> None:
        """The connection ended (any cause): forget it, so the next send dials again."""
        if not self.ready and not self.closed and self.queue:
            log.info(
                "ring: connection to {address} lost before it was ready ({error}); dropping {dropped} queued envelopes",
                address=self.peer.address,
                error=reason.getErrorMessage(),
                dropped=len(self.queue),
            )
        self._forget()

    def _forget(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready = False
        self.queue.clear()
        self._deadline.cancel()
        if self._idle is not None:
            self._idle.cancel()
        self.ring._forget(self)
        self.lost_d.callback(None)


# ------------------------------------------------------------- the transport


class RingTransport:
    """Sends envelopes to peers and hands received, authenticated envelopes to ``on_envelope``."""

    def __init__(
        self,
        identity: NodeIdentity,
        tls: MutualTLS,
        reactor: Any,
        on_envelope: Callable[[Envelope], None],
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        if tls.identity.ring_id != identity.ring_id:
            raise ValueError("the MutualTLS presents another identity than this node's")
        self.identity = identity
        self.tls = tls
        self.reactor = reactor
        self.clock = reactor  # IReactorTime: every timer runs on it
        self.on_envelope = on_envelope
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_queued = max_queued
        self._links: dict[Peer, _OutgoingLink] = {}
        self._incoming: set[RingServerConnection] = set()
        self._ports: list[Any] = []  # IListeningPort
        self._stopped = False

    def listen(self, interface: str, port: int) -> defer.Deferred[Any]:
        """Accept ring connections on ``interface:port`` (0: any free port); fires with the listening port."""
        endpoint_type = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
        endpoint = endpoint_type(self.reactor, port, interface=interface)
        factory = TLSMemoryBIOFactory(self.tls, False, _ServerFactory(self), clock=self.clock)  # type: ignore[arg-type]
        d: defer.Deferred[Any] = endpoint.listen(factory)

        def listening(listening_port: Any) -> Any:
            self._ports.append(listening_port)
            log.info(
                "ring transport of {ring_id} listening on {address}",
                ring_id=self.identity.ring_id_hex,
                address=str(listening_port.getHost()),
            )
            return listening_port

        return d.addCallback(listening)

    def send(self, to: Peer, envelope: Envelope) -> None:
        """Deliver ``envelope`` to ``to`` at most once, or drop it (logged); never blocks, never fails later.

        Raises MalformedEnvelope at once when the envelope cannot be sent at all:
        it breaks the codec's bounds, or its sender is not this node (the
        receiver would refuse it as an impostor).
        """
        if envelope.sender.node_id != self.identity.ring_id:
            raise MalformedEnvelope(
                f"envelope.sender {format_id(envelope.sender.node_id)} is not this node ({self.identity.ring_id_hex})"
            )
        frame = encode_envelope(envelope)
        if self._stopped:
            return
        link = self._links.get(to)
        if link is None:
            try:
                link = self._links[to] = _OutgoingLink(self, to)
            except ValueError as e:  # the peer's address is not host:port
                log.warn("ring: cannot send to {address}: {error}", address=to.address, error=str(e))
                return
        link.send(frame)

    def connected_peers(self) -> frozenset[Peer]:
        """The peers with a cached outgoing connection (connecting or ready)."""
        return frozenset(self._links)

    def incoming_count(self) -> int:
        """How many accepted connections are open."""
        return len(self._incoming)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close every connection; fires when all are closed."""
        self._stopped = True
        waits: list[defer.Deferred[Any]] = [defer.maybeDeferred(p.stopListening) for p in self._ports]
        self._ports.clear()
        for link in list(self._links.values()):
            waits.append(link.lost_d)
            link.close()
        for connection in list(self._incoming):
            waits.append(connection.lost)
            connection.close("transport stopped")
        d = defer.gatherResults(waits, consumeErrors=True)
        return d.addCallback(lambda _: None)

    def _forget(self, link: _OutgoingLink) -> None:
        if self._links.get(link.peer) is link:
            del self._links[link.peer]

    def _deliver(self, envelope: Envelope) -> None:
        try:
            self.on_envelope(envelope)
        except Exception:
            log.failure(
                "ring: on_envelope failed for a {body} from {sender}",
                body=type(envelope.body).__name__,
                sender=envelope.sender.short(),
            )
