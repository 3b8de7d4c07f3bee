"""The dialling side of the ring transport: one mutual-TLS link per peer, envelopes queued until it is verified.

``PeerLinks.send`` keeps one cached link per peer (address and expected ring id).
The first frame dials and waits in the link's queue (at most ``max_queued``;
beyond that the oldest is dropped).  Once TLS is up, the ring id of the listener's
certificate must be the peer's ``node_id``, or the link and its queue are dropped
with a warning naming the address and both ids; either way ``on_checked`` hears
the peer and the id shown (``roles/address_checks.py``: a member's address is
proven by our own connections).  Then the queue is written and
later frames go straight out.  A failed link (refused, TLS failure, no verified
handshake within ``connect_timeout``) drops its queue, and the next ``send`` dials
again; a link idle for ``idle_timeout`` closes.  The listener never writes: a
frame from it closes the link.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.dht.peer import Peer, split_address
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.countdown import Countdown
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, abort_connection, dial, peer_ring_id
from cortex_rm.yarn.reactors import IReactorTimeTCP

log = Logger()

LinkChecked = Callable[[Peer, "int | None"], None]
"""Told of each completed handshake: the peer dialled and the ring id its listener showed (None: no certificate)."""


@implementer(IHandshakeListener)
class RingClientConnection(Int32StringReceiver):
    """The dialling side of one connection: writes frames, expects to read nothing."""

    MAX_LENGTH = 0  # the listener never writes: any frame at all is refused

    def __init__(self, link: OutgoingLink) -> None:
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


class OutgoingLink:
    """One connection to one peer: connecting (queueing), ready, closing (uncached), done."""

    def __init__(self, links: PeerLinks, peer: Peer) -> None:
        host, port = split_address(peer.address)  # (its ValueError comes before anything starts)
        self.links = links
        self.peer = peer
        self.ready = self.closing = self.done = False
        self.queue: deque[bytes] = deque()
        self.protocol: RingClientConnection | None = None
        self.finished_d: defer.Deferred[None] = defer.Deferred()
        self._idle: Countdown | None = None
        links._open.add(self)
        self._deadline = Countdown(links.clock, links.connect_timeout, self._timed_out)
        self._connecting: defer.Deferred[IProtocol] = dial(
            links.reactor, links.tls, host, port, links.connect_timeout, lambda: RingClientConnection(self)
        )
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
        if len(self.queue) > self.links.max_queued:
            self.queue.popleft()
            log.debug("ring: queue for {address} full; dropped its oldest envelope", address=self.peer.address)

    def handshaken(self) -> None:
        """TLS is up: pin the listener's ring id to the one we meant to reach, then flush the queue."""
        try:
            presented: int | None = peer_ring_id(self.protocol.transport if self.protocol else None)
        except PeerCertificateMissing:
            presented = None
        if self.links.on_checked is not None:
            self.links.on_checked(self.peer, presented)
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
        self._idle = Countdown(self.links.clock, self.links.idle_timeout, lambda: self.close(abort=False))
        while self.queue and self.protocol is not None:
            self.protocol.sendString(self.queue.popleft())
        self.links._maybe_drained()

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
        self.links._uncache(self)
        transport = self.protocol.transport if self.protocol is not None else None
        if transport is not None:
            abort_connection(transport) if abort else transport.loseConnection()
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
        self.links._uncache(self)
        self.links._open.discard(self)
        self.links._maybe_drained()
        self.finished_d.callback(None)


class PeerLinks:
    """A node's outgoing links: at most one cached per peer, the queues of those still connecting."""

    def __init__(
        self,
        reactor: IReactorTimeTCP,
        tls: MutualTLS,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_queued: int,
        on_checked: LinkChecked | None = None,
    ) -> None:
        self.reactor = reactor
        self.on_checked = on_checked
        self.clock = reactor  # every timer runs on it
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_queued = max_queued
        self._cached: dict[Peer, OutgoingLink] = {}  # the link new frames for a peer use
        self._open: set[OutgoingLink] = set()  # every link not finished (closing ones too)
        self._drain_waiters: list[defer.Deferred[None]] = []

    def send(self, to: Peer, frame: bytes) -> None:
        """Write ``frame`` on the link to ``to``, dialling one when none is cached (logged and dropped if it cannot)."""
        link = self._cached.get(to)
        if link is None:
            try:
                link = OutgoingLink(self, to)
            except ValueError as e:  # the peer's address is not host:port
                log.warn("ring: cannot send to {address}: {error}", address=to.address, error=str(e))
                return
            if not link.done:  # (a connection can fail at once)
                self._cached[to] = link
        link.send(frame)

    def connected_peers(self) -> frozenset[Peer]:
        """The peers with a cached link (connecting or ready)."""
        return frozenset(self._cached)

    def queued(self) -> int:
        """Frames waiting on links still being set up."""
        return sum(len(link.queue) for link in self._open)

    def drained(self) -> defer.Deferred[None]:
        """Fires once no frame waits on a link being set up (at once when none does).

        Each queue empties when its link is verified (the frames are written) or
        fails (they are dropped), so this ends within a connect timeout.
        """
        if not self.queued():
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def close_all(self) -> list[defer.Deferred[None]]:
        """Close every link now; one Deferred per link, fired when it is done."""
        waits = []
        for link in list(self._open):
            waits.append(link.finished_d)
            link.close()
        return waits

    def _maybe_drained(self) -> None:
        if self._drain_waiters and not self.queued():
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.called:  # (a caller's timeout may have cancelled it)
                    waiter.callback(None)

    def _uncache(self, link: OutgoingLink) -> None:
        if self._cached.get(link.peer) is link:
            del self._cached[link.peer]
