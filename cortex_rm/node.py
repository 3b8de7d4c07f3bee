"""The composition root: configuration -> services -> reactor.

``CortexNode`` builds every role this daemon plays from its configuration, with the
reactor, clock and storage injected, and starts them; nothing else wires services
together.  Roles today: the ResourceManager (client IPC port, REST API, state
store, NodeTracker) and the NodeManager's web endpoint and status updater, which
reports this node to the RM's NodeTracker over mutual TLS with the node's
identity (``<state_dir>/identity``); the ring and the witness join here as they
are built.

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
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from cortex_rm import __version__
from cortex_rm.allocator.app_table import ApplicationTable, SchedulerLimits
from cortex_rm.allocator.ids import NodeId
from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.resources import Resource
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.state_store import SqlStateStore, thread_runner
from cortex_rm.config import Config, parse_address
from cortex_rm.container.status_updater import NodeStatusUpdater, NodeStatusUpdaterService
from cortex_rm.dht.identity import KnownResourceManagers, NodeIdentity
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_messages import NodeRegistration
from cortex_rm.internal.tracker_server import ExpiryMonitor, tracker_server_factory
from cortex_rm.yarn_api.client_service import CLIENT_PROTOCOL, UNSUPPORTED_CLIENT_METHODS, ApplicationClientService
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.nm_rest import NodeInfo, build_nm_site
from cortex_rm.yarn_api.proto import applicationclient_protocol_pb2
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.rpc_protocol import RpcProtocol
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.tokens import MasterKey

log = Logger()

PID_FILE = "cortex-rm.pid"
READY_FILE = "ready.json"


def client_protocol(service: ApplicationClientService) -> RpcProtocol:
    """ApplicationClientProtocol with our handlers; Hadoop's other methods answered by name."""
    protocol = RpcProtocol.from_service(
        CLIENT_PROTOCOL,
        applicationclient_protocol_pb2.DESCRIPTOR.services_by_name["ApplicationClientProtocolService"],
        service.handlers(),
    )
    return RpcProtocol(
        protocol.name, protocol.methods, protocol.unsupported | UNSUPPORTED_CLIENT_METHODS, protocol.version
    )


class CortexNode:
    """One daemon and the roles its configuration gives it."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.addresses: dict[str, str] = {}
        self.rm: RMContext | None = None
        self._store: SqlStateStore | None = None
        self._pool: Any = None
        self.identity: NodeIdentity | None = None
        self.tracker: NodeTracker | None = None
        self.container_token_key: MasterKey | None = None
        self._expiry: ExpiryMonitor | None = None
        self.status_updater: NodeStatusUpdaterService | None = None

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def _listen(self, name: str, address: str, factory: Any) -> None:
        host, port = parse_address(address, name)
        listening = self.reactor.listenTCP(port, factory, interface=host)
        self.ports.append(listening)
        bound = listening.getHost()
        self.addresses[name] = f"{host}:{bound.port}"
        log.info("{name} listening on {address}", name=name, address=self.addresses[name])

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        started_ms = int(self.reactor.seconds() * 1000)
        self.identity = NodeIdentity.load_or_create(self.state_dir)
        tls = MutualTLS(self.identity)
        if self.config.resourcemanager.enabled:
            yield self._start_resource_manager(started_ms)
            self._start_node_tracker(tls, started_ms)
        if self.config.nodemanager.enabled:
            self._start_node_web(started_ms)
            self._start_status_updater(tls)
        (self.state_dir / READY_FILE).write_text(json.dumps(self.addresses, indent=2))
        log.info("Cortex node {name} ready: {addresses}", name=self.config.node.name, addresses=self.addresses)

    @defer.inlineCallbacks
    def _start_resource_manager(self, started_ms: int):  # type: ignore[no-untyped-def]
        rm_conf = self.config.resourcemanager
        sched = self.config.scheduler
        run, self._pool = thread_runner(self.reactor)
        self._pool.start()
        self._store = SqlStateStore(self.config.state_store_url, run)
        limits = SchedulerLimits(
            maximum_allocation=Resource(sched.maximum_allocation_mb, sched.maximum_allocation_vcores),
            max_app_attempts=rm_conf.max_app_attempts,
            max_priority=rm_conf.max_application_priority,
            max_completed_applications=rm_conf.max_completed_applications,
        )
        apps = yield ApplicationTable.recover(self.reactor, self._store, QueueTree(sched.queue_tree_spec()), limits)
        self.rm = RMContext(self.reactor, apps, NodeTable(), started_ms)
        service = ApplicationClientService(self.rm)
        factory = IpcServerFactory(
            [client_protocol(service)],
            SaslServer.simple_only(),
            max_data_length=rm_conf.ipc_max_data_length,
        )
        self._listen("resourcemanager.address", rm_conf.address, factory)
        self._listen("resourcemanager.webapp_address", rm_conf.webapp_address, build_rest_site(self.rm, version=__version__))

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
        self._listen("nodemanager.webapp_address", nm.webapp_address, site)

    def _start_node_tracker(self, tls: MutualTLS, started_ms: int) -> None:
        """The RM's NodeTracker (Thrift over mutual TLS) and its expiry check."""
        assert self.rm is not None
        rm_conf = self.config.resourcemanager
        # The key the RM signs ContainerTokens with, handed to every registering node so it
        # can check startContainers; the RM's key store (with the AM service) will own it.
        self.container_token_key = MasterKey.generate(random.SystemRandom().randrange(1, 2**31))
        self.tracker = NodeTracker(
            self.rm.nodes,
            self.reactor,
            nm_expiry_ms=rm_conf.nm_expiry_ms,
            rm_identifier=started_ms,
            container_token_master_key=self.container_token_key,
        )
        factory = tracker_server_factory(self.tracker, tls, self.reactor)
        self._listen("resourcemanager.tracker_address", rm_conf.tracker_address, factory)
        self._expiry = ExpiryMonitor(self.tracker, self.reactor)
        self._expiry.start()

    def _start_status_updater(self, tls: MutualTLS) -> None:
        """Report this node's configured capacity to the RM's NodeTracker (NodeId = nodemanager.address)."""
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
        self.status_updater = NodeStatusUpdaterService(
            self.reactor,
            NodeStatusUpdater(registration, random=random.Random().random),
            nm.resourcemanager_tracker,
            tls,
            KnownResourceManagers.in_state_dir(self.state_dir),
        )
        self.status_updater.start()

    @defer.inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        if self.status_updater is not None:
            yield self.status_updater.stop()
            self.status_updater = None
        if self._expiry is not None:
            self._expiry.stop()
            self._expiry = None
        for port in self.ports:
            yield port.stopListening()
        self.ports.clear()
        if self._pool is not None:
            self._pool.stop()  # waits for queued state-store writes to finish
            self._pool = None
        if self._store is not None:
            self._store.close()
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
