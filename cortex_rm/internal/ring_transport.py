"""Ring envelopes between members: Thrift frames over mutual TLS, fire and forget.

**Wire.**  Inside mutual TLS (``internal/tls.py``), a stream of frames: a 4-byte
big-endian length, then that many bytes (``Int32StringReceiver``; Thrift's
``TFramedTransport`` framing).  A frame body is one ``RingService.deliver`` oneway
call (``ring_codec``): the bytes the generated RingService client writes, decoded
here rather than by the generated processor so that each envelope is validated and
its sender checked before a ring core sees it.  Connections carry one direction:
the dialler writes, the listener reads; an answer travels on the answerer's own
connection to the asker's listening address.

**Sending** (``send``): one cached connection per peer (address and expected ring
id).  The first envelope dials and waits in the peer's queue (at most
``max_queued``; beyond that the oldest is dropped).  Once TLS is up, the ring id of
the listener's certificate must be ``to.node_id``, or the connection and its queue
are dropped with a warning naming the address and both ids.  Then the queue is
written and later envelopes go straight out.  A failed connection (refused, TLS
failure, no verified handshake within ``connect_timeout``) drops its queue, and the
next ``send`` dials again; a connection idle for ``idle_timeout`` closes.  Loss is
expected: the cores time out every request and retry.

**Receiving** (``listen``): each connection learns its peer's ring id in the TLS
handshake.  A frame longer than ``MAX_FRAME_BYTES`` is refused from its length
prefix, before it is buffered.  A frame that is not a valid envelope, or whose
``sender.node_id`` is not the certificate's ring id (an impostor), closes that
connection with a warning and reaches nobody; other connections go on.  An
exception from ``on_envelope`` is logged and the connection goes on.  A connection
silent for ``2 * idle_timeout`` closes (twice: the dialler, which saw the same
silence first, should be the one to close).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.peer import Peer, split_address
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.ring_codec import MAX_FRAME_BYTES, decode_envelope, encode_envelope
from cortex_rm.internal.ring_discovery import discover_peer
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, peer_ring_id
from cortex_rm.yarn.reactors import IReactorTimeTCP

log = Logger()

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_QUEUED = 64  # envelopes waiting for one peer's connection


def abort_connection(transport: ITransport | None) -> None:
    """Drop a TLS-over-TCP connection now, whatever is still unwritten (None: nothing to drop)."""
    if transport is not None:
        cast(ITCPTransport, transport).abortConnection()  # TLSMemoryBIOProtocol and TCP both provide it


class _Timer:
    """A restartable one-shot call on the injected clock."""

    def __init__(self, clock: IReactorTime, seconds: float, action: Callable[[], None]) -> None:
        self._call: IDelayedCall = clock.callLater(seconds, action)
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
        # Until TLS is up the connection must finish its handshake within the connect
        # timeout (a silent TCP connection would otherwise hold a socket for minutes).
        self._idle = _Timer(self.ring.clock, self.ring.connect_timeout, lambda: self.close("no TLS handshake"))

    def handshakeCompleted(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = _Timer(self.ring.clock, 2 * self.ring.idle_timeout, lambda: self.close("idle"))
        try:
            self.peer_id = peer_ring_id(self.transport)
        except PeerCertificateMissing:  # cannot happen: MutualTLS demands a certificate
            self.close("no peer certificate")

    def close(self, why: str) -> None:
        """Stop reading (frames already buffered are ignored) and drop the connection."""
        if not self.closing:
            self.closing = True
            log.debug("ring connection from {remote} closed: {why}", remote=self.remote, why=why)
            abort_connection(self.transport)

    def _refuse(self, problem: str, **fields: Any) -> None:
        """Warn (``problem`` is a log format) and close: the peer broke the protocol."""
        log.warn("ring connection from {remote}: " + problem + "; closing it", remote=self.remote, **fields)
        self.close("refused")

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
            presented = format_id(self.peer_id)
            self._refuse("malformed envelope from {presented_id} ({error})", presented_id=presented, error=str(e))
            return
        if envelope.sender.node_id != self.peer_id:
            self._refuse(
                "the envelope claims sender {sender_id}, the certificate's ring id is {presented_id}",
                sender_id=format_id(envelope.sender.node_id),
                presented_id=format_id(self.peer_id),
            )
            return
        self.ring._deliver(envelope)

    def lengthLimitExceeded(self, length: int) -> None:
        self._refuse("a {length}-byte frame exceeds {limit} bytes", length=length, limit=self.MAX_LENGTH)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
        self.ring._incoming.discard(self)
        self.lost.callback(None)


# ------------------------------------------------------------- sending


@implementer(IHandshakeListener)
class RingClientConnection(Int32StringReceiver):
    """The dialling side of one connection: writes frames, expects to read nothing."""

    MAX_LENGTH = 0  # the listener never writes: any frame at all is refused

    def __init__(self, link: _OutgoingLink) -> None:
        self.link = link

    def connectionMade(self) -> None:
        self.link.protocol = self

    def handshakeCompleted(self) -> None:
        self.link.handshaken()

    def stringReceived(self, frame: bytes) -> None:
        self.lengthLimitExceeded(len(frame))

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn("ring listener at {address} wrote to us; closing the connection", address=self.link.peer.address)
        self.link.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.link.finished(reason)


class _OutgoingLink:
    """One connection to one peer: connecting (queueing), ready, closing (uncached), done."""

    def __init__(self, ring: RingTransport, peer: Peer) -> None:
        host, port = split_address(peer.address)  # (its ValueError comes before anything starts)
        self.ring = ring
        self.peer = peer
        self.ready = self.closing = self.done = False
        self.queue: deque[bytes] = deque()
        self.protocol: RingClientConnection | None = None
        self.finished_d: defer.Deferred[None] = defer.Deferred()
        self._idle: _Timer | None = None
        ring._open_links.add(self)
        self._deadline = _Timer(ring.clock, ring.connect_timeout, self._timed_out)
        endpoint = HostnameEndpoint(ring.reactor, host, port, timeout=ring.connect_timeout)
        # (mypy without the zope plugin cannot see that MutualTLS and the factories provide the interfaces)
        connection = ClientFactory.forProtocol(lambda: RingClientConnection(self))
        connection.noisy = False
        factory: Any = TLSMemoryBIOFactory(ring.tls, True, connection, clock=ring.clock)
        self._connecting: defer.Deferred[Any] = endpoint.connect(factory)
        self._connecting.addErrback(self.finished)

    def send(self, frame: bytes) -> None:
        if self.closing or self.done:
            return
        if self.ready and self.protocol is not None:
            self.protocol.sendString(frame)
            if self._idle is not None:
                self._idle.restart()
            return
        self.queue.append(frame)
        if len(self.queue) > self.ring.max_queued:
            self.queue.popleft()
            log.debug("ring: queue for {address} full; dropped its oldest envelope", address=self.peer.address)

    def handshaken(self) -> None:
        """TLS is up: pin the listener's ring id to the one we meant to reach, then flush the queue."""
        try:
            presented: int | None = peer_ring_id(self.protocol.transport if self.protocol else None)
        except PeerCertificateMissing:
            presented = None
        if presented != self.peer.node_id:
            log.warn(
                "ring: {address} presented ring id {presented_id}, not the expected {expected_id}; "
                "dropping the connection and {dropped} queued envelopes",
                address=self.peer.address,
                presented_id=format_id(presented) if presented is not None else "none",
                expected_id=format_id(self.peer.node_id),
                dropped=len(self.queue),
            )
            self.close()
            return
        self._deadline.cancel()
        self.ready = True
        self._idle = _Timer(self.ring.clock, self.ring.idle_timeout, lambda: self.close(abort=False))
        while self.queue and self.protocol is not None:
            self.protocol.sendString(self.queue.popleft())
        self.ring._maybe_drained()

    def _timed_out(self) -> None:
        self._dropping("no verified connection within the connect timeout")
        self.close()

    def _dropping(self, why: str) -> None:
        if self.queue and not self.closing:
            fields = dict(address=self.peer.address, error=why, dropped=len(self.queue))
            log.info("ring: cannot reach {address} ({error}); dropping {dropped} queued envelopes", **fields)

    def close(self, abort: bool = True) -> None:
        """Uncache the link, drop its queue and its connection (``abort``: now; else once written)."""
        if self.closing:  # an idle close in progress: stop() makes it an abort
            if abort and self.protocol is not None:
                abort_connection(self.protocol.transport)
            return
        self.closing, self.ready = True, False
        self.queue.clear()
        self.ring._uncache(self)
        transport: Any = self.protocol.transport if self.protocol is not None else None
        if transport is not None:
            transport.abortConnection() if abort else transport.loseConnection()
        elif not self._connecting.called:
            self._connecting.cancel()  # -> finished
        else:
            self.finished(None)

    def finished(self, reason: Failure | None) -> None:
        """The connection ended or never began (any cause): uncache it, so the next send dials again."""
        if self.done:
            return
        if reason is not None and not self.ready:
            self._dropping(reason.getErrorMessage())
        self.done, self.ready = True, False
        self.queue.clear()
        self._deadline.cancel()
        if self._idle is not None:
            self._idle.cancel()
        self.ring._uncache(self)
        self.ring._open_links.discard(self)
        self.ring._maybe_drained()
        self.finished_d.callback(None)


# ------------------------------------------------------------- the transport


class RingTransport:
    """Sends envelopes to peers and hands received, authenticated envelopes to ``on_envelope``."""

    def __init__(
        self,
        identity: NodeIdentity,
        tls: MutualTLS,
        reactor: IReactorTimeTCP,
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
        self.clock: IReactorTime = reactor  # every timer runs on it
        self.on_envelope = on_envelope
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_queued = max_queued
        self._links: dict[Peer, _OutgoingLink] = {}  # the cache: the link new envelopes for a peer use
        self._open_links: set[_OutgoingLink] = set()  # every link not finished (closing ones too)
        self._drain_waiters: list[defer.Deferred[None]] = []
        self._incoming: set[RingServerConnection] = set()
        self._ports: list[Any] = []  # IListeningPort
        self._stopped = False

    def listen(self, interface: str, port: int) -> defer.Deferred[IListeningPort]:
        """Accept ring connections on ``interface:port`` (0: any free port); fires with the listening port."""
        endpoint_type = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
        endpoint = endpoint_type(self.reactor, port, interface=interface)
        connection = Factory.forProtocol(lambda: RingServerConnection(self))
        connection.noisy = False
        factory = TLSMemoryBIOFactory(self.tls, False, connection, clock=self.clock)
        d: defer.Deferred[IListeningPort] = endpoint.listen(factory)

        def listening(listening_port: IListeningPort) -> IListeningPort:
            self._ports.append(listening_port)
            address = str(listening_port.getHost())
            log.info("ring {ring_id} listening on {address}", ring_id=self.identity.ring_id_hex, address=address)
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
                link = _OutgoingLink(self, to)
            except ValueError as e:  # the peer's address is not host:port
                log.warn("ring: cannot send to {address}: {error}", address=to.address, error=str(e))
                return
            if not link.done:  # (a connection can fail at once)
                self._links[to] = link
        link.send(frame)

    def connected_peers(self) -> frozenset[Peer]:
        """The peers with a cached outgoing connection (connecting or ready)."""
        return frozenset(self._links)

    def incoming_count(self) -> int:
        """How many accepted connections are open."""
        return len(self._incoming)

    def queued(self) -> int:
        """Envelopes waiting on connections still being set up."""
        return sum(len(link.queue) for link in self._open_links)

    def drained(self) -> defer.Deferred[None]:
        """Fires once no envelope waits on a connection being set up (at once when none does).

        Each queue empties when its connection is verified (the envelopes are written)
        or fails (they are dropped), so this ends within a connect timeout.
        """
        if not self.queued():
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def _maybe_drained(self) -> None:
        if self._drain_waiters and not self.queued():
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.called:  # (a caller's timeout may have cancelled it)
                    waiter.callback(None)

    def discover(self, address: str) -> defer.Deferred[Peer]:
        """The ``Peer`` listening at ``address`` (its certificate's ring id): ``ring_discovery.discover_peer``."""
        return discover_peer(self.reactor, self.tls, address, self.connect_timeout)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close every connection; fires when all are closed."""
        self._stopped = True
        waits: list[defer.Deferred[Any]] = [defer.maybeDeferred(p.stopListening) for p in self._ports]
        self._ports.clear()
        for link in list(self._open_links):
            waits.append(link.finished_d)
            link.close()
        for connection in list(self._incoming):
            waits.append(connection.lost)
            connection.close("transport stopped")
        d = defer.gatherResults(waits, consumeErrors=True)
        return d.addCallback(lambda _: None)

    def _uncache(self, link: _OutgoingLink) -> None:
        if self._links.get(link.peer) is link:
            del self._links[link.peer]

    def _deliver(self, envelope: Envelope) -> None:
        try:
            self.on_envelope(envelope)
        except Exception:
            body, sender = type(envelope.body).__name__, envelope.sender.short()
            log.failure("ring: on_envelope failed for a {body} from {sender}", body=body, sender=sender)
