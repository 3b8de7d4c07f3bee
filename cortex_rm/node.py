"""The composition root: configuration -> services -> reactor.

``CortexNode`` builds every role this daemon plays from its configuration, with the
reactor, clock and storage injected, and starts them; nothing else wires services
together.  Roles today:

* the ring member (``dht/ring_service.py``, ``[ring]``), started first: the node's
  place on the Chord ring, SWIM failure detection and the replicated key space,
  over mutual TLS with the node's identity (``<state_dir>/identity``);
* the ResourceManager (``resource_manager.py``: its ports, state store, scheduler
  and NodeTracker), which publishes its addresses in the ring
  (``ring_records.py``), keeps the NodeManagers' capacity reports gossiped on the
  ring, and marks LOST at once the node of a member the ring declares dead or left;
* the NodeManager: its web endpoint, its containers (``container/node_manager.py``:
  ContainerManagementProtocol on ``nodemanager.address``, LXC containers), its
  capacity report on the ring, and the status updater, which finds the RM's
  NodeTracker through the ring (unless ``resourcemanager_tracker`` is configured)
  and reports this node and its containers to it over mutual TLS.

The witness joins here as it is built.

On start the node writes ``cortex-rm.pid`` and, once every port listens,
``ready.json`` (the bound addresses) into its state directory; both are removed on
a clean stop.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource as WebResource
from twisted.web.server import Site

from cortex_rm import __version__
from cortex_rm.allocator.ids import NodeId
from cortex_rm.allocator.resources import Resource
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.state_store import thread_runner
from cortex_rm.config import Config, parse_address
from cortex_rm.container.node_manager import NodeManagerRole
from cortex_rm.container.status_updater import Backoff, NodeStatusUpdater, NodeStatusUpdaterService, TrackerLocation
from cortex_rm.dht.identity import KnownResourceManagers, NodeIdentity
from cortex_rm.dht.errors import RingError
from cortex_rm.dht.member_table import MemberDied, MemberLeft, MembershipEvent
from cortex_rm.dht.ring_member import RingView
from cortex_rm.dht.ring_rest import RingResource, mount_ring
from cortex_rm.dht.ring_math import format_id
from cortex_rm.dht.ring_service import RingService
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_messages import NodeRegistration
from cortex_rm.resource_manager import ResourceManagerRole
from cortex_rm.ring_records import (
    CAPACITY_SECTION,
    CapacityReport,
    NodeDirectory,
    Republisher,
    ResourceManagerRecord,
    find_resource_manager,
    publish_resource_manager,
)
from cortex_rm.yarn_api.nm_rest import NodeInfo, build_nm_site

log = Logger()


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""


PID_FILE = "cortex-rm.pid"
RING_RETRY_MAX_MS = 3000
READY_FILE = "ready.json"


class CortexNode:
    """One daemon and the roles its configuration gives it."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.addresses: dict[str, str] = {}
        self.resource_manager: ResourceManagerRole | None = None
        self.identity: NodeIdentity | None = None
        self.node_manager: NodeManagerRole | None = None
        self.status_updater: NodeStatusUpdaterService | None = None
        self.ring: RingService | None = None
        self._ring_files: Any = None  # the thread the ring's files are written on
        self.node_directory = NodeDirectory()  # the NodeManagers' capacity reports, as gossiped
        self._republishers: list[Republisher] = []

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def rm(self) -> RMContext | None:
        return self.resource_manager.rm if self.resource_manager is not None else None

    def _listen(self, name: str, address: str, factory: Any) -> str:
        """Listen on a configured address; the bound ``host:port``."""
        host, port = parse_address(address, name)
        try:
            listening = self.reactor.listenTCP(port, factory, interface=host)
        except CannotListenError as e:
            raise NodeStartError(
                f"{name} {address} is not available ({e.socketError}); "
                f"change it in {self.config.source} or stop what uses it"
            ) from None
        self.ports.append(listening)
        bound = listening.getHost()
        self.addresses[name] = f"{host}:{bound.port}"
        log.info("{name} listening on {address}", name=name, address=self.addresses[name])
        return self.addresses[name]

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        started_ms = int(self.reactor.seconds() * 1000)
        self.identity = NodeIdentity.load_or_create(self.state_dir)
        tls = MutualTLS(self.identity)
        if self.config.ring.enabled:
            yield self._start_ring()
        if self.config.resourcemanager.enabled:
            self.resource_manager = ResourceManagerRole(self.config, self.reactor, self._listen, tls)
            yield self.resource_manager.start(started_ms)
            if self.ring is not None:
                self._serve_rm_on_ring(self.ring, started_ms)
        if self.config.nodemanager.enabled:
            self._start_node_web(started_ms)
            self.node_manager = NodeManagerRole(self.config, self.reactor, self._listen)
            self.node_manager.start(self.addresses["nodemanager.webapp_address"])
            self._start_status_updater(tls, self.node_manager)
            if self.ring is not None:
                self._publish_capacity(self.ring)
        if self.ring is not None and self.config.ring.status_address:
            self._start_ring_status()
        (self.state_dir / READY_FILE).write_text(json.dumps(self.addresses, indent=2))
        log.info("Cortex node {name} ready: {addresses}", name=self.config.node.name, addresses=self.addresses)

    @defer.inlineCallbacks
    def _start_ring(self):  # type: ignore[no-untyped-def]
        """Listen on ``ring.address`` and begin joining (the node does not wait to be on the ring)."""
        ring_config = self.config.ring
        host, port = parse_address(ring_config.address, "ring.address")
        assert self.identity is not None
        run_in_thread, self._ring_files = thread_runner(self.reactor, name="ring-files")
        self._ring_files.start()
        self.ring = RingService(
            self.identity,
            ring_config.ring_config(),
            self.reactor,
            self.state_dir,
            listen_host=host,
            advertise_host=host,
            port=port,
            introducers=ring_config.introducers,
            run_blocking=run_in_thread,
        )
        try:
            yield self.ring.start()
        except Exception as e:
            raise NodeStartError(
                f"ring.address {ring_config.address} is not available ({e}); "
                f"change it in {self.config.source} or stop what uses it"
            ) from None
        self.addresses["ring.address"] = self.ring.me.address
        # Every member keeps (and so passes on) the capacity reports, until the member is gone.
        self.ring.register_section(CAPACITY_SECTION, self.node_directory.receive)

        def forget_report(event: MembershipEvent) -> None:
            if isinstance(event, (MemberDied, MemberLeft)):
                self.node_directory.forget(format_id(event.peer.node_id))

        self.ring.add_membership_listener(forget_report)
        log.info("ring member {ring_id} at {address}", ring_id=format_id(self.identity.ring_id), address=self.ring.me.address)

    def _serve_rm_on_ring(self, ring: RingService, started_ms: int) -> None:
        """Publish the RM's addresses in the ring, keep the capacity reports, and turn ring deaths into LOST nodes."""
        assert self.identity is not None and self.resource_manager is not None
        tracker = self.resource_manager.tracker
        assert tracker is not None  # the RM role has started
        record = ResourceManagerRecord(
            client_address=self.addresses["resourcemanager.address"],
            scheduler_address=self.addresses["resourcemanager.scheduler_address"],
            webapp_address=self.addresses["resourcemanager.webapp_address"],
            tracker_address=self.addresses["resourcemanager.tracker_address"],
            tracker_fingerprint=self.identity.fingerprint,
            started_ms=started_ms,
        )
        def membership_changed(event: MembershipEvent) -> None:
            if isinstance(event, (MemberDied, MemberLeft)):
                tracker.ring_member_died(event.peer.node_id)

        ring.add_membership_listener(membership_changed)
        republisher = Republisher(lambda: publish_resource_manager(ring, record), self.reactor)
        republisher.start()
        self._republishers.append(republisher)

    def _publish_capacity(self, ring: RingService) -> None:
        """Gossip this NodeManager's capacity report on the ring (now and every 30 s)."""
        assert self.identity is not None
        nm = self.config.nodemanager
        ring_id = format_id(self.identity.ring_id)
        report = CapacityReport(
            ring_id=ring_id,
            node_id=nm.address,
            http_address=self.addresses["nodemanager.webapp_address"],
            rack=nm.rack,
            memory_mb=nm.memory_mb,
            vcores=nm.vcores,
        )
        if self.resource_manager is not None:
            self.node_directory.receive_own(report)
        republisher = Republisher(lambda: ring.publish(CAPACITY_SECTION, ring_id, report.encode()), self.reactor)
        republisher.start()
        self._republishers.append(republisher)

    def _tracker_backoff(self) -> Backoff:
        """How long the updater waits between failed attempts.

        Found through the ring, the RM is usually missing only while the ring forms
        or the RM starts (seconds): retry at most every RING_RETRY_MAX_MS, so a node
        registers soon after the RM appears, not up to 30 s later.
        """
        if self.config.nodemanager.resourcemanager_tracker:
            return Backoff()
        return Backoff(max_ms=RING_RETRY_MAX_MS)

    def _locate_tracker(self) -> defer.Deferred[TrackerLocation]:
        """Where the RM's tracker is, from the ring's ResourceManager record."""
        assert self.ring is not None
        d = find_resource_manager(self.ring)
        return d.addCallback(lambda record: TrackerLocation(record.tracker_address, record.tracker_fingerprint))

    def _start_node_web(self, started_ms: int) -> None:
        nm = self.config.nodemanager
        host, _ = parse_address(nm.webapp_address, "nodemanager.webapp_address")
        info = NodeInfo(
            node_id=self.config.node.name or host,
            host=host,
            memory_mb=nm.memory_mb,
            vcores=nm.vcores,
            started_ms=started_ms,
            version=__version__,
        )
        site = build_nm_site(info, lambda: int(self.reactor.seconds() * 1000))
        if self.ring is not None:
            mount_ring(site.resource, RingResource(self._ring_view, self.reactor))
        self._listen("nodemanager.webapp_address", nm.webapp_address, site)
        if self.ring is not None and not self.config.ring.status_address:
            self.addresses["ring.status_address"] = self.addresses["nodemanager.webapp_address"]

    def _start_ring_status(self) -> None:
        """Serve /ws/v1/ring on ring.status_address (for nodes without a NodeManager web site)."""
        root = WebResource()
        mount_ring(root, RingResource(self._ring_view, self.reactor))
        site = Site(root)
        site.displayTracebacks = False
        self._listen("ring.status_address", self.config.ring.status_address, site)

    def _ring_view(self) -> RingView | None:
        """The ring view for /ws/v1/ring; None while the ring is not running."""
        if self.ring is None:
            return None
        try:
            return self.ring.view()
        except RingError:
            return None

    def _start_status_updater(self, tls: MutualTLS, node_manager: NodeManagerRole) -> None:
        """Report this node's capacity and containers to the RM's NodeTracker (NodeId = nodemanager.address);
        the RM's answers reach the NodeManager (its container-token key, containers and applications to clean up)."""
        nm = self.config.nodemanager
        host, port = parse_address(nm.address, "nodemanager.address")
        registration = NodeRegistration(
            node_id=NodeId(host, port),
            http_address=self.addresses["nodemanager.webapp_address"],
            rack=nm.rack,
            capability=Resource(nm.memory_mb, nm.vcores),
            heartbeat_interval_ms=nm.heartbeat_interval_ms,
            version=__version__,
        )
        if not nm.resourcemanager_tracker and self.ring is None:
            raise NodeStartError(
                f"the NodeManager has no RM to report to: set nodemanager.resourcemanager_tracker "
                f"or enable [ring] in {self.config.source}"
            )
        self.status_updater = NodeStatusUpdaterService(
            self.reactor,
            NodeStatusUpdater(registration, self._tracker_backoff(), random=random.Random().random),
            nm.resourcemanager_tracker,
            tls,
            KnownResourceManagers.in_state_dir(self.state_dir),
            health=node_manager.health,
            on_cleanup=node_manager.cleanup_containers,
            on_acknowledged=node_manager.acknowledged,
            on_cleanup_applications=node_manager.cleanup_applications,
            on_registered=node_manager.registered,
            locate_tracker=self._locate_tracker if not nm.resourcemanager_tracker else None,
        )
        self.status_updater.start()

    @defer.inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        for republisher in self._republishers:
            republisher.stop()
        self._republishers.clear()
        if self.status_updater is not None:
            yield self.status_updater.stop()
            self.status_updater = None
        if self.node_manager is not None:
            yield self.node_manager.stop()  # every container killed (bounded wait)
            self.node_manager = None
        for port in self.ports:
            yield port.stopListening()
        self.ports.clear()
        if self.resource_manager is not None:
            self.resource_manager.stop()
        if self.ring is not None:
            yield self.ring.stop(graceful=True)  # hand our records on, tell the neighbours, gossip LEFT
            self.ring = None
        if self._ring_files is not None:
            pool, self._ring_files = self._ring_files, None
            pool.stop()  # the last neighbour-log write has finished
        for name in (READY_FILE, PID_FILE):
            (self.state_dir / name).unlink(missing_ok=True)
        log.info("Cortex node {name} stopped", name=self.config.node.name)


def run_node(config: Config) -> int:
    """Run one daemon until SIGTERM/SIGINT; the exit status says whether it started."""
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    node = CortexNode(config, reactor)
    status = {"code": 0}

    def failed(failure: Any) -> None:
        if failure.check(NodeStartError):
            log.error("Cortex node cannot start: {why}", why=failure.getErrorMessage())
            print(f"cortex-rm: {failure.getErrorMessage()}", file=sys.stderr)
        else:
            log.failure("Cortex node failed to start", failure)
        status["code"] = 1
        reactor.stop()  # type: ignore[attr-defined]

    def started() -> None:
        d = node.start()
        d.addErrback(failed)

    reactor.callWhenRunning(started)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", node.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return status["code"]
