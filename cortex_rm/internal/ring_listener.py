"""The accepting side of the ring transport: envelopes in, each checked against its connection's certificate.

``RingListener.listen`` accepts mutual-TLS connections (the wire is described in
``ring_transport.py``); each connection learns its peer's ring id in the TLS
handshake.  A frame longer than ``MAX_FRAME_BYTES`` is refused from its length
prefix, before it is buffered.  A frame that is not a valid envelope, or whose
``sender.node_id`` is not the certificate's ring id (an impostor), closes that
connection with a warning and reaches nobody; other connections go on.  An
exception from ``on_envelope`` is logged and the connection goes on.  A connection
that has not finished its handshake within ``connect_timeout`` closes, and so does
one silent for ``2 * idle_timeout`` (twice: the dialler, which saw the same silence
first, should be the one to close).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IHandshakeListener, IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.countdown import Countdown
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.identity import NodeIdentity, ring_id_of
from cortex_rm.internal.ring_codec import MAX_FRAME_BYTES, decode_envelope
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, abort_connection, peer_address, peer_spki
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.reactors import IReactorTimeTCP
from cortex_rm.yarn.refusal_log import RefusalLog

log = Logger()

#: Protocol errors past the first ten of an interval are counted, one line per interval.
REFUSAL_LOG_INTERVAL_S = 10.0


def _stop_listening(port: IListeningPort) -> defer.Deferred[None]:
    stopped = port.stopListening()  # a Deferred, or None when the port is closed at once
    return stopped if stopped is not None else defer.succeed(None)


@implementer(IHandshakeListener)
class RingServerConnection(Int32StringReceiver):
    """One accepted connection (inside TLS): bounded frames, decoded, checked against the certificate."""

    MAX_LENGTH = MAX_FRAME_BYTES

    def __init__(self, listener: RingListener) -> None:
        self.listener = listener
        self.remote = "?"
        self.peer_id: int | None = None
        self.peer_key = b""  # the DER SPKI the peer's certificate carries
        self.closing = False
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._idle: Countdown | None = None

    def connectionMade(self) -> None:
        self.remote = peer_address(self.transport)
        self.listener._incoming.add(self)
        # Until TLS is up the connection must finish its handshake within the connect
        # timeout (a silent TCP connection would otherwise hold a socket for minutes).
        handshake_timeout = self.listener.connect_timeout
        self._idle = Countdown(self.listener.clock, handshake_timeout, lambda: self.close("no TLS handshake"))

    def handshakeCompleted(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = Countdown(self.listener.clock, 2 * self.listener.idle_timeout, lambda: self.close("idle"))
        try:
            self.peer_key = peer_spki(self.transport)
            self.peer_id = ring_id_of(self.peer_key)
        except PeerCertificateMissing:  # cannot happen: MutualTLS demands a certificate
            self.close("no peer certificate")

    def close(self, why: str) -> None:
        """Stop reading (frames already buffered are ignored) and drop the connection."""
        if not self.closing:
            self.closing = True
            log.debug("ring connection from {remote} closed: {why}", remote=self.remote, why=why)
            abort_connection(self.transport)

    def _refuse(self, problem: str, **fields: object) -> None:
        """Warn (``problem`` is a log format; the first few of an interval, the rest counted) and
        close: the peer broke the protocol."""
        if self.listener.refusals.may_detail(HostPort.host_of(self.remote)):
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
        self.listener._deliver(replace(envelope, sender_key=self.peer_key))

    def lengthLimitExceeded(self, length: int) -> None:
        self._refuse("a {length}-byte frame exceeds {limit} bytes", length=length, limit=self.MAX_LENGTH)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
        self.listener._incoming.discard(self)
        self.lost.callback(None)


class RingListener:
    """Accepts ring connections for ``identity`` and hands each authenticated envelope to ``on_envelope``."""

    def __init__(
        self,
        identity: NodeIdentity,
        tls: MutualTLS,
        reactor: IReactorTimeTCP,
        on_envelope: Callable[[Envelope], None],
        *,
        connect_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.identity = identity
        self.tls = tls
        self.refusals = RefusalLog(log, "", REFUSAL_LOG_INTERVAL_S, reactor, what="the ring listener")
        self.reactor = reactor
        self.clock = reactor  # every timer runs on it
        self.on_envelope = on_envelope
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._incoming: set[RingServerConnection] = set()
        self._ports: list[IListeningPort] = []

    def listen(self, interface: str, port: int) -> defer.Deferred[IListeningPort]:
        """Accept ring connections on ``interface:port`` (0: any free port); fires with the listening port."""
        endpoint_type = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
        endpoint: IStreamServerEndpoint = endpoint_type(self.reactor, port, interface=interface)
        connection = Factory.forProtocol(lambda: RingServerConnection(self))
        connection.noisy = False
        factory = TLSMemoryBIOFactory(self.tls, False, connection, clock=self.clock)
        d = endpoint.listen(factory)

        def listening(listening_port: IListeningPort) -> IListeningPort:
            self._ports.append(listening_port)
            address = str(listening_port.getHost())
            log.info("ring {ring_id} listening on {address}", ring_id=self.identity.ring_id_hex, address=address)
            return listening_port

        return d.addCallback(listening)

    def incoming_count(self) -> int:
        """How many accepted connections are open."""
        return len(self._incoming)

    def stop_listening(self) -> list[defer.Deferred[None]]:
        """Stop accepting; one Deferred per port, fired when it is closed."""
        waits = [defer.maybeDeferred(_stop_listening, p) for p in self._ports]
        self._ports.clear()
        return waits

    def close_connections(self) -> list[defer.Deferred[None]]:
        """Close every accepted connection; one Deferred per connection, fired when it is closed."""
        waits = []
        for connection in list(self._incoming):
            waits.append(connection.lost)
            connection.close("transport stopped")
        return waits

    def _deliver(self, envelope: Envelope) -> None:
        try:
            self.on_envelope(envelope)
        except Exception:
            body, sender = type(envelope.body).__name__, envelope.sender.short()
            log.failure("ring: on_envelope failed for a {body} from {sender}", body=body, sender=sender)
