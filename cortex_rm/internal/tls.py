"""Mutual TLS for internal connections: both ends present a self-signed certificate.

``MutualTLS`` is the connection creator for both sides (Twisted's
``IOpenSSLClientConnectionCreator`` and ``IOpenSSLServerConnectionCreator``):
it presents this node's certificate, demands the peer's
(``VERIFY_FAIL_IF_NO_PEER_CERT``) and lets OpenSSL check that the peer holds
the key of the certificate it shows.  There is no CA, so OpenSSL's chain check
can only say "self-signed"; ``_accept_self_signed`` accepts exactly that, at
depth 0, and nothing else (a chain, an expired certificate or a wrong key
usage still fails the handshake).  *Which* key a peer may use is decided above
TLS, by pinning: see ``cortex_rm/internal/identity.py`` for the whole trust model.

TLS 1.3 only: every peer runs this code, so there is nothing older to talk to.
``peer_fingerprint`` gives the peer's key fingerprint, and ``peer_ring_id`` its
ring id, once the handshake has completed (``IHandshakeListener.handshakeCompleted``).
``dial`` opens a mutual-TLS connection to a ring peer, ``abort_connection`` drops one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from cortex_rm.internal.identity import NodeIdentity, certificate_fingerprint, ring_id_of, spki_der
from cortex_rm.yarn.reactors import IReactorTimeTCP

# OpenSSL's X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: the peer's own certificate is self-signed.
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18


class PeerCertificateMissing(Exception):
    """The TLS connection has no peer certificate (not handshaken, or not TLS)."""


def _accept_self_signed(connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    """OpenSSL's verify callback: what OpenSSL accepted, plus a self-signed certificate at depth 0."""
    return bool(ok) or (errno == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT and depth == 0)


@implementer(IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator)
class MutualTLS:
    """TLS connections that present ``identity`` and require a self-signed certificate from the peer."""

    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION)
        context.use_certificate(identity.certificate)
        context.use_privatekey(identity.key)
        context.check_privatekey()
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_self_signed)
        # Each connection carries its own proof of identity: no session resumption.
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.set_options(SSL.OP_NO_TICKET)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A client-side connection (Twisted sets the connect state and app data)."""
        return SSL.Connection(self._context, None)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A server-side connection (Twisted sets the accept state and app data)."""
        return SSL.Connection(self._context, None)


def _peer_certificate(transport: ITransport | None) -> x509.Certificate:
    """The certificate the peer of a handshaken TLS ``transport`` showed, or PeerCertificateMissing."""
    handle = getattr(transport, "getHandle", None)
    connection = handle() if handle is not None else None
    certificate = (
        connection.get_peer_certificate(as_cryptography=True) if isinstance(connection, SSL.Connection) else None
    )
    if certificate is None:
        raise PeerCertificateMissing(f"no peer certificate on {transport!r}")
    return certificate


def peer_fingerprint(transport: ITransport | None) -> str:
    """The fingerprint of the key the peer of a handshaken TLS ``transport`` showed."""
    return certificate_fingerprint(_peer_certificate(transport))


def peer_ring_id(transport: ITransport | None) -> int:
    """The ring id (SHA-1 of the DER SPKI) of the key the peer of a handshaken TLS ``transport`` showed."""
    return ring_id_of(peer_spki(transport))


def peer_public_key(transport: ITransport | None) -> object:
    """The public key the peer of a handshaken TLS ``transport`` showed (a ``cryptography`` key object)."""
    return _peer_certificate(transport).public_key()


def peer_spki(transport: ITransport | None) -> bytes:
    """The DER SPKI of the key the peer of a handshaken TLS ``transport`` showed."""
    return spki_der(_peer_certificate(transport).public_key())


def peer_address(transport: ITransport | None) -> str:
    """``host:port`` of the other end of ``transport`` for logs (``?`` for what is unknown)."""
    peer = transport.getPeer() if transport is not None else None
    return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


def dial(
    reactor: IReactorTimeTCP, tls: MutualTLS, host: str, port: int, timeout: float, protocol: Callable[[], Protocol]
) -> defer.Deferred[IProtocol]:
    """Connect to ``host:port`` (a name or an address) and run ``tls`` over it, ``protocol()`` inside.

    Fires with the TLS protocol once TCP is connected (within ``timeout`` seconds),
    before the handshake: the inner protocol hears of that as an ``IHandshakeListener``.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    inner = ClientFactory.forProtocol(protocol)
    inner.noisy = False
    return endpoint.connect(TLSMemoryBIOFactory(tls, True, inner, clock=reactor))


def abort_connection(transport: ITransport | None) -> None:
    """Drop a TLS-over-TCP connection now, whatever is still unwritten (None: nothing to drop)."""
    if transport is not None:
        cast(ITCPTransport, transport).abortConnection()  # TLSMemoryBIOProtocol and TCP both provide it
