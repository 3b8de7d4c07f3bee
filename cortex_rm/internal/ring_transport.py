"""Ring envelopes between members: Thrift frames over mutual TLS, fire and forget.

**Wire.**  Inside mutual TLS (``internal/tls.py``), a stream of frames: a 4-byte
big-endian length, then that many bytes (``Int32StringReceiver``; Thrift's
``TFramedTransport`` framing).  A frame body is one ``RingService.deliver`` oneway
call (``ring_codec``): the bytes the generated RingService client writes, decoded
here rather than by the generated processor so that each envelope is validated and
its sender checked before a ring core sees it.  Connections carry one direction:
the dialler writes, the listener reads; an answer travels on the answerer's own
connection to the asker's listening address.

**Sending** (``send``, ``ring_links.py``): one cached connection per peer, whose
listener must show the ring id the envelope is meant for; envelopes wait in a
bounded queue while it is set up, and are dropped with it when it fails; each
handshake's outcome goes to ``on_link_checked``.  Loss is
expected: the cores time out every request and retry.

**Receiving** (``listen``, ``ring_listener.py``): an envelope reaches
``on_envelope`` only when it is a valid, bounded frame from the peer the
connection's certificate names; anything else closes that connection alone.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort

from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.peer import Peer
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.ring_codec import encode_envelope
from cortex_rm.internal.ring_discovery import discover_peer
from cortex_rm.internal.ring_links import LinkChecked, PeerLinks
from cortex_rm.internal.ring_listener import RingListener
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.yarn.reactors import IReactorTimeTCP

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_MAX_QUEUED = 64  # envelopes waiting for one peer's connection


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
        on_link_checked: LinkChecked | None = None,
    ) -> None:
        if tls.identity.ring_id != identity.ring_id:
            raise ValueError("the MutualTLS presents another identity than this node's")
        self.identity = identity
        self.tls = tls
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_queued = max_queued
        self._links = PeerLinks(
            reactor, tls, connect_timeout=connect_timeout, idle_timeout=idle_timeout, max_queued=max_queued,
            on_checked=on_link_checked,
        )  # fmt: skip
        self._listener = RingListener(
            identity, tls, reactor, on_envelope, connect_timeout=connect_timeout, idle_timeout=idle_timeout
        )
        self._stopped = False

    def listen(self, interface: str, port: int) -> defer.Deferred[IListeningPort]:
        """Accept ring connections on ``interface:port`` (0: any free port); fires with the listening port."""
        return self._listener.listen(interface, port)

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
        if not self._stopped:
            self._links.send(to, frame)

    def connected_peers(self) -> frozenset[Peer]:
        """The peers with a cached outgoing connection (connecting or ready)."""
        return self._links.connected_peers()

    def incoming_count(self) -> int:
        """How many accepted connections are open."""
        return self._listener.incoming_count()

    def queued(self) -> int:
        """Envelopes waiting on connections still being set up."""
        return self._links.queued()

    def drained(self) -> defer.Deferred[None]:
        """Fires once no envelope waits on a connection being set up (at once when none does).

        Each queue empties when its connection is verified (the envelopes are written)
        or fails (they are dropped), so this ends within a connect timeout.
        """
        return self._links.drained()

    def discover(self, address: str) -> defer.Deferred[Peer]:
        """The ``Peer`` listening at ``address`` (its certificate's ring id): ``ring_discovery.discover_peer``."""
        return discover_peer(self.reactor, self.tls, address, self.connect_timeout)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close every connection; fires when all are closed."""
        self._stopped = True
        waits = self._listener.stop_listening() + self._links.close_all() + self._listener.close_connections()
        d = defer.gatherResults(waits, consumeErrors=True)
        return d.addCallback(lambda _: None)
