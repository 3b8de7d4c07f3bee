"""The ResourceManager role of a node: its state, decision cores and ports, wired.

Built by the composition root (``node.py``) when ``[resourcemanager] enabled``:

* the state store (SQLAlchemy on its own thread), the token master keys, and the scheduling
  service with the application table it owns and the capacity scheduler
  (``allocator/cluster_scheduling.py``), which launches AM containers on nodes over Hadoop IPC;
* users' credentials (``allocator/user_credentials.py``, ``roles/user_admin.py``): the
  admin's at ``<state_dir>/admin.token``, checked on every port below;
* ``resourcemanager.address``: ApplicationClientProtocol (SASL TOKEN with a user's RM delegation token;
  SIMPLE callers are anonymous);
* ``resourcemanager.scheduler_address``: ApplicationMasterProtocol, where an AM must authenticate with
  its AMRMToken (DIGEST-MD5) — that is how the RM knows which attempt calls;
* ``resourcemanager.webapp_address``: the REST API, with the function registry under
  ``/ws/v1/cortex/events/functions`` (``roles/event_registry.py``: its table in the state store's
  database, its records in the ring) and the other events' resources that ``events_web`` holds;
* ``resourcemanager.tracker_address``: the NodeTracker, where nodes register and report (Thrift over
  mutual TLS; a heartbeat's new capability resizes the node), with its expiry check, and fetch
  functions' code and check users' tokens;
* on the ring (when the node is a ring member): the RM's record under ``cortex:resourcemanager``
  (republished every 30 s), and a ring death or departure of a node's member turns that node LOST at once.
"""

from __future__ import annotations

import getpass
import random
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cortex_rm import __version__
from cortex_rm.allocator.app_ids import load_stored_state
from cortex_rm.allocator.app_access import AppAccess
from cortex_rm.allocator.app_model import SchedulerLimits
from cortex_rm.allocator.cluster_scheduling import ClusterScheduling, SchedulingTimers
from cortex_rm.allocator.master_keys import RMKeys
from cortex_rm.allocator.node_labels import AMNodeClass
from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.errors import UnknownApplication
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.fs.block_map import BlockMap
from cortex_rm.fs.model import DEFAULT_SUPERGROUP
from cortex_rm.fs.name_node import NameNode, fresh_or_recovered
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.allocator.user_credentials import UserCredentials
from cortex_rm.config import ResourceManagerSection, SchedulerSection
from cortex_rm.dht.member_table import MemberDied, MemberLeft, MembershipEvent
from cortex_rm.events.activations import Activation
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_server import ExpiryMonitor, FileSystemServices, tracker_server_factory
from cortex_rm.roles.ledger_keeper import LedgerKeeper, LedgerSetup, live_ring_members
from cortex_rm.roles.event_registry import EventRegistry, RegistrationRecords
from cortex_rm.roles.ports import Listen
from cortex_rm.roles.ring_records import Republisher, ResourceManagerRecord, publish_resource_manager
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.rm_node_events import NodeEvents
from cortex_rm.roles.rm_stores import RmStores, sql_stores
from cortex_rm.roles.rm_log_retention import start_log_retention
from cortex_rm.roles.threads import thread_runner
from cortex_rm.roles.user_admin import ADMIN_TOKEN_FILE, RMUserAdmin, start_sweeps
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.errors import MalformedId, YarnError
from cortex_rm.yarn.ids import ApplicationId, NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.am_launcher import AMLauncher
from cortex_rm.yarn_api.am_service import ApplicationMasterService, am_protocol
from cortex_rm.yarn_api.event_registry_rest import EventsResource, FunctionsResource, mount_registry
from cortex_rm.yarn_api.event_rest import Gateway
from cortex_rm.yarn_api.client_service import ApplicationClientService, client_protocol
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.ledger_rest import LedgerWebServices
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.tokens import parse_amrm_identifier, read_container_identifier
from cortex_rm.yarn_api.nm_viewers import view_ticket
from cortex_rm.yarn_api.user_auth import UserAuthenticator
from cortex_rm.yarn_api.webhdfs.namenode_resource import NameNodeResource

log = Logger()


class ResourceManagerRole:
    """Starts and stops everything the RM role needs (see the module docstring)."""

    def __init__(
        self,
        section: ResourceManagerSection,
        scheduler: SchedulerSection,
        *,
        state_store_url: str,
        reactor: INodeReactor,
        listen: Listen,
        tls: MutualTLS,
        state_dir: Path,
        ring: RingService | None = None,
        accounting: LedgerSetup | None = None,
        stores: RmStores | None = None,
    ) -> None:
        self.section = section
        self.scheduler_section = scheduler
        self.state_store_url = state_store_url
        self.reactor = reactor
        self._listen = listen
        self._tls = tls
        self._ring = ring
        self._accounting = accounting
        self.ledger: LedgerKeeper | None = None
        self.static_nodes: frozenset[int] = frozenset()  # ring ids the ledger classes static
        self.state_dir = state_dir
        self._token_sweeps: LoopingCall | None = None
        self.rm: RMContext | None = None
        self.keys: RMKeys | None = None
        self.tracker: NodeTracker | None = None
        self.scheduling: ClusterScheduling | None = None
        self._stores = stores  # given: the node keeps them (rm_ha.py); else opened at start, closed at stop
        self._owns_stores = stores is None
        self._pool: ThreadPool | None = None
        self._expiry: ExpiryMonitor | None = None
        self._log_retention: LoopingCall | None = None
        self._republisher: Republisher | None = None
        self.name_node: NameNode | None = None
        self.events: EventRegistry | None = None  # the function registry
        self.events_web = EventsResource()  # /ws/v1/cortex/events on the web port: the events' resources
        self.events_functions: FunctionsResource | None = None
        self.events_gateway: Gateway | None = None  # this node's, as events_role.mount_on_rm returns it
        self.auth: UserAuthenticator | None = None

    def _now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def _activations(self, user: str, limit: int) -> list[Activation] | None:
        """The status page's: ``user``'s activations this node's gateway can read (None before it has one)."""
        return None if self.events_gateway is None else self.events_gateway.readable(user, None, limit)

    def start(self, started_ms: int) -> defer.Deferred[None]:
        """Recover the state, listen on the four ports, and (on the ring) publish the RM's record."""
        return defer.ensureDeferred(self._start(started_ms))

    async def _start(self, started_ms: int) -> None:
        conf, sched = self.section, self.scheduler_section
        run, self._pool = thread_runner(self.reactor)
        self._pool.start()
        if self._stores is None:
            self._stores = sql_stores(self.state_store_url, run)
        store = self._stores.state
        maximum = Resource(sched.maximum_allocation_mb, sched.maximum_allocation_vcores)
        limits = SchedulerLimits(
            maximum_allocation=maximum,
            max_app_attempts=conf.max_app_attempts,
            max_priority=conf.max_application_priority,
            max_completed_applications=conf.max_completed_applications,
        )
        stored = await load_stored_state(self.reactor, store)  # read once, for keys, applications and credentials
        self.keys = keys = await RMKeys.recover(store, stored=stored)
        nodes = NodeTable()
        scheduler = CapacityScheduler(
            QueueTree(sched.queue_tree_spec()),
            nodes,
            self.reactor,
            SchedulerConfig(
                maximum_allocation=maximum,
                minimum_allocation=Resource(min(1024, maximum.memory_mb), 1),
                node_locality_delay_ms=sched.node_locality_delay_ms,
                rack_locality_delay_ms=sched.rack_locality_delay_ms,
                max_am_share=sched.max_am_share,
                am_node_class=AMNodeClass(conf.am_node_class),
                am_static_wait_ms=conf.am_static_wait_s * 1000,
                am_blacklisting=conf.am_blacklisting_enabled,
                am_blacklist_disable_threshold=conf.am_blacklisting_disable_failure_threshold,
            ),
        )
        # what AMs find in their AMRMToken's service: the configured scheduler address
        launcher = AMLauncher(self.reactor, keys, str(conf.scheduler_address), started_ms, self._now_ms)
        self.scheduling = scheduling = await ClusterScheduling.recover(
            self.reactor,
            store,
            limits,
            scheduler,
            launcher.launch,
            SchedulingTimers(am_expiry_ms=conf.am_expiry_ms),
            stored,
        )
        self.rm = RMContext(
            self.reactor,
            scheduling.table,
            nodes,
            started_ms,
            usage_source=scheduling.usage_of,
            container_source=scheduling.containers_of,
        )
        self.name_node = name_node = await self._start_name_node(keys, self._stores)
        credentials = UserCredentials(
            keys.delegation, store, stored, self._now_ms, conf.credential_lifetime_s * 1000,
            reserved_names=frozenset({DEFAULT_SUPERGROUP}),
            renew_interval_ms=conf.credential_renew_interval_s * 1000,
        )
        credentials.application_running = self._app_running
        auth = UserAuthenticator(credentials, conf.anonymous_access)
        access = AppAccess([name_node.namespace.superuser], scheduling.table.queues)
        admin = RMUserAdmin(auth)  # its tokens' services: the ports, once bound below
        node_events = NodeEvents(scheduling, name_node)
        self.tracker = NodeTracker(
            nodes,
            self.reactor,
            nm_expiry_ms=conf.nm_expiry_ms,
            rm_identifier=started_ms,
            container_token_master_key=keys.container, removes_completed_containers=True,
            listener=node_events, leave_listener=node_events,
        )
        ledger = await self._start_ledger()
        self.events = await self._start_event_registry(name_node, auth, self._stores)
        self.auth = auth  # the events' other resources check callers with it too
        self.events_functions = mount_registry(self.events_web, self.events, auth)  # /ws/v1/cortex/events/functions
        site = build_rest_site(
            self.rm,
            version=__version__,
            children={b"webhdfs": NameNodeResource(name_node, auth)},
            auth=auth,
            access=access,
            admin=admin,
            view_tickets=lambda app, user, node: view_ticket(name_node.key, app, user, node, self._now_ms()),
            ledger=None if ledger is None else LedgerWebServices(ledger, self.tracker.nodes_by_ring_id),
            events=self.events_web,
            event_functions=self.events.owned,
            event_activations=self._activations,
        )
        bound = {
            "address": self._listen("resourcemanager.address", conf.address, self._client_port(self.rm, auth, access)),
            "scheduler_address": self._listen(
                "resourcemanager.scheduler_address",
                conf.scheduler_address,
                self._scheduler_port(ApplicationMasterService(scheduling, keys.container, started_ms, self._now_ms, node_events.updates)),
            ),
            "webapp_address": self._listen("resourcemanager.webapp_address", conf.webapp_address, site),
        }
        admin.rm_service, admin.fs_service = str(bound["address"]), str(bound["webapp_address"])
        assert site.rm_proofs is not None  # (with auth) what /ws/v1/cortex/rm-proof proves: the addresses bound
        site.rm_proofs.claim(bound["webapp_address"], bound["address"], bound["scheduler_address"])
        admin_file, superuser = self.state_dir / ADMIN_TOKEN_FILE, name_node.namespace.superuser
        await admin.ensure_admin_credential(admin_file, superuser, run)
        self._token_sweeps = start_sweeps(
            credentials, self._app_running, self.reactor,
            keep_admin=lambda: defer.ensureDeferred(admin.ensure_admin_credential(admin_file, superuser, run)),
        )
        bound["tracker_address"] = self._listen(
            "resourcemanager.tracker_address",
            conf.tracker_address,
            tracker_server_factory(
                self.tracker,
                self._tls,
                self.reactor,
                FileSystemServices(
                    name_node, read_container_identifier, self._app_owner, conf.runtime_image,
                    app_network=self._app_network, submit_attestations=None if ledger is None else ledger.submit,
                    events=self.events,
                ),
            ),
        )
        self._expiry = ExpiryMonitor(self.tracker, self.reactor)
        self._expiry.start()
        scheduling.start()
        self._log_retention = start_log_retention(conf, name_node, self.rm, self.reactor)
        if self._ring is not None:
            self._serve_on_ring(self._ring, self.tracker, bound, started_ms)
        self.events.start(None if self._ring is None else self._ring.joined())

    def _app_network(self, app_id: ApplicationId) -> AppNetwork:
        """Where the application was submitted from ("" unknown: then no driver outside the
        cluster) and its slot of source ports."""
        assert self.rm is not None
        try:
            app = self.rm.apps.get(app_id)
            return AppNetwork(app.client_host, app.port_slot)
        except UnknownApplication:
            raise NodeRefused(f"{app_id} is not known to this RM") from None

    def _app_owner(self, app_id: ApplicationId, node_id: NodeId) -> str:
        """Whose logs a node aggregates: the application's user.  The application must be this
        RM's, and the node must have run it and been told to clean it up."""
        assert self.rm is not None and self.scheduling is not None
        try:
            owner = self.rm.apps.get(app_id).user
        except UnknownApplication:
            raise NodeRefused(f"{node_id} aggregates logs of {app_id}, which this RM does not know") from None
        if not self.scheduling.may_aggregate(app_id, node_id):
            raise NodeRefused(f"{node_id} has no logs of {app_id} to aggregate: it ran none of its containers")
        return owner

    async def _start_name_node(self, keys: RMKeys, stores: RmStores) -> NameNode:
        """The file system's namespace (recovered from the state store's database) and block map."""
        store = stores.namespace
        records = await store.load()
        namespace, first = fresh_or_recovered(records, getpass.getuser(), DEFAULT_SUPERGROUP, self._now_ms())
        await store.apply(first)
        blocks = BlockMap(self.reactor, random.Random())
        log.info(
            "NameNode: {count} inodes recovered; superuser {user}", count=namespace.inode_count, user=getpass.getuser()
        )
        return NameNode(namespace, blocks, store, keys.file_system, self.reactor)

    async def _start_event_registry(self, name_node: NameNode, auth: UserAuthenticator, stores: RmStores) -> EventRegistry:
        """The function registry (its table in the state store's database), published in the ring if on one."""
        ring = self._ring
        records = None if ring is None else RegistrationRecords(ring.identity, ring.config.resource_managers)
        return await EventRegistry.load(stores.registry, name_node, auth, self.reactor, ring=ring, records=records)

    def _serve_on_ring(self, ring: RingService, tracker: NodeTracker, bound: dict[str, HostPort], started_ms: int) -> None:
        """Publish the RM's addresses in the ring, and turn ring deaths into LOST nodes."""
        record = ResourceManagerRecord(
            client_address=bound["address"],
            scheduler_address=bound["scheduler_address"],
            webapp_address=bound["webapp_address"],
            tracker_address=bound["tracker_address"],
            tracker_fingerprint=self._tls.identity.fingerprint,
            started_ms=started_ms,
        )

        def membership_changed(event: MembershipEvent) -> None:
            if isinstance(event, (MemberDied, MemberLeft)) and self._republisher is not None:  # (not once stopped)
                tracker.ring_member_died(event.peer.node_id)

        ring.add_membership_listener(membership_changed)
        self._republisher = Republisher(lambda: publish_resource_manager(ring, record), self.reactor)
        self._republisher.start()

    async def _start_ledger(self) -> LedgerKeeper | None:
        """The uptime ledger (on the ring only: its membership is the ring's).  Given stores that write through the
        RM's journal (standbys), the ledger does too: the next active continues the same log."""
        ring, setup = self._ring, self._accounting
        if ring is None or setup is None:
            return None
        copy = self._stores.ledger if self._stores is not None and not self._owns_stores else None
        through = copy.blocking_store(self.reactor) if copy is not None else None
        url = copy.url if copy is not None and through is not None else setup.url
        self.ledger = keeper = LedgerKeeper(
            url, self._tls.identity.key, setup.rules, self.reactor, me=ring.identity.ring_id,
            live_members=lambda: live_ring_members(ring), update_interval_s=setup.update_interval_s,
            max_batches_per_hour=setup.max_batches_per_hour, on_classes=self._classes_changed, store=through,
        )  # fmt: skip
        ring.add_membership_listener(keeper.membership_changed)
        await keeper.start()
        if through is None:
            keeper.snapshot_when(ring.joined())  # who is live, once this node is on the ring
        else:
            keeper.snapshot_now()  # (taking over: on the ring already, and its key must be in the log first)
        return keeper

    def _classes_changed(self, static: frozenset[int]) -> None:
        if static != self.static_nodes:
            names: dict[int, NodeId] = self.tracker.nodes_by_ring_id() if self.tracker is not None else {}
            log.info("static nodes now: {nodes}", nodes=", ".join(sorted(str(names.get(r, f"{r:040x}")) for r in static)) or "none")
        self.static_nodes = static
        if self.scheduling is not None:
            self.scheduling.set_static_nodes(static)  # node labels; AMs go to static nodes
        if self.name_node is not None and self.tracker is not None:
            nodes = self.tracker.nodes_by_ring_id()
            self.name_node.blocks.prefer(str(nodes[r]) for r in static if r in nodes)  # replicas on static nodes first

    def _app_running(self, app_id: str) -> bool:
        assert self.rm is not None
        try:
            return not self.rm.apps.get(ApplicationId.parse(app_id)).state.is_terminal
        except (UnknownApplication, MalformedId):
            return False

    def _client_port(self, rm: RMContext, auth: UserAuthenticator, access: AppAccess) -> IpcServerFactory:
        return IpcServerFactory.daemon_port(
            [client_protocol(ApplicationClientService(rm, auth, access))],
            SaslServer(auth.sasl_password),
            max_data_length=self.section.ipc_max_data_length,
            clock=self.reactor,
        )

    def _scheduler_port(self, service: ApplicationMasterService) -> IpcServerFactory:
        return IpcServerFactory.daemon_port(
            [am_protocol(service)],
            SaslServer(self._amrm_password, allow_simple=False),
            max_data_length=self.section.ipc_max_data_length,
            clock=self.reactor,
        )

    def _amrm_password(self, identifier: bytes) -> bytes | None:
        """The password of a live attempt's AMRMToken; None for anything else (InvalidToken)."""
        assert self.keys is not None and self.rm is not None
        try:
            ident = parse_amrm_identifier(identifier)
            if ident.keyId != self.keys.amrm.key_id:
                return None
            app, attempt = self.rm.apps.get_attempt(records.attempt_id_from_proto(ident.appAttemptId))
        except (ValueError, YarnError):
            return None
        if attempt is not app.current_attempt or attempt.state.is_terminal:
            return None
        return self.keys.amrm.password(identifier)

    def stop(self) -> None:
        """Stop timers and the store (the composition root closes the ports first)."""
        if self._republisher is not None:
            self._republisher.stop()
            self._republisher = None
        if self.events is not None:
            self.events.stop()
        if self.scheduling is not None:
            self.scheduling.stop()
        if self.ledger is not None:
            self.ledger.stop()
            self.ledger = None
        if self._expiry is not None:
            self._expiry.stop()
            self._expiry = None
        if self._log_retention is not None and self._log_retention.running:
            self._log_retention.stop()
        if self._token_sweeps is not None and self._token_sweeps.running:
            self._token_sweeps.stop()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()  # waits for queued state-store writes to finish
        if self._stores is not None and self._owns_stores:
            self._stores.close()
