"""The composition root: configuration -> roles -> reactor.

``CortexNode`` decides which roles this daemon plays, builds each from its
configuration section with the reactor, the node's identity and the ring
injected, starts them in order and stops them in reverse; the roles wire their
own cores (``cortex_rm/roles/``).  Roles today:

* the ring member (``roles/ring_service.py``, ``[ring]``), started first: the node's
  place on the Chord ring, SWIM failure detection and the replicated key space,
  over mutual TLS with the node's identity (``<state_dir>/identity``); every
  member keeps the NodeManagers' capacity reports gossiped on it;
* the ResourceManager (``roles/resource_manager.py``, ``[resourcemanager]``),
  which publishes its addresses in the ring and marks LOST at once the node of a
  member the ring declares dead or left; with standbys (``[ring] resource_managers``
  names this node and others) it runs only while this node's journal leads, and the
  node is a standby otherwise (``roles/rm_ha.py``);
* the NodeManager (``roles/node_manager.py``, ``[nodemanager]``): its web site,
  its containers, its capacity report on the ring, and its reports to the RM.
* the witness's reports (``roles/uptime_reports.py``) on a node with both: what its ring
  member saw of its neighbours, signed and sent to the RM's uptime ledger.

On start the node locks its state directory (``<state_dir>/lock``: a second daemon on
it is refused, naming the holder's pid), then writes ``cortex-rm.pid`` and, once every port listens,
``ready.json`` (the bound addresses) into its state directory; both are removed on
a clean stop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import cast

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import (
    FilteringLogObserver, Logger, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource as WebResource
from twisted.web.server import Site as WebSite

from cortex_rm.config import Config
from cortex_rm.container.id_ranges import IdRangeError
from cortex_rm.container.ofd_locks import StateDirInUseError, StateDirLock
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.roles.container_members import ring_view_of
from cortex_rm.roles.events_role import EventsRole
from cortex_rm.roles.graceful_leave import LeaveRequest, install_stop_signals
from cortex_rm.roles.ledger_keeper import LedgerSetup
from cortex_rm.roles.ledger_mirror import LedgerMirrorRole, keep_ledger_heads
from cortex_rm.roles.node_caps import NodeCaps
from cortex_rm.roles.node_manager import NodeManagerRole
from cortex_rm.roles.ports import Listen
from cortex_rm.roles.resource_manager import ResourceManagerRole
from cortex_rm.roles.rm_ha import RmHighAvailability
from cortex_rm.roles.rm_stores import RmStores
from cortex_rm.roles.ring_records import CapacityReports, keep_capacity_reports
from cortex_rm.roles.rm_directory import DIRECTORY_PATH, RmDirectory, configured_record
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.threads import thread_runner
from cortex_rm.roles.uptime_reports import UptimeReports
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn_api.http_limits import API_LIMITS, LimitedSite
from cortex_rm.yarn_api.json_status import JsonStatusResource, mount_under
from cortex_rm.yarn_api.mirror_rest import mount_beside_ring
from cortex_rm.yarn_api.ring_rest import RingResource, mount_ring

log = Logger()

# Connections the kernel queues for a port while the reactor is busy (twisted's default is 50):
# when a burst fills the queue, a client's SYN is dropped and it waits a second to retry
# (bench/http_hostile.py saw an honest request take 1.02 s while 1,000 slow connections arrived).
LISTEN_BACKLOG = 1024


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""


PID_FILE = "cortex-rm.pid"
READY_FILE = "ready.json"


class CortexNode:
    """One daemon and the roles its configuration gives it."""

    def __init__(self, config: Config, reactor: INodeReactor) -> None:
        self.config = config
        self.reactor = reactor
        self.ports: list[IListeningPort] = []
        self.addresses: dict[str, str] = {}
        self.identity: NodeIdentity | None = None
        self.ring: RingService | None = None
        self.capacities: CapacityReports | None = None  # the NodeManagers' capacity reports, as gossiped
        self.resource_manager: ResourceManagerRole | None = None  # without standbys
        self.rm_ha: RmHighAvailability | None = None  # an RM-eligible node with standbys: active or standby
        self.node_manager: NodeManagerRole | None = None
        self.caps: NodeCaps | None = None  # the NodeManager's caps in force (roles/node_caps.py)
        self.ledger_mirror: LedgerMirrorRole | None = None
        self._ring_files: ThreadPool | None = None  # the thread the ring's files are written on
        self._ring_run: Runner | None = None  # ... as a runner
        self.uptime_reports: UptimeReports | None = None
        self.events: EventsRole | None = None
        self.rm_directory: RmDirectory | None = None  # where the eligible RMs are (with [ring] resource_managers)
        self.state_lock: StateDirLock | None = None
        self.leave = LeaveRequest()  # SIGTERM: the stop begins with a graceful leave (graceful_leave.py)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def _listen(self, name: str, address: HostPort, factory: IProtocolFactory) -> HostPort:
        """Listen on a configured address; the bound address (recorded for ``ready.json``)."""
        try:
            listening = self.reactor.listenTCP(address.port, factory, backlog=LISTEN_BACKLOG, interface=address.host)  # type: ignore[arg-type]  # IReactorTCP names ServerFactory; any IProtocolFactory listens (Site, TLS wrappers)
        except CannotListenError as e:
            raise NodeStartError(
                f"{name} {address} is not available ({e.socketError}); "
                f"change it in {self.config.source} or stop what uses it"
            ) from None
        self.ports.append(listening)
        host = listening.getHost()
        assert isinstance(host, (IPv4Address, IPv6Address))  # listenTCP's ports are TCP addresses
        bound = address.with_port(host.port)
        self.addresses[name] = str(bound)
        log.info("{name} listening on {address}", name=name, address=str(bound))
        return bound

    def start(self) -> defer.Deferred[None]:
        """Start every configured role; fires once all listen (NodeStartError says what to change)."""
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The state dir holds the node's private key, the RM's database (its token master
        # keys) and the admin's credential: only this daemon's user may enter it.
        self.state_dir.chmod(0o700)
        # One daemon per state dir: a second would overwrite the first's files and take its
        # running containers for a dead run's leftovers (``ofd_locks.py``).  Held until the process ends.
        try:
            self.state_lock = StateDirLock.take(self.state_dir)
        except StateDirInUseError as e:
            raise NodeStartError(str(e)) from None
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        started_ms = int(self.reactor.seconds() * 1000)
        # The node key: read, or made (in a thread: a key that solves the ring's key puzzle takes
        # ~2**key_bits tries, seconds) at the first start, or when the stored one fails the puzzle.
        key_bits = self.config.ring.key_bits if self.config.ring.enabled else 0
        self.identity = await deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), NodeIdentity.load_or_create, self.state_dir, key_bits=key_bits
        )
        tls = MutualTLS(self.identity)
        config = self.config
        if config.ring.enabled:
            self.ring = await self._start_ring(self.identity)
            self.capacities = keep_capacity_reports(self.ring)
        if config.resourcemanager.enabled and self._has_standbys():
            assert self.ring is not None and self.identity is not None
            try:
                own = configured_record(config.resourcemanager, self.identity.fingerprint, config.source)
            except ValueError as e:
                raise NodeStartError(str(e)) from None
            eligible = [int(ring_id, 16) for ring_id in config.ring.resource_managers]
            self.rm_directory = RmDirectory(self.ring, eligible, self.reactor)
            self.rm_ha = RmHighAvailability(
                self.ring, eligible, own, state_dir=self.state_dir, state_store_url=config.state_store_url,
                reactor=self.reactor, make_role=lambda stores, listen: self._rm_role(tls, listen, stores),
                bind=self._bind, unbind=lambda name, port: defer.ensureDeferred(self._unbind(name, port)),
                webapp_of=self.rm_directory.webapp_of, on_active=self._rm_active, ledger_url=config.ledger_url,
                journal_log_tail=config.resourcemanager.journal_log_tail,
            )  # fmt: skip
            await self.rm_ha.start()
        elif config.resourcemanager.enabled:
            self.resource_manager = self._rm_role(tls, self._listen)
            await self.resource_manager.start(started_ms)
        if config.nodemanager.enabled:
            if config.nodemanager.resourcemanager_tracker is None and self.ring is None:
                raise NodeStartError(
                    f"the NodeManager has no RM to report to: set nodemanager.resourcemanager_tracker "
                    f"or enable [ring] in {config.source}"
                )
            self.node_manager = NodeManagerRole(
                config.nodemanager,
                config.nodemanager_dirs,
                state_dir=self.state_dir,
                node_name=config.node.name,
                ipc_max_data_length=config.resourcemanager.ipc_max_data_length,
                reactor=self.reactor,
                listen=self._listen,
                tls=tls,
                ring=self.ring,
                capacities=self.capacities,
            )
            try:
                self.node_manager.start(started_ms)
            except IdRangeError as e:
                raise NodeStartError(f"the NodeManager cannot start: {e} (in {config.source})") from None
            self.caps = NodeCaps.attach(self.node_manager, config.nodemanager, config.source, config.events)  # (SIGHUP)
        if self.ring is not None and self.node_manager is not None:
            await self._start_uptime_reports(self.ring, self.identity, self.node_manager)
        if self.ring is not None:
            self._serve_ring_view(self.ring)
            self._serve_rm_directory(self.ring)
            await self._start_ledger_mirror(self.ring, self.identity)
            await self._start_events(self.ring, self.identity)
        (self.state_dir / READY_FILE).write_text(json.dumps(self.addresses, indent=2))
        log.info("Cortex node {name} ready: {addresses}", name=config.node.name, addresses=self.addresses)

    def _has_standbys(self) -> bool:
        """Whether this RM-eligible node shares the RM with others (``[ring] resource_managers`` names it and more)."""
        assert self.identity is not None
        listed = {int(ring_id, 16) for ring_id in self.config.ring.resource_managers}
        return self.ring is not None and self.identity.ring_id in listed and len(listed) > 1

    def _rm_role(self, tls: MutualTLS, listen: Listen, stores: RmStores | None = None) -> ResourceManagerRole:
        config = self.config
        return ResourceManagerRole(
            config.resourcemanager, config.scheduler, state_store_url=config.state_store_url, reactor=self.reactor,
            listen=listen, tls=tls, state_dir=config.state_dir, ring=self.ring, stores=stores,
            accounting=LedgerSetup.of(config.accounting, config.ledger_url, config.ring.ring_config()),
        )  # fmt: skip

    def _bind(self, name: str, address: HostPort, factory: IProtocolFactory) -> tuple[HostPort, IListeningPort]:
        bound = self._listen(name, address, factory)
        return bound, self.ports[-1]

    async def _unbind(self, name: str, port: IListeningPort) -> None:
        await defer.maybeDeferred(port.stopListening)
        if port in self.ports:  # (the node's stop closed them all already)
            self.ports.remove(port)
        self.addresses.pop(name, None)
        self._write_ready()

    def _rm_active(self, role: ResourceManagerRole) -> None:
        """This node became the active RM: its events' resources on the RM's site, its addresses in ``ready.json``."""
        if self.events is not None:
            self._mount_events_on_rm(self.events, role)
        self._write_ready()

    def _write_ready(self) -> None:
        if self.state_lock is not None and (self.state_dir / READY_FILE).exists():
            (self.state_dir / READY_FILE).write_text(json.dumps(self.addresses, indent=2))

    def _mount_events_on_rm(self, events: EventsRole, rm: ResourceManagerRole) -> None:
        if rm.events_functions is not None and rm.auth is not None:
            web = self.addresses["resourcemanager.webapp_address"]
            rm.events_gateway = events.mount_on_rm(rm.events_web, rm.events_functions, rm.auth, web)

    async def _start_uptime_reports(self, ring: RingService, identity: NodeIdentity, nm: NodeManagerRole) -> None:
        """This node's reports, as a witness, of the neighbours it probes (to the RM's ledger, over the tracker)."""
        assert self._ring_run is not None
        self.uptime_reports = UptimeReports(
            ring.take_attestations, identity.key, nm.node_id, nm.tracker_client, self.reactor, self.state_dir,
            self._ring_run, interval_s=ring.config.attestation_interval,
        )  # fmt: skip
        await self.uptime_reports.start()

    async def _start_ring(self, identity: NodeIdentity) -> RingService:
        """Listen on ``ring.address`` and begin joining (the node does not wait to be on the ring)."""
        ring_config = self.config.ring
        run_in_thread, self._ring_files = thread_runner(self.reactor, name="ring-files")
        self._ring_run = run_in_thread
        self._ring_files.start()
        settings = ring_config.ring_config()
        if self.config.resourcemanager.enabled and not settings.resource_managers:
            # this node runs the RM: it at least may write the RM's record (nodes that find the
            # RM through the ring must name it in their [ring] resource_managers)
            settings = dataclasses.replace(settings, resource_managers=frozenset({identity.ring_id}))
        elif self.config.resourcemanager.enabled and identity.ring_id not in settings.resource_managers:
            log.error(
                "this node runs the ResourceManager, but its ring id {ring_id} is not in [ring] resource_managers "
                "({source}): no member will keep the RM's record it writes (was its key replaced?)",
                ring_id=identity.ring_id_hex, source=str(self.config.source),
            )  # fmt: skip
        ring = RingService(
            identity,
            settings,
            self.reactor,
            self.state_dir,
            listen_host=ring_config.address.host,
            advertise_host=ring_config.address.host,
            port=ring_config.address.port,
            introducers=[str(i) for i in ring_config.introducers],
            run_blocking=run_in_thread,
        )
        try:
            await ring.start()
        except Exception as e:
            raise NodeStartError(
                f"ring.address {ring_config.address} is not available ({e}); "
                f"change it in {self.config.source} or stop what uses it"
            ) from None
        self.addresses["ring.address"] = ring.me.address
        log.info("ring member {ring_id} at {address}", ring_id=format_id(identity.ring_id), address=ring.me.address)
        return ring

    def _serve_ring_view(self, ring: RingService) -> None:
        """GET /ws/v1/ring: on ``ring.status_address`` if configured, else on the NodeManager's web site."""
        status_address = self.config.ring.status_address
        if status_address is None:
            if "nodemanager.webapp_address" in self.addresses:
                self.addresses["ring.status_address"] = self.addresses["nodemanager.webapp_address"]
            return
        root = WebResource()
        mount_ring(root, RingResource(ring_view_of(ring), self.reactor))
        site = LimitedSite(root, limits=API_LIMITS, clock=self.reactor, name="ring status web")
        self._listen("ring.status_address", status_address, site)

    async def _start_ledger_mirror(self, ring: RingService, identity: NodeIdentity) -> None:
        """Pass the mirrors' gossiped heads on; on a mirroring node (``[accounting] mirror``) keep a copy of the
        RM's ledger, its status at ``/ws/v1/ledger-mirror`` wherever ``/ws/v1/ring`` is served."""
        heads = keep_ledger_heads(ring)
        accounting, rms = self.config.accounting, ring.config.resource_managers
        if not accounting.mirrors(identity.ring_id, rms, self.config.resourcemanager.enabled):
            return
        self.ledger_mirror = LedgerMirrorRole(
            self.state_dir, self.reactor, ring, heads, resource_managers=rms, interval_s=accounting.mirror_interval_s
        )
        await self.ledger_mirror.start()
        mount_beside_ring([getattr(port, "factory", None) for port in self.ports], self.ledger_mirror.status)

    async def _start_events(self, ring: RingService, identity: NodeIdentity) -> None:
        """Triggers taken here, activations run here (with a NodeManager), and ``/ws/v1/cortex/events`` on the
        NodeManager's web site and the RM's."""
        nm = self.node_manager
        assert self._ring_run is not None
        settings = self.config.events
        sandboxes = await nm.function_sandboxes(settings) if nm is not None and settings.execute else None
        self.events = EventsRole(ring, identity, self.reactor, self.capacities, nm, settings=settings,
                                 state_dir=self.state_dir, run=self._ring_run, sandboxes=sandboxes)  # fmt: skip
        await self.events.start()
        rm = self.resource_manager or (self.rm_ha.role if self.rm_ha is not None else None)
        if rm is not None:
            self._mount_events_on_rm(self.events, rm)
        for root in self._node_sites(b"node"):
            self.events.mount_on_node(root, self.addresses["nodemanager.webapp_address"])

    def _node_sites(self, *serving: bytes) -> list[WebResource]:
        """The roots of this node's own web sites that serve ``/ws/v1/<one of serving>`` (not the RM's)."""
        roots = []
        for port in self.ports:
            site = getattr(port, "factory", None)
            ws = site.resource.getStaticEntity(b"ws") if isinstance(site, WebSite) else None
            v1 = ws.getStaticEntity(b"v1") if isinstance(ws, WebResource) and not ws.isLeaf else None
            if isinstance(site, WebSite) and isinstance(v1, WebResource) and any(v1.getStaticEntity(s) for s in serving):
                roots.append(site.resource)
        return roots

    def _serve_rm_directory(self, ring: RingService) -> None:
        """``/ws/v1/cortex/resourcemanagers`` on this node's sites: every eligible RM, and which is active."""
        eligible = [int(ring_id, 16) for ring_id in self.config.ring.resource_managers]
        if not eligible:
            return
        if self.rm_directory is None:  # (an eligible node with standbys made it first)
            self.rm_directory = RmDirectory(ring, eligible, self.reactor)
        directory = self.rm_directory
        directory.start()
        resource = JsonStatusResource(directory.document, DIRECTORY_PATH, "no ResourceManager found in the ring yet")
        for root in self._node_sites(b"node", b"ring"):
            mount_under(root, (b"ws", b"v1", b"cortex"), b"resourcemanagers", resource)

    def stop(self) -> defer.Deferred[None]:
        """Stop every role in reverse order; fires when all have stopped."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        await self.leave.run(self.reactor, self.node_manager, self.state_dir)  # (ring, file system, RM link: still up)
        if self.events is not None:
            await self.events.stop()
            self.events = None
        if self.uptime_reports is not None:
            await self.uptime_reports.stop()  # the last attestations, while the tracker connection is up
            self.uptime_reports = None
        if self.node_manager is not None:
            await self.node_manager.stop()  # reports stop, every container killed (bounded wait)
            self.node_manager = None
        for port in self.ports:
            await defer.maybeDeferred(port.stopListening)
        self.ports.clear()
        if self.resource_manager is not None:
            self.resource_manager.stop()
        if self.rm_ha is not None:
            await self.rm_ha.stop()
            self.rm_ha = None
        if self.rm_directory is not None:
            self.rm_directory.stop()
            self.rm_directory = None
        if self.ledger_mirror is not None:
            self.ledger_mirror.stop()
            self.ledger_mirror = None
        if self.ring is not None:
            await self.ring.stop(graceful=True)  # hand our records on, tell the neighbours, gossip LEFT
            self.ring = None
        if self._ring_files is not None:
            pool, self._ring_files = self._ring_files, None
            pool.stop()  # the last neighbour-log write has finished
        if self.state_lock is not None:  # (else they are another daemon's, which holds the dir)
            for name in (READY_FILE, PID_FILE):
                (self.state_dir / name).unlink(missing_ok=True)
            self.state_lock.release()
            self.state_lock = None
        log.info("Cortex node {name} stopped", name=self.config.node.name)


def run_node(config: Config) -> int:
    """Run one daemon until SIGTERM (a graceful leave first) or SIGINT; the exit status says whether it started."""
    from twisted.internet import reactor as global_reactor

    # The default reactor provides threads too; its declared type names only the common interfaces.
    reactor = cast(INodeReactor, global_reactor)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.node.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stdout), [predicate])], redirectStandardIO=False
    )
    node = CortexNode(config, reactor)
    status = {"code": 0}

    def failed(failure: Failure) -> None:
        if isinstance(failure.value, NodeStartError):
            log.error("Cortex node cannot start: {why}", why=failure.getErrorMessage())
            print(f"cortex-rm: {failure.getErrorMessage()}", file=sys.stderr)
        else:
            log.failure("Cortex node failed to start", failure)
        status["code"] = 1
        reactor.stop()

    def started() -> None:
        node.start().addErrback(failed)

    reactor.callWhenRunning(started)
    reactor.callWhenRunning(install_stop_signals, reactor, node.leave)
    reactor.addSystemEventTrigger("before", "shutdown", node.stop)
    reactor.run()
    return status["code"]
