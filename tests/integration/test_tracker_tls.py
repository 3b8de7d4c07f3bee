"""A real NodeTracker server and real NodeStatusUpdaters over mutual TLS on 127.0.0.1.

Everything runs on the real reactor with real sockets, certificates and Thrift
frames, but with short intervals (heartbeat 100 ms, expiry 600 ms, expiry check
every 100 ms); every wait is a bounded wait on a condition.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeState, NodeTable
from cortex_rm.container.status_updater import Backoff, NodeStatusUpdater, UpdaterState
from cortex_rm.internal.identity import KnownResourceManagers, NodeIdentity
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_client import TrackerClient
from cortex_rm.internal.tracker_codec import MAX_FRAME_BYTES
from cortex_rm.internal.tracker_server import ExpiryMonitor, tracker_server_factory
from cortex_rm.roles.status_updater_service import NodeStatusUpdaterService, TrackerLocation
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused, NodeRegistration, NodeStatusReport
from cortex_rm.yarn.resources import Resource
from tests.support.reactor import reactor
from tests.support.reactor import wait_until as wait_for

pytestmark = pytest.mark.integration

HEARTBEAT_MS = 100
EXPIRY_MS = 600
WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> defer.Deferred:
    """Wait (bounded by ``timeout``) until ``condition`` holds."""
    return wait_for(condition, what, timeout)


@dataclass
class RM:
    identity: NodeIdentity
    tracker: NodeTracker
    monitor: ExpiryMonitor
    port: Any

    @property
    def address(self) -> HostPort:
        return HostPort("127.0.0.1", self.port.getHost().port)

    def state(self, node_id: NodeId) -> NodeState | None:
        try:
            return self.tracker.nodes.get(node_id).state
        except Exception:
            return None


@pytest.fixture
def rm() -> Iterator[RM]:
    identity = NodeIdentity.generate()
    tracker = NodeTracker(NodeTable(), reactor(), nm_expiry_ms=EXPIRY_MS, rm_identifier=1)
    monitor = ExpiryMonitor(tracker, reactor(), interval_ms=100)
    port = reactor().listenTCP(
        0, tracker_server_factory(tracker, MutualTLS(identity), reactor()), interface="127.0.0.1"
    )
    monitor.start()
    yield RM(identity, tracker, monitor, port)
    monitor.stop()
    port.stopListening()


def registration(port: int, memory_mb: int = 2048) -> NodeRegistration:
    return NodeRegistration(
        NodeId("127.0.0.1", port), "127.0.0.1:8042", "/default-rack", Resource(memory_mb, 2), HEARTBEAT_MS
    )


def updater(rm: RM, node_port: int, state_dir: Path, identity: NodeIdentity | None = None) -> NodeStatusUpdaterService:
    core = NodeStatusUpdater(registration(node_port), Backoff(initial_ms=50, max_ms=500, jitter=0.0))
    return NodeStatusUpdaterService(
        reactor(),
        core,
        rm.address,
        MutualTLS(identity or NodeIdentity.load_or_create(state_dir, key_bits=0)),
        KnownResourceManagers.in_state_dir(state_dir),
        rpc_timeout_ms=2000,
    )


@pytest_twisted.inlineCallbacks
def test_two_nodes_register_and_the_stopped_one_becomes_lost(rm: RM, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Both nodes become RUNNING with their capacity and pin the RM; the one that stops is LOST, the other stays."""
    a, b = updater(rm, 1001, tmp_path / "a"), updater(rm, 1002, tmp_path / "b")
    a.start()
    b.start()
    try:
        a_id, b_id = NodeId("127.0.0.1", 1001), NodeId("127.0.0.1", 1002)
        yield wait_until(lambda: rm.state(a_id) is rm.state(b_id) is NodeState.RUNNING, "both nodes are RUNNING")
        assert rm.tracker.nodes.get(a_id).capability == Resource(2048, 2)
        assert rm.tracker.bound_fingerprint(a_id) == NodeIdentity.load_or_create(tmp_path / "a", key_bits=0).fingerprint
        for d in ("a", "b"):
            assert KnownResourceManagers.in_state_dir(tmp_path / d).pinned(str(rm.address)) == rm.identity.fingerprint
        # heartbeats flow: response ids climb
        yield wait_until(lambda: a.updater.last_response_id >= 3, "node a has had three heartbeats answered")

        yield b.stop()
        yield wait_until(lambda: rm.state(b_id) is NodeState.LOST, "the stopped node is LOST")
        assert rm.state(a_id) is NodeState.RUNNING
        stopped_at = rm.tracker.last_seen_ms(b_id)
        assert stopped_at is not None and rm.tracker.now_ms() - stopped_at > EXPIRY_MS
    finally:
        yield a.stop()
        yield b.stop()


@pytest_twisted.inlineCallbacks
def test_impostor_certificate_is_refused_for_a_registered_node_id(  # type: ignore[no-untyped-def]
    rm: RM, tmp_path: Path
):
    """Another key claiming a registered NodeId gets NodeRefused for registerNode and nodeHeartbeat."""
    real = updater(rm, 2001, tmp_path / "real")
    real.start()
    node_id = NodeId("127.0.0.1", 2001)
    impostor = None
    try:
        yield wait_until(lambda: rm.state(node_id) is NodeState.RUNNING, "the real node is RUNNING")
        impostor = yield TrackerClient.connect(
            reactor(), "127.0.0.1", rm.port.getHost().port, MutualTLS(NodeIdentity.generate()), 5.0
        )
        assert impostor.peer_fingerprint == rm.identity.fingerprint
        with pytest.raises(NodeRefused, match="registered with another key"):
            yield impostor.register(registration(2001, memory_mb=1))
        with pytest.raises(NodeRefused):
            yield impostor.heartbeat(NodeStatusReport(node_id, 0))
        assert rm.tracker.nodes.get(node_id).capability.memory_mb == 2048
        assert rm.state(node_id) is NodeState.RUNNING
        # the impostor's updater backs off with its refusal; the real node keeps reporting
        fake = updater(rm, 2001, tmp_path / "fake")
        fake.start()
        yield wait_until(lambda: fake.updater.failures >= 1, "the impostor's updater was refused")
        assert fake.state is UpdaterState.BACKING_OFF and not fake.updater.registered
        yield fake.stop()
        last = real.updater.last_response_id
        yield wait_until(lambda: real.updater.last_response_id > last, "the real node heartbeats on")
    finally:
        if impostor is not None:
            impostor.abort()
        yield real.stop()


@pytest_twisted.inlineCallbacks
def test_node_refuses_an_rm_whose_key_differs_from_its_pin(rm: RM, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A node that pinned another key for the RM's address sends nothing and backs off."""
    KnownResourceManagers.in_state_dir(tmp_path / "n").pin(str(rm.address), "0" * 64)
    node = updater(rm, 3001, tmp_path / "n")
    node.start()
    try:
        yield wait_until(lambda: node.updater.failures >= 1, "the node rejected the RM")
        assert node.state is UpdaterState.BACKING_OFF
        assert len(rm.tracker.nodes) == 0
    finally:
        yield node.stop()


@pytest_twisted.inlineCallbacks
def test_node_waits_for_an_rm_that_is_not_up_yet(tmp_path: Path):  # type: ignore[no-untyped-def]
    """With nobody listening the updater backs off and retries; once the tracker listens, it registers."""
    from cortex_rm.local_cluster import free_ports

    (port,) = free_ports(1)
    identity = NodeIdentity.generate()
    tracker = NodeTracker(NodeTable(), reactor(), nm_expiry_ms=EXPIRY_MS, rm_identifier=1)
    core = NodeStatusUpdater(registration(4001), Backoff(initial_ms=50, max_ms=200, jitter=0.0))
    node = NodeStatusUpdaterService(
        reactor(),
        core,
        HostPort("127.0.0.1", port),
        MutualTLS(NodeIdentity.generate()),
        KnownResourceManagers.in_state_dir(tmp_path),
        rpc_timeout_ms=2000,
    )
    node.start()
    listening = None
    try:
        yield wait_until(lambda: core.failures >= 2, "two connection attempts failed")
        listening = reactor().listenTCP(
            port, tracker_server_factory(tracker, MutualTLS(identity), reactor()), interface="127.0.0.1"
        )
        yield wait_until(lambda: core.state is UpdaterState.REPORTING, "the node registered")
        assert tracker.nodes.get(NodeId("127.0.0.1", 4001)).state is NodeState.RUNNING
    finally:
        yield node.stop()
        if listening is not None:
            yield listening.stopListening()


@implementer(IHandshakeListener)
class RawPeer(Protocol):
    """Sends ``payload`` once the TLS handshake completes; records whether and how the connection closed."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.handshaken = False
        self.received = b""
        self.closed: defer.Deferred[str] = defer.Deferred()

    def handshakeCompleted(self) -> None:
        self.handshaken = True
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(reason.getErrorMessage())


@defer.inlineCallbacks
def raw_exchange(rm: RM, creator: Any, payload: bytes):  # type: ignore[no-untyped-def]
    """Connect to the tracker with ``creator``'s TLS, send ``payload``, wait (bounded) until the RM hangs up."""
    peer = RawPeer(payload)
    endpoint = TCP4ClientEndpoint(reactor(), "127.0.0.1", rm.port.getHost().port, timeout=5)
    yield endpoint.connect(TLSMemoryBIOFactory(creator, True, Factory.forProtocol(lambda: peer)))
    reason = yield peer.closed.addTimeout(WAIT_S, reactor())
    return peer, reason


@pytest_twisted.inlineCallbacks
def test_hostile_peers_are_disconnected_and_the_real_node_goes_on(  # type: ignore[no-untyped-def]
    rm: RM, tmp_path: Path, log_events: list[LogEvent]
):
    """An oversized frame, an undecodable frame and a certificate-less client each lose their connection only."""
    real = updater(rm, 5001, tmp_path / "real")
    real.start()
    try:
        yield wait_until(lambda: rm.state(NodeId("127.0.0.1", 5001)) is NodeState.RUNNING, "the real node is RUNNING")
        tls = MutualTLS(NodeIdentity.generate())
        oversized, _ = yield raw_exchange(rm, tls, struct.pack("!i", MAX_FRAME_BYTES + 1) + b"x" * 64)
        assert oversized.handshaken and oversized.received == b""
        garbage, _ = yield raw_exchange(rm, tls, struct.pack("!i", 12) + b"\xff" * 12)
        assert garbage.handshaken and garbage.received == b""
        # found by bench/soak.py: 5,000 bad frames in one write were each decoded and logged
        before = sum("undecodable request" in formatEvent(e) for e in log_events)
        flood, _ = yield raw_exchange(rm, tls, (struct.pack("!i", 2) + b"\xff\xff") * 5000)
        assert flood.handshaken and flood.received == b""
        assert sum("undecodable request" in formatEvent(e) for e in log_events) == before + 1
        # no certificate at all: TLS 1.3 lets the client finish, then the RM refuses it
        anonymous, reason = yield raw_exchange(rm, CertificateOptions(), struct.pack("!i", 4) + b"abcd")
        assert anonymous.received == b""
        assert "certificate required" in reason.lower()
        assert len(rm.tracker.nodes) == 1
        warnings = [formatEvent(e) for e in log_events if e.get("log_level") is LogLevel.warn]
        assert any("exceeds" in w for w in warnings), warnings
        assert any("undecodable request" in w for w in warnings), warnings
        assert not [e for e in log_events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
        last = real.updater.last_response_id
        yield wait_until(lambda: real.updater.last_response_id > last + 2, "the real node heartbeats on")
    finally:
        yield real.stop()


def located_updater(
    node_port: int, state_dir: Path, locate: Callable[[], defer.Deferred[TrackerLocation]]
) -> NodeStatusUpdaterService:
    """An updater with no configured RM address: it asks ``locate`` before each connection."""
    core = NodeStatusUpdater(registration(node_port), Backoff(initial_ms=50, max_ms=200, jitter=0.0))
    return NodeStatusUpdaterService(
        reactor(),
        core,
        None,
        MutualTLS(NodeIdentity.load_or_create(state_dir, key_bits=0)),
        KnownResourceManagers.in_state_dir(state_dir),
        rpc_timeout_ms=2000,
        locate_tracker=locate,
    )


@pytest_twisted.inlineCallbacks
def test_a_node_finds_the_tracker_through_its_locator_and_checks_the_key_it_names(  # type: ignore[no-untyped-def]
    rm: RM, tmp_path: Path
):
    """With no configured address the node asks where the tracker is before connecting
    (retrying while nobody has published it yet), then registers with a tracker that
    shows the key the record names."""
    answers: list[TrackerLocation | None] = [None, None]

    def locate() -> defer.Deferred[TrackerLocation]:
        if answers:
            answers.pop(0)
            return defer.fail(LookupError("no ResourceManager has published 'cortex:resourcemanager' yet"))
        return defer.succeed(TrackerLocation(rm.address, rm.identity.fingerprint))

    node = located_updater(5001, tmp_path / "n", locate)
    node.start()
    try:
        yield wait_until(lambda: rm.state(NodeId("127.0.0.1", 5001)) is NodeState.RUNNING, "registered")
        assert node.updater.failures == 0  # registered: the two failed lookups are behind it
        assert node.rm_address == rm.address
    finally:
        yield node.stop()


@pytest_twisted.inlineCallbacks
def test_a_node_refuses_a_tracker_whose_key_is_not_the_one_the_ring_names(  # type: ignore[no-untyped-def]
    rm: RM, tmp_path: Path
):
    """A tracker at the published address showing another key gets nothing: the node backs off."""
    node = located_updater(5002, tmp_path / "n", lambda: defer.succeed(TrackerLocation(rm.address, "0" * 64)))
    node.start()
    try:
        yield wait_until(lambda: node.updater.failures >= 1, "the node rejected the tracker")
        assert len(rm.tracker.nodes) == 0
    finally:
        yield node.stop()


@pytest_twisted.inlineCallbacks
def test_a_node_pins_the_rm_it_found_through_the_ring_and_refuses_a_rewritten_record(  # type: ignore[no-untyped-def]
    rm: RM, tmp_path: Path
):
    """Any ring member can rewrite the RM record: after its first registration the node
    keeps to the key it pinned, and a record naming another key (with a tracker that
    shows it) gets nothing."""
    node = located_updater(5003, tmp_path / "n", lambda: defer.succeed(TrackerLocation(rm.address, rm.identity.fingerprint)))
    node.start()
    try:
        yield wait_until(lambda: rm.state(NodeId("127.0.0.1", 5003)) is NodeState.RUNNING, "registered")
    finally:
        yield node.stop()
    impostor = NodeIdentity.generate()
    tracker = NodeTracker(NodeTable(), reactor(), nm_expiry_ms=EXPIRY_MS, rm_identifier=2)
    port = reactor().listenTCP(0, tracker_server_factory(tracker, MutualTLS(impostor), reactor()), interface="127.0.0.1")
    address = HostPort("127.0.0.1", port.getHost().port)
    node = located_updater(5003, tmp_path / "n", lambda: defer.succeed(TrackerLocation(address, impostor.fingerprint)))
    node.start()
    try:
        yield wait_until(lambda: node.updater.failures >= 1, "the node refused the impostor's record")
        assert len(tracker.nodes) == 0
    finally:
        yield node.stop()
        yield port.stopListening()
