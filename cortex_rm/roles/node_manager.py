"""The NodeManager role of a node: its containers, its ports, and its link to the RM, wired.

Built by the composition root (``node.py``) when ``[nodemanager] enabled``:

* a ``ContainerManager`` with the LXC runtime (``lxc_runtime.LxcRuntime``, its working files under
  ``<state_dir>/lxc``), the configured directories and limits, and a small thread pool for every
  file operation (directories, localization, launch scripts, log tails, deletion);
* ``nodemanager.webapp_address``: the NodeManager's REST API (``/ws/v1/node``),
  and the ring view (``/ws/v1/ring``) when the node is a ring member;
* ``nodemanager.address``: ContainerManagementProtocol over Hadoop IPC (SASL TOKEN: every caller
  proves an NMToken); the ContainerToken in each request is what authorizes a start;
* the status updater (``status_updater_service.py``), which reports this node (NodeId =
  ``nodemanager.address``) and its containers to the RM's NodeTracker over mutual TLS (found through
  the ring unless ``resourcemanager_tracker`` is configured) and hands the RM's answers back here;
* on the ring: this node's capacity report, every 30 s; ``function_sandboxes``: functions' sandboxes.

``stop`` stops reporting, kills every container (bounded wait) and stops the thread pool.  With
``[nodemanager] recovery`` containers outlive a daemon that dies, and its next start takes them back."""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cortex_rm import __version__
from cortex_rm.config import EventsSection, NodeManagerDirs, NodeManagerSection
from cortex_rm.container.container_manager import ContainerManager
from cortex_rm.container.container_tokens import ContainerTokenVerifier
from cortex_rm.container.launch import NodeFacts
from cortex_rm.container.localizer import Localizer
from cortex_rm.container.lxc_recovery import recover_or_reap
from cortex_rm.container.nm_recovery import RECOVERY_DIR, ContainerRecordStore
from cortex_rm.container.resource_files import Fetcher, default_fetchers
from cortex_rm.container.runtime import ContainerRuntime
from cortex_rm.container.runtime_spec import ContainerSettings
from cortex_rm.container.status_updater import Backoff, NodeStatusUpdater, UpdaterState
from cortex_rm.dht.ring_math import format_id
from cortex_rm.internal.identity import KnownResourceManagers
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_client import TrackerClient
from cortex_rm.container.id_ranges import IdRange, check_against_subordinate_files
from cortex_rm.container.range_leases import RangeLease, left_behind
from cortex_rm.container.net_firewall import NftFirewall
from cortex_rm.roles.container_members import (
    MembersWatcher, OwnEndpoints, container_firewall, existing_dirs, make_searchable, ring_view_of,
)  # fmt: skip
from cortex_rm.roles.ports import Listen
from cortex_rm.roles.ring_records import CAPACITY_SECTION, CapacityReport, CapacityReports, Republisher, find_resource_manager
from cortex_rm.roles.ring_service import RingService
from cortex_rm.roles.rm_directory import find_all_rms
from cortex_rm.roles.status_updater_service import NodeStatusUpdaterService, TrackerLocation
from cortex_rm.roles.data_node import DataNodeRole
from cortex_rm.roles.fs_fetcher import SCHEMES, FileSystemFetcher
from cortex_rm.roles.local_log_retention import LocalLogRetention
from cortex_rm.roles.log_aggregation import LogAggregator
from cortex_rm.roles.function_sandboxes import SOCKETS_ROOT, FunctionSandboxes
from cortex_rm.roles.runtime_image_fetcher import RuntimeImageFetcher
from cortex_rm.roles.threads import thread_runner
from cortex_rm.status_page.node_page import NodeInfo
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.app_network import AppNetwork
from cortex_rm.yarn.ids import ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.reactors import INodeReactor
from cortex_rm.yarn.resource_tracker import NodeHealth, NodeRegistration, RegistrationAnswer
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api.ipc_server import IpcServerFactory
from cortex_rm.yarn_api.nm_rest import build_nm_site
from cortex_rm.yarn_api.nm_viewers import ViewTickets
from cortex_rm.yarn_api.nm_service import ContainerManagementService, nm_protocol
from cortex_rm.yarn_api.ring_rest import RingResource, mount_ring
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.tokens import read_container_identifier, read_nm_token_identifier

log = Logger()

FILE_THREADS = 4  # localizations of different applications, script writes and deletions in parallel
RING_RETRY_MAX_MS = 3000
"""Found through the ring, the RM is usually missing only while the ring forms or the RM
starts (seconds): the updater retries at most this often then, so a node registers soon
after the RM appears, not up to 30 s later."""


class NodeManagerRole:
    """Starts and stops everything the NodeManager role needs (see the module docstring)."""

    def __init__(
        self,
        section: NodeManagerSection,
        dirs: NodeManagerDirs,
        *,
        state_dir: Path,
        node_name: str,
        ipc_max_data_length: int,
        reactor: INodeReactor,
        listen: Listen,
        tls: MutualTLS,
        ring: RingService | None = None,
        capacities: CapacityReports | None = None,
        runtime: ContainerRuntime | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if section.resourcemanager_tracker is None and ring is None:
            raise ValueError("a NodeManager with no resourcemanager_tracker finds the RM through the ring: give it one")
        self.section = section
        self.dirs = dirs
        self.state_dir = state_dir
        self.node_name = node_name
        self.ipc_max_data_length = ipc_max_data_length
        self.reactor = reactor
        self._listen = listen
        self._tls = tls
        self._ring = ring
        self._capacities = capacities
        self._runtime = runtime
        self.environ = dict(os.environ if environ is None else environ)
        self.node_id = NodeId(section.address.host, section.address.port)
        self.containers: ContainerManager | None = None
        self.tokens: ContainerTokenVerifier | None = None
        self.status_updater: NodeStatusUpdaterService | None = None
        self._pool: ThreadPool | None = None
        self.republisher: Republisher | None = None
        self.data_node: DataNodeRole | None = None
        self.aggregator: LogAggregator | None = None
        self.image: RuntimeImageFetcher | None = None
        self.log_retention: LocalLogRetention | None = None
        self.firewall: NftFirewall | None = None
        self.id_lease: RangeLease | None = None
        self.members: MembersWatcher | None = None

    def start(self, started_ms: int) -> None:
        """Serve the web site and ContainerManagementProtocol, then report to the RM and gossip the capacity."""
        webapp = self._start_web(started_ms)
        self._start_containers(webapp)
        self._start_status_updater(webapp)
        assert self.data_node is not None
        self.data_node.start().addErrback(lambda f: log.failure("the DataNode did not start", f))
        if self._ring is not None:
            self._publish_capacity(self._ring, webapp)

    def _start_web(self, started_ms: int) -> HostPort:
        """``/ws/v1/node`` with the containers' web services and logs (and ``/ws/v1/ring`` on a ring
        member) on ``nodemanager.webapp_address``."""
        address = self.section.webapp_address
        info = self.info = NodeInfo(  # (its caps change at a reload: roles/node_caps.py)
            node_id=self.node_name or address.host,
            host=address.host,
            memory_mb=self.section.memory_mb,
            vcores=self.section.vcores,
            started_ms=started_ms,
            version=__version__,
        )
        self.data_node = DataNodeRole(
            self.node_id, "", self.state_dir / "dfs-data", self.reactor, self.tracker_client
        )
        # The ContainerManager is built after the site: its web services look it up on each request.
        now_ms = lambda: int(self.reactor.seconds() * 1000)  # noqa: E731
        ring = (lambda: None) if self._ring is None else ring_view_of(self._ring)  # /ws/v1/ring's, and /node's
        site = build_nm_site(
            info, now_ms, self.data_node.resources(), lambda: self.containers, ring=ring,
            viewers=ViewTickets(str(self.node_id), self.data_node.keys, now_ms), clock=self.reactor,
        )  # fmt: skip
        if self._ring is not None:
            mount_ring(site.resource, RingResource(ring, self.reactor))
        bound = self._listen("nodemanager.webapp_address", address, site)
        self.data_node.http_address = str(bound)
        return bound

    def _fetchers(self, forbidden: list[Path]) -> dict[str, Fetcher]:
        """``file:`` from this machine; ``webhdfs:`` from the cluster's file system, when this node serves it."""
        fetchers = default_fetchers(forbidden)
        if self.data_node is not None:
            fetchers.update(dict.fromkeys(SCHEMES, FileSystemFetcher(self.data_node)))
        return fetchers

    def tracker_client(self) -> TrackerClient | None:
        """The tracker connection, while this node is registered on it (the DataNode's channel to the NameNode)."""
        updater = self.status_updater
        if updater is None or updater.state not in (UpdaterState.REPORTING, UpdaterState.HEARTBEATING):
            return None
        return updater.client

    def _start_containers(self, webapp: HostPort) -> None:
        """Build the ContainerManager and serve ContainerManagementProtocol (``webapp``: the bound web
        address, whose port containers get as ``NM_HTTP_PORT``)."""
        nm, dirs = self.section, self.dirs
        java_home = dirs.java_home  # inside the runtime image
        readonly = existing_dirs(dirs.readonly_dirs, "readonly_dirs")
        shared = existing_dirs(dirs.shared_dirs, "shared_dirs")
        run, self._pool = thread_runner(self.reactor, name="nodemanager-files", threads=FILE_THREADS)
        self._pool.start()
        runtime = self._runtime = self._runtime or self._lxc_runtime()
        self.tokens = ContainerTokenVerifier(
            self.node_id, self.reactor, read_container_identifier, read_nm_token_identifier
        )
        forbidden = [self.state_dir.resolve(), *dirs.local_dirs, *dirs.log_dirs]
        self.containers = ContainerManager(
            clock=self.reactor,
            runtime=runtime,
            run=run,
            tokens=self.tokens,
            node=NodeFacts(
                nm_host=self.node_id.host,
                nm_port=self.node_id.port,
                nm_http_port=webapp.port,
                java_home=str(java_home),
                user_home_dir=nm.user_home_dir,
                nm_environment=self.environ,
            ),
            settings=ContainerSettings(
                local_dirs=dirs.local_dirs,
                log_dirs=dirs.log_dirs,
                readonly_dirs=readonly,
                shared_dirs=shared,
                memory_overhead_mb=nm.container_memory_overhead_mb,
                pids_limit=nm.pids_limit,
            ),
            localizer=Localizer(run, self._fetchers(forbidden)),
            image_root=self._image_root,
            app_network=self._app_network if self.data_node is not None else None,
            records=ContainerRecordStore(self.state_dir.resolve() / RECOVERY_DIR) if nm.recovery else None,
        )
        roots = [*dirs.local_dirs, *dirs.log_dirs, self.state_dir.resolve() / "functions-sandboxes"]
        recover_or_reap(runtime, self.containers, roots)
        if self.data_node is not None:
            self.image = RuntimeImageFetcher(
                self.data_node, self.state_dir.resolve() / "images", run, self.reactor, self.containers.image_roots_in_use
            )
            self.image.start()
        if nm.log_aggregation and self.data_node is not None:
            self.aggregator = LogAggregator(
                self.data_node, dirs.log_dirs, self.state_dir / "aggregation", run, self.reactor
            )
        if nm.log_retain_s >= 0:
            self.log_retention = LocalLogRetention(
                dirs.log_dirs, nm.log_retain_s, run, self.reactor, self.containers.live_applications
            )
            self.log_retention.start()
        factory = IpcServerFactory.daemon_port(
            [nm_protocol(ContainerManagementService(self.containers))],
            # every caller proves an NMToken (SASL TOKEN, DIGEST-MD5), as YARN's NodeManager
            # wants: the AMs with theirs, the RM's AM launcher with one it signs (nm_service.py)
            SaslServer(self.tokens.nm_token_password, allow_simple=False),
            max_data_length=self.ipc_max_data_length,
            clock=self.reactor,
        )
        self._listen("nodemanager.address", nm.address, factory)
        log.info(
            "NodeManager {node_id}: containers in {local_dirs}, logs in {log_dirs}, JVM {java_home}",
            node_id=str(self.node_id),
            local_dirs=[str(d) for d in dirs.local_dirs],
            log_dirs=[str(d) for d in dirs.log_dirs],
            java_home=str(java_home),
        )

    def _lxc_runtime(self) -> ContainerRuntime:
        """The LXC runtime with this node's id range and network policy (installed now; the
        members are kept up to date from the ring, the capacity reports and the RM's record)."""
        from cortex_rm.container.lxc_runtime import LxcRuntime
        from cortex_rm.container.node_cgroup import limits_of

        nm = self.section
        ids = IdRange.parse(nm.container_id_range)
        check_against_subordinate_files(ids)  # IdRangeError: shared with another user's containers
        self.id_lease = RangeLease.take(ids)  # IdRangeError: held by another live node of this host
        make_searchable([self.state_dir.resolve(), *self.dirs.local_dirs, *self.dirs.log_dirs])
        # the table is named by the range: a node restarted on other ports replaces the one it left
        self.firewall = container_firewall(f"{ids.base}_{ids.count}", ids, nm.container_internet, stale=left_behind)
        ring = self._ring
        web = self.data_node.http_address if self.data_node else str(nm.webapp_address)
        self.members = MembersWatcher(
            self.reactor,
            OwnEndpoints(services=(str(nm.address), web), control=()),
            self.firewall.update_members,
            view=ring_view_of(ring) if ring is not None else (lambda: None),
            reports=self._capacities.reports if self._capacities is not None else (lambda: ()),
            find_rms=(lambda: find_all_rms(ring, ring.config.resource_managers)) if ring is not None else None,
        )
        self.firewall.install(self.members.current())
        self.members.start()
        lxc = self.state_dir.resolve() / "lxc"
        return LxcRuntime(self.reactor, lxc, ids=ids, firewall=self.firewall, recovery=nm.recovery, limits=limits_of(nm))

    # ------------------------------------------------------------ reporting to the RM

    def _start_status_updater(self, webapp: HostPort) -> None:
        nm = self.section
        registration = NodeRegistration(
            node_id=self.node_id,
            http_address=str(webapp),
            rack=nm.rack,
            capability=Resource(nm.memory_mb, nm.vcores),
            heartbeat_interval_ms=nm.heartbeat_interval_ms,
            version=__version__,
        )
        configured = nm.resourcemanager_tracker
        backoff = Backoff() if configured is not None else Backoff(max_ms=RING_RETRY_MAX_MS)
        self.status_updater = NodeStatusUpdaterService(
            self.reactor,
            NodeStatusUpdater(registration, backoff, random=random.Random().random),
            configured,
            self._tls,
            KnownResourceManagers.in_state_dir(self.state_dir),
            health=self.health,
            on_cleanup=self.cleanup_containers, on_acknowledged=self.acknowledged,
            on_cleanup_applications=self.cleanup_applications, on_registered=self.registered,
            locate_tracker=self._locate_tracker if configured is None else None,
        )
        self.status_updater.start()

    def _locate_tracker(self) -> defer.Deferred[TrackerLocation]:
        """Where the RM's tracker is, from the ring's ResourceManager record."""
        assert self._ring is not None
        d = find_resource_manager(self._ring)
        vouched = bool(self._ring.config.resource_managers)  # only they may write the record (write_policy.py)
        return d.addCallback(lambda record: TrackerLocation(record.tracker_address, record.tracker_fingerprint, vouched))

    def _publish_capacity(self, ring: RingService, webapp: HostPort) -> None:
        """Gossip this NodeManager's capacity report on the ring (now, every 30 s and at ``republisher.run_now``);
        its caps are read from ``section`` each time (a reload changes them: ``roles/node_caps.py``)."""
        ring_id = format_id(self._tls.identity.ring_id)

        def publish() -> object:
            nm = self.section
            report = CapacityReport(ring_id=ring_id, node_id=nm.address, http_address=webapp, rack=nm.rack,
                                    memory_mb=nm.memory_mb, vcores=nm.vcores)  # fmt: skip
            if self._capacities is not None:
                self._capacities.receive_own(report)  # gossip never brings a member its own items
            return ring.publish(CAPACITY_SECTION, ring_id, report.encode())

        self.republisher = Republisher(publish, self.reactor)
        self.republisher.start()

    # ------------------------------------------------------------ the status updater's hooks

    def registered(self, answer: RegistrationAnswer) -> None:
        """The RM accepted this node: keep the key it signs ContainerTokens with, and take only its tokens."""
        assert self.tokens is not None
        self.tokens.rm_identifier = answer.rm_identifier
        if answer.container_token_master_key is not None:
            self.tokens.set_master_key(answer.container_token_master_key)
        else:
            log.warn("the ResourceManager sent no container-token key: no container can start here yet")
        if self.image is not None:
            self.reactor.callLater(0, self.image.check)  # which runtime image the RM names, now

    def health(self) -> NodeHealth:
        """Each heartbeat's report: every container's status; unhealthy (saying why) until the RM's image is here."""
        assert self.containers is not None
        statuses = self.containers.statuses_for_heartbeat()
        if self.image is not None and not self.image.state.ready:
            return NodeHealth(healthy=False, health_report=self.image.state.doing, containers=statuses)
        return NodeHealth(containers=statuses)

    def _app_network(self, app_id: ApplicationId) -> defer.Deferred[AppNetwork]:
        """Where the RM says ``app_id`` was submitted from, and its slot of source ports."""
        assert self.data_node is not None
        return self.data_node.application_network(str(app_id))

    def _image_root(self) -> Path | None:
        return None if self.image is None else self.image.root()

    async def function_sandboxes(self, settings: EventsSection) -> FunctionSandboxes:
        """Sandboxes for functions on this node's runtime, image and file threads (their sockets under /run)."""
        assert self._runtime is not None and self.containers is not None, "the NodeManager has not started"
        tag = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        sandboxes = FunctionSandboxes(
            self._runtime, self.reactor, self.state_dir.resolve() / "functions-sandboxes", SOCKETS_ROOT / tag,
            self._image_root, run=self.containers.run, max_sandboxes=settings.max_sandboxes,
            idle_timeout_s=settings.sandbox_idle_timeout_s, max_memory_mb=settings.max_sandbox_memory_mb)  # fmt: skip
        await sandboxes.start()
        return sandboxes

    def acknowledged(self, container_ids: tuple[ContainerId, ...]) -> None:
        assert self.containers is not None
        self.containers.acknowledge(container_ids)

    def cleanup_containers(self, container_ids: tuple[ContainerId, ...]) -> None:
        assert self.containers is not None
        self.containers.cleanup_containers(container_ids)

    def cleanup_applications(self, app_ids: tuple[ApplicationId, ...]) -> None:
        """The RM says these applications ended: clean up, then aggregate their logs (see
        ``log_aggregation.py``; the RM names the owner, even of containers this node forgot).
        What is left afterwards (aggregation off, or given up) is nobody's from then on."""
        assert self.containers is not None
        for app_id in app_ids:
            d: defer.Deferred[Any] = self.containers.cleanup_application(app_id)
            if self.aggregator is not None:
                d.addCallback(self._aggregate, self.aggregator, app_id)
            d.addErrback(functools.partial(log.failure, "cleaning up {app_id} failed", app_id=str(app_id)))
            d.addCallback(self._application_ended, str(app_id))

    def _application_ended(self, _: object, app: str) -> None:
        """``app`` ended here: its logs, if any are left, will not be aggregated; the runtime frees its
        ids, rules and cgroups (an unprivileged runtime holds them)."""
        if self.log_retention is not None:
            self.log_retention.ended(app)
        self._runtime_hook("application_finished", app)

    def _runtime_hook(self, name: str, *args: str) -> None:
        """``LxcRuntime.<name>(*args)``, which other runtimes (the tests' fake) need not have."""
        hook = getattr(self.containers.runtime if self.containers else None, name, None)
        if hook is not None:
            hook(*args)

    @staticmethod
    def _aggregate(_: object, aggregator: LogAggregator, app_id: ApplicationId) -> defer.Deferred[None]:
        return aggregator.aggregate(app_id)

    # ------------------------------------------------------------ stop

    def stop(self) -> defer.Deferred[None]:
        """Stop reporting and gossiping, kill every container (bounded wait), then stop the file threads."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.republisher is not None:
            self.republisher.stop()
            self.republisher = None
        if self.image is not None:
            self.image.stop()
        if self.data_node is not None:
            self.data_node.stop()
        if self.log_retention is not None:
            self.log_retention.stop()
        if self.status_updater is not None:
            await self.status_updater.stop()
            self.status_updater = None
        if self.containers is not None:
            await self.containers.stop_all()
            self._runtime_hook("close")  # the containers' sysfs
        if self.members is not None:
            self.members.stop()
        if self.firewall is not None:
            self.firewall.remove()
        if self.id_lease is not None:
            self.id_lease.release()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
