"""A node's connection to the RM's NodeTracker: Thrift over mutual TLS.

``TrackerClient.connect`` opens a TCP connection, runs the TLS handshake and
fires with a client that knows the fingerprint of the key the RM showed, before
anything is sent (so the caller can check its pin first).  ``register`` and
``heartbeat`` send one call each through the generated ``NodeTracker.Client``
on PyPI thrift's ``ThriftClientProtocol``, with a timeout, and fire with the
decoded, validated answer.  Every failure is one of two kinds:

* a refusal: the RM answered with one of the IDL's exceptions, raised here as
  ``NodeRefused``, ``FsRefused`` (the file system's), or, for the events' calls,
  ``UnknownRegistration``, ``InvalidToken`` and ``CallRateExceeded``;
* ``TrackerUnavailable``: no connection, a failed handshake, a broken or timed
  out call, or an answer that breaks the protocol (then the connection is
  dropped, so a late answer can never be matched to a later call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from thrift.Thrift import TApplicationException
from thrift.transport.TTwisted import ThriftClientProtocol
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHandshakeListener, IReactorTime
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.accounting.attestations import SignedAttestations
from cortex_rm.accounting.ledger_office import Receipts
from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.registry import UnknownRegistration
from cortex_rm.events.caller_assertions import CallerKey
from cortex_rm.events.request_proofs import SignedRequest
from cortex_rm.internal.event_codec import CALLER_PROOF
from cortex_rm.internal import block_codec, ledger_codec
from cortex_rm.internal import tracker_codec as codec
from cortex_rm.internal.block_codec import (
    AggregationTarget,
    BlockCommandsMessage,
    BlockLocation,
    BlockReportMessage,
    LocalizationSource,
    RuntimeImageSource,
    WrittenBlockMessage,
)
from cortex_rm.internal.errors import CallRateExceeded, MalformedMessage, TrackerUnavailable
from cortex_rm.internal.gen import NodeTracker as gen_service
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.ring_codec import _RECORD
from cortex_rm.internal.tracker_event_calls import caller_key_from_thrift
from cortex_rm.internal.tls import (
    MutualTLS,
    PeerCertificateMissing,
    abort_connection,
    peer_fingerprint,
    peer_public_key,
)
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.tokens import Token
from cortex_rm.yarn.reactors import IReactorTimeTCP
from cortex_rm.yarn.resource_tracker import (
    HeartbeatAnswer,
    NodeRefused,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
)

log = Logger()
T = TypeVar("T")


@implementer(IHandshakeListener)
class TrackerClientProtocol(ThriftClientProtocol):  # type: ignore[misc]  # thrift.transport.TTwisted is untyped
    """PyPI thrift's client protocol, bounded, telling when the TLS handshake is done and when it ends."""

    MAX_LENGTH = codec.MAX_FRAME_BYTES

    def __init__(self) -> None:
        super().__init__(gen_service.Client, codec.PROTOCOL_FACTORY)
        self.client: gen_service.Client | None = None
        self.handshake: defer.Deferred[str] = defer.Deferred(lambda _: self._abort())
        self.closed: defer.Deferred[BaseException] = defer.Deferred()  # fires with the reason (never errbacks)

    def _abort(self) -> None:
        abort_connection(self.transport)

    def handshakeCompleted(self) -> None:
        if self.handshake.called:
            return
        try:
            fingerprint = peer_fingerprint(self.transport)
        except PeerCertificateMissing as e:
            self.handshake.errback(e)
            self._abort()
            return
        self.handshake.callback(fingerprint)

    def stringReceived(self, frame: bytes) -> None:
        try:
            super().stringReceived(frame)
        except Exception as e:  # an answer to no call, or one that cannot be decoded
            log.warn("tracker connection: bad answer frame ({error}); closing it", error=repr(e))
            self._abort()

    def lengthLimitExceeded(self, length: int) -> None:
        log.warn("tracker connection: a {length}-byte answer exceeds the limit; closing it", length=length)
        self._abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # fails every call in flight
        if not self.handshake.called:
            self.handshake.errback(reason)
        if not self.closed.called:
            self.closed.callback(reason.value if reason.value is not None else ConnectionDone())


class _ProtocolFactory(ClientFactory):
    protocol = TrackerClientProtocol
    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> TrackerClientProtocol:
        p = TrackerClientProtocol()
        p.factory = self
        return p


class TrackerClient:
    """One open, handshaken connection to the RM's tracker."""

    def __init__(
        self, protocol: TrackerClientProtocol, address: str, fingerprint: str, clock: IReactorTime, timeout_s: float
    ) -> None:
        self.protocol = protocol
        self.address = address
        self.peer_fingerprint = fingerprint
        self.clock = clock
        self.timeout_s = timeout_s

    @classmethod
    def connect(
        cls, reactor: IReactorTimeTCP, host: str, port: int, tls: MutualTLS, timeout_s: float
    ) -> defer.Deferred[TrackerClient]:
        """Connect and handshake within ``timeout_s``; fails with TrackerUnavailable."""
        address = f"{host}:{port}"

        async def attempt() -> TrackerClient:
            endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout_s)
            tls_protocol = await endpoint.connect(TLSMemoryBIOFactory(tls, True, _ProtocolFactory(), clock=reactor))
            assert isinstance(tls_protocol, TLSMemoryBIOProtocol)  # what TLSMemoryBIOFactory builds
            protocol = tls_protocol.wrappedProtocol
            assert isinstance(protocol, TrackerClientProtocol)
            fingerprint = await protocol.handshake
            return cls(protocol, address, fingerprint, reactor, timeout_s)

        def failed(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError):
                raise TrackerUnavailable(f"no TLS connection to the tracker at {address} within {timeout_s:g} s")
            raise TrackerUnavailable(f"cannot connect to the tracker at {address}: {_describe(failure)}")

        d = defer.ensureDeferred(attempt())
        d.addTimeout(timeout_s, reactor)
        d.addErrback(failed)
        return d

    def peer_key(self) -> object:
        """The public key the RM showed in the handshake (PeerCertificateMissing once the connection is gone)."""
        return peer_public_key(self.protocol.transport)

    @property
    def lost(self) -> defer.Deferred[BaseException]:
        """Fires with the reason (an exception, e.g. ConnectionDone) when the connection closes."""
        return self.protocol.closed

    def abort(self) -> None:
        """Drop the connection now; calls in flight fail with TrackerUnavailable."""
        self.protocol._abort()

    def register(self, registration: NodeRegistration) -> defer.Deferred[RegistrationAnswer]:
        return self._call(
            "registerNode",
            lambda c: c.registerNode(codec.registration_to_thrift(registration)),
            codec.registration_answer_from_thrift,
        )

    def heartbeat(self, status: NodeStatusReport) -> defer.Deferred[HeartbeatAnswer]:
        return self._call(
            "nodeHeartbeat",
            lambda c: c.nodeHeartbeat(codec.status_to_thrift(status)),
            codec.heartbeat_answer_from_thrift,
        )

    def block_report(self, node_id: NodeId, report: BlockReportMessage) -> defer.Deferred[BlockCommandsMessage]:
        node, message = block_codec.report_to_thrift(node_id, report)
        return self._call("blockReport", lambda c: c.blockReport(node, message), block_codec.commands_from_thrift)

    def commit_write(
        self, node_id: NodeId, ticket: str, written: Sequence[WrittenBlockMessage]
    ) -> defer.Deferred[int]:
        """Fires with the file's length; a file-system refusal fails with ``FsRefused``."""
        node, commit = block_codec.commit_to_thrift(node_id, ticket, written)
        return self._call("commitWrite", lambda c: c.commitWrite(node, commit), _length)

    def locate_blocks(
        self, node_id: NodeId, ticket: str, offset: int, length: int
    ) -> defer.Deferred[tuple[int, tuple[BlockLocation, ...]]]:
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        return self._call(
            "locateBlocks",
            lambda c: c.locateBlocks(node, ticket, offset, length),
            block_codec.locations_from_thrift,
        )

    def open_for_localization(
        self, node_id: NodeId, token: Token, path: str, public_only: bool
    ) -> defer.Deferred[LocalizationSource]:
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        return self._call(
            "openForLocalization",
            lambda c: c.openForLocalization(node, token.identifier, token.password, path, public_only),
            block_codec.source_from_thrift,
        )

    def open_for_aggregation(self, node_id: NodeId, app_id: str) -> defer.Deferred[AggregationTarget]:
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        return self._call(
            "openForAggregation", lambda c: c.openForAggregation(node, app_id), block_codec.target_from_thrift
        )

    def open_runtime_image(self, node_id: NodeId) -> defer.Deferred[RuntimeImageSource]:
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        return self._call("openRuntimeImage", lambda c: c.openRuntimeImage(node), block_codec.image_from_thrift)

    def application_network(self, node_id: NodeId, app_id: str) -> defer.Deferred[AppNetwork]:
        """Where ``app_id`` was submitted from, and its slot of source ports."""
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        return self._call(
            "applicationNetwork", lambda c: c.applicationNetwork(node, app_id), block_codec.network_from_thrift
        )

    def submit_attestations(self, node_id: NodeId, batches: Sequence[SignedAttestations]) -> defer.Deferred[Receipts]:
        """Hand this witness's signed batches to the ledger; fires with their receipts."""
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        encoded = ledger_codec.batches_to_thrift(batches)
        return self._call(
            "submitAttestations", lambda c: c.submitAttestations(node, encoded), ledger_codec.receipts_from_thrift
        )

    def open_function_code(self, node_id: NodeId, record: Record) -> defer.Deferred[LocalizationSource]:
        """The code of the function whose registration ``record`` (as the ring holds it) carries: its
        length, modification time and an OPEN ticket.  ``UnknownRegistration`` when the RM does not
        hold that registration now, ``FsRefused`` for the file, ``CallRateExceeded`` when asked too often."""
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        function = _RECORD.to_wire(record)
        return self._call(
            "openFunctionCode", lambda c: c.openFunctionCode(node, function), block_codec.source_from_thrift
        )

    def caller_key(self, node_id: NodeId, request: SignedRequest) -> defer.Deferred[CallerKey]:
        """Who signed ``request`` to this node, in the RM's assertion for this node, and her token's entry key
        for this node and the request's hour; ``InvalidToken`` saying why nobody, ``CallRateExceeded`` when
        asked too often."""
        node = block_codec.report_to_thrift(node_id, BlockReportMessage(False, (), (), 0))[0]
        proof = CALLER_PROOF.to_wire(request)
        return self._call("callerKey", lambda c: c.callerKey(node, proof), caller_key_from_thrift)

    def _call(
        self, name: str, send: Callable[[gen_service.Client], defer.Deferred[Any]], decode: Callable[[Any], T]
    ) -> defer.Deferred[T]:
        client = self.protocol.client
        if client is None:
            return defer.fail(TrackerUnavailable(f"{name} to {self.address}: the connection is closed"))
        d = send(client)
        d.addTimeout(self.timeout_s, self.clock)

        def decoded(result: Any) -> T:
            try:
                return decode(result)
            except MalformedMessage as e:
                self.abort()
                raise TrackerUnavailable(f"{name} to {self.address}: the answer breaks the protocol: {e}") from None

        def failed(failure: Failure) -> Failure:
            if failure.check(ttypes.NodeRefused):
                raise NodeRefused(str(getattr(failure.value, "message", failure.value)))  # the IDL's NodeRefused
            if failure.check(ttypes.FsFailure):
                value = failure.value
                raise FsRefused(str(getattr(value, "java_class", "")), str(getattr(value, "message", "")))
            refused = _event_refusal(failure.value)
            if refused is not None:
                raise refused
            self.abort()
            if failure.check(defer.TimeoutError):
                raise TrackerUnavailable(f"{name} to {self.address}: no answer within {self.timeout_s:g} s")
            raise TrackerUnavailable(f"{name} to {self.address}: {_describe(failure)}")

        d.addCallbacks(decoded, failed)
        return d


class FsRefused(Exception):
    """The RM's file system refused a node's call; ``java_class`` names the client's exception."""

    def __init__(self, java_class: str, message: str) -> None:
        super().__init__(message)
        self.java_class = java_class


def _event_refusal(value: object) -> Exception | None:
    """The events' refusals (the IDL's exceptions) as the errors a node handles; None for anything else."""
    message = str(getattr(value, "message", ""))
    if isinstance(value, ttypes.FunctionRefused):
        return UnknownRegistration(message)
    if isinstance(value, ttypes.CredentialRefused):
        return InvalidToken(message)
    if isinstance(value, ttypes.TryLater):
        wait = getattr(value, "retry_after_ms", 0)
        return CallRateExceeded(message, wait if isinstance(wait, int) and 0 <= wait <= 3_600_000 else 1000)
    return None


def _length(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedMessage(f"commitWrite's answer must be a length, not {value!r}")
    return value


def _describe(failure: Failure) -> str:
    """A one-line reason for logs: the exception's class and message."""
    value = failure.value
    if isinstance(value, TApplicationException):
        return f"the RM failed the call ({value.message})"
    return f"{type(value).__name__}: {failure.getErrorMessage()}"
