"""Learning the ring id of an address: dial it, complete mutual TLS, read the certificate, hang up.

An introducer is configured as ``host:port`` only; a ring member addresses peers as
``Peer(ring id, address)``, and ``RingTransport.send`` pins the ring id it dials.
``discover_peer`` bridges the two: it opens one mutual-TLS connection, takes the
ring id of the certificate the listener showed (the SHA-1 of its public key, as
``internal/tls.peer_ring_id`` computes it), closes the connection without writing
a frame, and fires with ``Peer(ring_id, address)``.

Every failure is an ``IntroducerUnreachable`` whose message names the address and
says what to check: refused (nothing listens there), not resolved (the host name),
no answer within the timeout (address, firewall), or a failed TLS handshake (not a
Cortex ring port, or a node with a broken identity).
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.dht.errors import IntroducerUnreachable
from cortex_rm.dht.peer import Peer, split_address
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, abort_connection, dial, peer_ring_id
from cortex_rm.yarn.reactors import IReactorTimeTCP

log = Logger()


def explain(address: str, timeout: float, reason: Failure) -> IntroducerUnreachable:
    """The error to report for a failed discovery of ``address``: what happened and what to check."""
    host = address.rpartition(":")[0]
    if reason.check(error.ConnectionRefusedError):
        why = "connection refused; check that a Cortex node is running there and that this is its ring port"
    elif reason.check(error.DNSLookupError):
        why = f"cannot resolve {host!r}; check the host name"
    elif reason.check(error.TimeoutError, defer.TimeoutError, defer.CancelledError):
        why = (
            f"no mutual-TLS answer within {timeout:g} s; check the address, that the node is up, "
            "and that no firewall drops its ring port"
        )
    elif reason.check(SSL.Error):
        why = (
            f"the TLS handshake failed ({reason.getErrorMessage()}); check that this is a Cortex ring port "
            "and not another service"
        )
    else:
        why = f"{reason.getErrorMessage()}; check the address and that the node is up"
    return IntroducerUnreachable(f"cannot reach the ring at {address}: {why}")


@implementer(IHandshakeListener)
class _Introduction(Protocol):
    """The dialling side of one discovery: waits for the handshake, reads the certificate, hangs up."""

    def __init__(self, discovery: _Discovery) -> None:
        self.discovery = discovery

    def connectionMade(self) -> None:
        self.discovery.protocol = self

    def handshakeCompleted(self) -> None:
        transport = self.transport
        try:
            ring_id = peer_ring_id(transport)
        except PeerCertificateMissing as e:  # cannot happen: MutualTLS demands a certificate
            self.discovery.failed(Failure(e))
        else:
            self.discovery.found(ring_id)
        if transport is not None:  # (always: the handshake ran on it)
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """A ring listener never writes; whatever arrives is ignored (we are hanging up)."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.discovery.failed(reason)  # (no effect once found)


class _Discovery:
    """One discovery in progress: connecting, handshaking, then done exactly once."""

    def __init__(self, reactor: IReactorTimeTCP, tls: MutualTLS, address: str, host: str, port: int, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.result: defer.Deferred[Peer] = defer.Deferred()
        self.protocol: _Introduction | None = None
        self._deadline: IDelayedCall = reactor.callLater(timeout, self._timed_out)
        self._connecting: defer.Deferred[IProtocol] = dial(
            reactor, tls, host, port, timeout, lambda: _Introduction(self)
        )
        self._connecting.addErrback(self.failed)

    def found(self, ring_id: int) -> None:
        if self.result.called:
            return
        self._deadline.cancel()
        log.debug("ring: {address} is ring id {ring_id}", address=self.address, ring_id=format_id(ring_id))
        self.result.callback(Peer(ring_id, self.address))

    def failed(self, reason: Failure) -> None:
        if self.result.called:
            return
        if self._deadline.active():
            self._deadline.cancel()
        self.result.errback(explain(self.address, self.timeout, reason))

    def _timed_out(self) -> None:
        transport = self.protocol.transport if self.protocol is not None else None
        self.failed(Failure(error.TimeoutError(f"{self.timeout:g} s")))
        if transport is not None:
            abort_connection(transport)
        elif not self._connecting.called:
            self._connecting.cancel()


def discover_peer(reactor: IReactorTimeTCP, tls: MutualTLS, address: str, timeout: float) -> defer.Deferred[Peer]:
    """Dial ``address`` (``host:port``) and fire with the ``Peer`` its certificate names.

    Fails with ``IntroducerUnreachable`` (naming the address and what to check) when
    the address is not ``host:port``, nothing answers, or mutual TLS does not
    complete within ``timeout`` seconds on ``reactor``'s clock.
    """

    try:
        host, port = split_address(address)
    except ValueError:
        return defer.fail(IntroducerUnreachable(f"the ring introducer {address!r} is not host:port; check the configuration"))
    return _Discovery(reactor, tls, address, host, port, timeout).result
