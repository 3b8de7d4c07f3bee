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
from dataclasses import dataclass
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
from cortex_rm.allocator.nodes import NodeState
from cortex_rm.container.runtime_image import runtime_image_path
from cortex_rm.fs.block_map import DataNode
from cortex_rm.fs.errors import FileNotFound, FsError
from cortex_rm.fs.model import BlockRef, User
from cortex_rm.fs.name_node import NameNode, WrittenBlock
from cortex_rm.fs.paths import parse_path
from cortex_rm.accounting.attestations import SignedAttestations
from cortex_rm.accounting.ledger_office import Receipts
from cortex_rm.internal import block_codec, ledger_codec
from cortex_rm.internal import tracker_codec as codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.internal.gen import NodeTracker as gen_service
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.tracker_event_calls import EVENT_REFUSALS, EventCalls, EventServices
from cortex_rm.internal.tls import MutualTLS, PeerCertificateMissing, peer_address, peer_fingerprint, peer_ring_id
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.log_aggregation import DEFAULT_REMOTE_APP_LOG_DIR, remote_node_log_file
from cortex_rm.yarn.refusal_log import RefusalLog, sanitised
from cortex_rm.yarn.resource_tracker import HeartbeatAnswer, NodeRefused, RegistrationAnswer
from cortex_rm.yarn.tokens import ContainerTokenIdentifier

#: Reads a ContainerToken's identifier (the Hadoop wire's job: ``yarn_api.tokens.read_container_identifier``).
IdentifierReader = Callable[[bytes], ContainerTokenIdentifier]
#: The owner of an application a node aggregates logs of (NodeRefused if the node may not).
AppOwner = Callable[[ApplicationId, NodeId], str]
#: The host an application was submitted from ("" unknown; UnknownApplication if none such).
AppNetworkOf = Callable[[ApplicationId], AppNetwork]
#: Appends a witness's (ring id) attestation batches to the ledger; NodeRefused if it may not.
SubmitAttestations = Callable[[int, list[SignedAttestations]], defer.Deferred[Receipts]]

log = Logger()
T = TypeVar("T")

MAX_PATH_CHARS = 8000
MAX_TOKEN_BYTES = 4096
LOCALIZATION_GRACE_MS = 10 * 60 * 1000
#: Protocol errors past the first ten of an interval are counted, one line per interval.
REFUSAL_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class FileSystemServices:
    """What the tracker serves nodes besides registration and heartbeats: the file system
    (``name_node``), container tokens read with ``read_identifier`` for localization, the owner
    of an application whose logs a node aggregates (``app_owner``), the runtime image the
    cluster runs (``runtime_image``, its archive's SHA-256; "" for none), and where applications
    were submitted from and their slots of source ports (``app_network``), and the ledger that takes
    witnesses' attestations (``submit_attestations``), and the function registry (``events``)."""

    name_node: NameNode
    read_identifier: IdentifierReader | None = None
    app_owner: AppOwner | None = None
    runtime_image: str = ""
    app_network: AppNetworkOf | None = None
    submit_attestations: SubmitAttestations | None = None
    events: EventServices | None = None


@implementer(gen_service.Iface)
class TrackerCalls(EventCalls):
    """The generated service's handler for one connection: decode, decide, encode (events: ``EventCalls``)."""

    def __init__(
        self,
        tracker: NodeTracker,
        fingerprint: str,
        peer: str,
        ring_id: int | None = None,
        fs: FileSystemServices | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.tracker = tracker
        self.fingerprint = fingerprint
        self.peer = peer
        self.ring_id = ring_id
        self.fs = fs
        self.refusals = refusals

    def _decide(self, call: str, decide: Callable[[], T]) -> T:
        """The tracker's answer to ``call``; a refusal or malformed request raises the IDL's ``NodeRefused``."""
        try:
            return decide()
        except (MalformedMessage, NodeRefused) as e:
            if self.refusals is None or self.refusals.may_detail(HostPort.host_of(self.peer)):
                log.warn("{call} from {peer} refused: {error}", call=call, peer=self.peer, error=sanitised(str(e)))
            raise ttypes.NodeRefused(message=str(e)) from None
        except (ttypes.FsFailure, *EVENT_REFUSALS):  # the file system's refusal (logged by _fs_call), the events'
            raise
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

    # -- the file system's calls: only from a RUNNING (or UNHEALTHY, DECOMMISSIONING) node, over the connection of the key it registered with

    def _data_node(self, node_id: NodeId) -> tuple[NameNode, DataNode]:
        if self.fs is None:
            raise NodeRefused("this RM serves no file system")
        if self.tracker.bound_fingerprint(node_id) != self.fingerprint:
            raise NodeRefused(f"node {node_id} is not registered with the key of this connection; register first")
        record = self.tracker.nodes.get(node_id)
        # unhealthy: no containers, still a DataNode; decommissioning: its blocks are being copied off
        if record.state not in (NodeState.RUNNING, NodeState.UNHEALTHY, NodeState.DECOMMISSIONING):
            raise NodeRefused(f"node {node_id} is {record.state.name}, not RUNNING; register again")
        return self.fs.name_node, DataNode(str(node_id), record.http_address)

    def _fs_call(self, call: str, decide: Callable[[], T]) -> T:
        """Like ``_decide``, and a file-system refusal becomes the IDL's ``FsFailure``."""

        def checked() -> T:
            try:
                return decide()
            except FsError as e:
                log.info("{call} from {peer}: {error}", call=call, peer=self.peer, error=f"{e.simple_name}: {e}")
                raise ttypes.FsFailure(java_class=e.java_class, message=str(e)) from None

        return self._decide(call, checked)

    def blockReport(self, node: Any, report: Any) -> ttypes.BlockCommands:  # noqa: N802 (IDL name)
        def decide() -> ttypes.BlockCommands:
            node_id, message = block_codec.report_from_thrift(node, report)
            name_node, data_node = self._data_node(node_id)
            commands = name_node.node_report(data_node, message.full, message.added, message.removed, message.free_bytes)
            fetch = tuple(
                block_codec.BlockFetch(
                    BlockRef(f.block_id, f.length, f.checksum),
                    tuple(s.http_address for s in f.sources),
                    name_node.block_token(f.block_id),
                )
                for f in commands.fetch
            )
            return block_codec.commands_to_thrift(
                block_codec.BlockCommandsMessage(
                    commands.delete, fetch, name_node.key, name_node.report_interval_ms, commands.full_report_wanted
                )
            )

        return self._decide("blockReport", decide)

    def commitWrite(self, node: Any, commit: Any) -> defer.Deferred[int]:  # noqa: N802 (IDL name)
        def decide() -> defer.Deferred[int]:
            node_id, ticket, written = block_codec.commit_from_thrift(node, commit)
            name_node, _ = self._data_node(node_id)
            blocks = [WrittenBlock(w.block, tuple(str(h) for h in w.holders)) for w in written]
            return name_node.commit_write(str(node_id), ticket, blocks)

        d = self._fs_call("commitWrite", decide)
        return d.addErrback(self._fs_failure, "commitWrite")

    def _fs_failure(self, failure: Failure, call: str) -> Failure:
        if failure.check(FsError):
            error = failure.value
            assert isinstance(error, FsError)
            log.info("{call} from {peer}: {error}", call=call, peer=self.peer, error=f"{error.simple_name}: {error}")
            raise ttypes.FsFailure(java_class=error.java_class, message=str(error))
        return failure

    def locateBlocks(self, node: Any, ticket: Any, offset: Any, length: Any) -> ttypes.BlockLocations:  # noqa: N802
        def decide() -> ttypes.BlockLocations:
            node_id = codec._node_id(node, "node_id")
            name_node, _ = self._data_node(node_id)
            text = codec._text(ticket, "ticket", block_codec.MAX_TICKET_CHARS, allow_empty=False)
            start = codec._int(offset, "offset", 0, block_codec.MAX_LENGTH)
            count = codec._int(length, "length", -1, block_codec.MAX_LENGTH)
            file_length, located = name_node.locate(text, start, count)
            return block_codec.locations_to_thrift(
                file_length,
                [
                    block_codec.BlockLocation(l.block, l.offset, tuple(s.http_address for s in l.sources), l.token)
                    for l in located
                ],
            )

        return self._fs_call("locateBlocks", decide)

    def openForLocalization(  # noqa: N802 (IDL name)
        self, node: Any, token_identifier: Any, token_password: Any, path: Any, public_only: Any
    ) -> ttypes.LocalizationSource:
        def decide() -> ttypes.LocalizationSource:
            node_id = codec._node_id(node, "node_id")
            name_node, _ = self._data_node(node_id)
            user = self._container_user(node_id, token_identifier, token_password)
            text = codec._text(path, "path", MAX_PATH_CHARS, allow_empty=False)
            if not isinstance(public_only, bool):
                raise MalformedMessage("public_only must be a boolean")
            length, modified, ticket = name_node.localization_source(
                parse_path(text), None if public_only else User(user, frozenset({user}))
            )
            return block_codec.source_to_thrift(block_codec.LocalizationSource(length, modified, ticket))

        return self._fs_call("openForLocalization", decide)

    def openForAggregation(self, node: Any, application_id: Any) -> defer.Deferred[ttypes.AggregationTarget]:  # noqa: N802
        """Where the node writes the application's aggregated logs, as its owner (asynchronous:
        the directories are made durably first)."""

        def decide() -> defer.Deferred[ttypes.AggregationTarget]:
            node_id = codec._node_id(node, "node_id")
            name_node, _ = self._data_node(node_id)
            app_id = codec._yarn_id(application_id, "application_id", ApplicationId.parse)
            assert self.fs is not None  # _data_node checked
            if self.fs.app_owner is None:
                raise NodeRefused("this RM does not take aggregated logs")
            owner = self.fs.app_owner(app_id, node_id)
            root = parse_path(DEFAULT_REMOTE_APP_LOG_DIR)
            path = parse_path(remote_node_log_file(DEFAULT_REMOTE_APP_LOG_DIR, owner, app_id, node_id))
            d = name_node.aggregation_redirect(root, path, owner, str(node_id))
            return d.addCallback(
                lambda redirect: block_codec.target_to_thrift(block_codec.AggregationTarget(str(path), redirect.ticket, owner))
            )

        return self._fs_call("openForAggregation", decide).addErrback(self._fs_failure, "openForAggregation")

    def openRuntimeImage(self, node: Any) -> ttypes.RuntimeImage:  # noqa: N802 (IDL name)
        """The runtime image the cluster runs and a read ticket for its archive, which everyone
        must be able to read (``runtime_image.RUNTIME_IMAGE_DIR``); no ticket until it is uploaded."""

        def decide() -> ttypes.RuntimeImage:
            node_id = codec._node_id(node, "node_id")
            name_node, _ = self._data_node(node_id)
            assert self.fs is not None  # _data_node checked
            sha256 = self.fs.runtime_image
            if not sha256:
                return block_codec.image_to_thrift(block_codec.RuntimeImageSource("", None))
            try:
                length, modified, ticket = name_node.localization_source(parse_path(runtime_image_path(sha256)), None)
            except FileNotFound:  # not uploaded yet: the node says what it waits for
                return block_codec.image_to_thrift(block_codec.RuntimeImageSource(sha256, None))
            source = block_codec.LocalizationSource(length, modified, ticket)
            return block_codec.image_to_thrift(block_codec.RuntimeImageSource(sha256, source))

        return self._fs_call("openRuntimeImage", decide)

    def applicationNetwork(self, node: Any, application_id: Any) -> ttypes.ApplicationNetwork:  # noqa: N802 (IDL name)
        """Where the application was submitted from (its driver's only host outside the
        cluster) and its slot of source ports."""

        def decide() -> ttypes.ApplicationNetwork:
            node_id = codec._node_id(node, "node_id")
            self._data_node(node_id)  # a registered, running node on its own key
            app_id = codec._yarn_id(application_id, "application_id", ApplicationId.parse)
            assert self.fs is not None  # _data_node checked
            if self.fs.app_network is None:
                raise NodeRefused("this RM does not say where applications come from")
            return block_codec.network_to_thrift(self.fs.app_network(app_id))

        return self._decide("applicationNetwork", decide)

    def submitAttestations(self, node: Any, batches: Any) -> defer.Deferred[ttypes.AttestationReceipts]:  # noqa: N802
        """A witness's signed batches, for the ledger: only its own (signed by this connection's key)."""

        def decide() -> defer.Deferred[Receipts]:
            node_id = codec._node_id(node, "node_id")
            self._data_node(node_id)  # a registered, running node on its own key
            assert self.fs is not None  # _data_node checked
            if self.fs.submit_attestations is None or self.ring_id is None:
                raise NodeRefused("this RM keeps no ledger")
            return self.fs.submit_attestations(self.ring_id, ledger_codec.batches_from_thrift(batches))

        def refused(failure: Failure) -> Failure:
            if failure.check(NodeRefused):
                message = str(failure.value)
                if self.refusals is None or self.refusals.may_detail(HostPort.host_of(self.peer)):
                    log.warn("submitAttestations from {peer} refused: {error}", peer=self.peer, error=sanitised(message))
                raise ttypes.NodeRefused(message=message)
            return failure

        d = self._decide("submitAttestations", decide)
        return d.addCallbacks(ledger_codec.receipts_to_thrift, refused)

    def _container_user(self, node_id: NodeId, identifier: Any, password: Any) -> str:
        """The user of the container whose token the node shows: the RM signed it, for this node,
        and it expired no longer than ``LOCALIZATION_GRACE_MS`` ago (localization follows a start)."""
        if not isinstance(identifier, bytes) or not isinstance(password, bytes) or len(identifier) > MAX_TOKEN_BYTES:
            raise MalformedMessage("the container token must be an identifier and a password (bytes)")
        key = self.tracker.container_token_master_key
        read_identifier = None if self.fs is None else self.fs.read_identifier
        if key is None or read_identifier is None or not key.verify(identifier, password):
            raise NodeRefused("the container token was not signed by this RM")
        try:
            granted = read_identifier(identifier)
        except ValueError as e:
            raise MalformedMessage(f"the container token's identifier: {e}") from None
        if granted.node_address != str(node_id):
            raise NodeRefused(f"the container token is for {granted.node_address}, not {node_id}")
        now_ms = int(self.tracker.clock.seconds() * 1000)
        if granted.expiry_ms + LOCALIZATION_GRACE_MS < now_ms:
            raise NodeRefused(f"the container token of {granted.container_id} has expired")
        return granted.app_submitter


@implementer(IHandshakeListener)
class TrackerConnection(ThriftServerProtocol):  # type: ignore[misc]  # thrift.transport.TTwisted is untyped
    """One node's connection to the tracker (inside TLS)."""

    MAX_LENGTH = codec.MAX_FRAME_BYTES
    factory: TrackerServerFactory

    def __init__(self) -> None:
        self.processor: gen_service.Processor | None = None
        self.peer = "?"
        self.closing = False  # frames already buffered are not processed once it is

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
        calls = TrackerCalls(self.factory.tracker, fingerprint, self.peer, ring_id, self.factory.fs, self.factory.refusals)
        self.processor = gen_service.Processor(calls)
        log.debug("tracker connection from {peer}, key {fingerprint}", peer=self.peer, fingerprint=fingerprint)

    def stringReceived(self, frame: bytes) -> None:
        if self.closing:  # (one read can hold thousands of small frames: none after a bad one)
            return
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
        self._close(f"undecodable request ({error.getErrorMessage()})")

    def lengthLimitExceeded(self, length: int) -> None:
        self._close(f"a {length}-byte frame exceeds {self.MAX_LENGTH} bytes")

    def _close(self, why: str) -> None:
        """End a connection that broke the protocol; said in detail a few times per interval, then counted."""
        if self.closing:
            return
        self.closing = True
        if self.factory.refusals.may_detail(HostPort.host_of(self.peer)):
            log.warn("tracker connection from {peer}: {why}; closing it", peer=self.peer, why=sanitised(why))
        self.transport.loseConnection()


class TrackerServerFactory(Factory):
    """Builds a ``TrackerConnection`` per accepted connection (wrap it in TLS)."""

    protocol = TrackerConnection
    noisy = False

    def __init__(self, tracker: NodeTracker, fs: FileSystemServices | None = None, clock: IReactorTime | None = None) -> None:
        self.tracker = tracker
        self.fs = fs
        self.refusals = RefusalLog(log, "", REFUSAL_LOG_INTERVAL_S, clock, what="the tracker")


def tracker_server_factory(
    tracker: NodeTracker,
    tls: MutualTLS,
    clock: IReactorTime,
    fs: FileSystemServices | None = None,
) -> TLSMemoryBIOFactory:
    """The factory to listen with: the tracker's Thrift service inside mutual TLS (with the
    file system's calls when ``fs`` is given)."""
    # (mypy without the zope plugin cannot see that MutualTLS and the factory provide the interfaces)
    factory = TrackerServerFactory(tracker, fs, clock)
    return TLSMemoryBIOFactory(tls, False, factory, clock=clock)


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
