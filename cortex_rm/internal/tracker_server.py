"""The RM's NodeTracker endpoint: Thrift over mutual TLS, and the expiry check.

Each accepted connection is a ``TrackerConnection``: PyPI thrift's
``ThriftServerProtocol`` (4-byte length-prefixed frames, binary protocol) with
two changes: frames are bounded by ``MAX_FRAME_BYTES`` before they are buffered,
and every connection gets its own generated ``NodeTracker.Processor`` around a
``TrackerCalls`` handler that knows the fingerprint of the key the peer showed
in the TLS handshake.  ``TrackerCalls`` decodes (validating), asks the sans-IO
``NodeTracker`` and encodes; a refusal or malformed request becomes the IDL's
``NodeRefused``, an undecodable frame closes the connection; other connections
go on.

``ExpiryMonitor`` runs ``NodeTracker.expire_silent_nodes`` from a ``LoopingCall``
on the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from thrift.transport import TTransport
from thrift.transport.TTwisted import ThriftServerProtocol
from twisted.internet import defer, task
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.internal import tracker_codec as codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import NodeTracker as gen_service
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, peer_address, peer_fingerprint, peer_ring_id
from cortex_rm.yarn.resource_tracker import HeartbeatAnswer, NodeRefused, RegistrationAnswer

log = Logger()
T = TypeVar("T")


@implementer(gen_service.Iface)
class TrackerCalls:
    """The generated service's handler for one connection: decode, decide, encode."""

    def __init__(self, tracker: NodeTracker, fingerprint: str, peer: str, ring_id: int | None = None) -> None:
        self.tracker = tracker
        self.fingerprint = fingerprint
        self.peer = peer
        self.ring_id = ring_id

    def _decide(self, call: str, decide: Callable[[], T]) -> T:
        """The tracker's answer to ``call``; a refusal or malformed request raises the IDL's ``NodeRefused``."""
        try:
            return decide()
        except (MalformedMessage, NodeRefused) as e:
            log.warn("{call} from {peer} refused: {error}", call=call, peer=self.peer, error=str(e))
            raise ttypes.NodeRefused(message=str(e)) from None
        except Exception:
            # the generated processor answers INTERNAL_ERROR; say here which call and peer
            log.failure("{call} from {peer} failed", call=call, peer=self.peer)
            raise

    def registerNode(self, registration: Any) -> ttypes.RegistrationResponse:  # noqa: N802 (IDL name)
        def register() -> RegistrationAnswer:
            return self.tracker.register(codec.registration_from_thrift(registration), self.fingerprint, self.ring_id)

        return codec.registration_answer_to_thrift(self._decide("registerNode", register))

    def nodeHeartbeat(self, status: Any) -> ttypes.HeartbeatResponse:  # noqa: N802 (IDL name)
        def heartbeat() -> HeartbeatAnswer:
            return self.tracker.heartbeat(codec.status_from_thrift(status), self.fingerprint)

        return codec.heartbeat_answer_to_thrift(self._decide("nodeHeartbeat", heartbeat))


@implementer(IHandshakeListener)
class TrackerConnection(ThriftServerProtocol):  # type: ignore[misc]  # thrift.transport.TTwisted is untyped
    """One node's connection to the tracker (inside TLS)."""

    MAX_LENGTH = codec.MAX_FRAME_BYTES
    factory: TrackerServerFactory

    def __init__(self) -> None:
        self.processor: gen_service.Processor | None = None
        self.peer = "?"

    def connectionMade(self) -> None:
        self.peer = peer_address(self.transport)

    def handshakeCompleted(self) -> None:
        try:
            fingerprint = peer_fingerprint(self.transport)
            ring_id = peer_ring_id(self.transport)
        except PeerCertificateMissing:  # cannot happen: the TLS context demands a certificate
            log.warn("tracker connection from {peer} without a certificate; closing it", peer=self.peer)
            self.transport.loseConnection()
            return
        self.processor = gen_service.Processor(TrackerCalls(self.factory.tracker, fingerprint, self.peer, ring_id))
        log.debug("tracker connection from {peer}, key {fingerprint}", peer=self.peer, fingerprint=fingerprint)

    def stringReceived(self, frame: bytes) -> None:
        if self.processor is None:  # cannot happen: TLS delivers no data before the handshake
            self.transport.loseConnection()
            return
        tmi = TTransport.TMemoryBuffer(frame)
        tmo = TTransport.TMemoryBuffer()
        iprot = codec.PROTOCOL_FACTORY.getProtocol(tmi)
        oprot = codec.PROTOCOL_FACTORY.getProtocol(tmo)
        # maybeDeferred: a frame that cannot even be decoded raises here, synchronously
        d = defer.maybeDeferred(self.processor.process, iprot, oprot)
        d.addCallbacks(self.processOk, self.processError, callbackArgs=(tmo,))

    def processError(self, error: Failure) -> None:
        log.warn(
            "tracker connection from {peer}: undecodable request ({error}); closing it",
            peer=self.peer,
            error=error.getErrorMessage(),
        )
        self.transport.loseConnection()

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn(
            "tracker connection from {peer}: a {length}-byte frame exceeds {limit} bytes; closing it",
            peer=self.peer,
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.transport.loseConnection()


class TrackerServerFactory(Factory):
    """Builds a ``TrackerConnection`` per accepted connection (wrap it in TLS)."""

    protocol = TrackerConnection
    noisy = False

    def __init__(self, tracker: NodeTracker) -> None:
        self.tracker = tracker


def tracker_server_factory(tracker: NodeTracker, tls: MutualTLS, clock: IReactorTime) -> TLSMemoryBIOFactory:
    """The factory to listen with: the tracker's Thrift service inside mutual TLS."""
    # (mypy without the zope plugin cannot see that MutualTLS and the factory provide the interfaces)
    return TLSMemoryBIOFactory(tls, False, TrackerServerFactory(tracker), clock=clock)


class ExpiryMonitor:
    """Runs ``expire_silent_nodes`` every ``interval_ms`` on ``clock`` (YARN's NMLivelinessMonitor)."""

    def __init__(self, tracker: NodeTracker, clock: IReactorTime, interval_ms: int | None = None) -> None:
        self.tracker = tracker
        self.interval_ms = interval_ms if interval_ms is not None else tracker.expiry_check_interval_ms
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = clock

    def _check(self) -> None:
        try:
            self.tracker.expire_silent_nodes()
        except Exception:  # a bug must not stop the monitor: later checks still run
            log.failure("expiry check failed")

    def start(self) -> None:
        self._loop.start(self.interval_ms / 1000, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
