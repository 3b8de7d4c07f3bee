"""The ResourceManager role of a node: its state, decision cores and ports, wired.

Built by the composition root (``node.py``) when ``[resourcemanager] enabled``:

* the state store (SQLAlchemy on its own thread) with the application table, the
  token master keys, and the capacity scheduler;
* ``resourcemanager.address``: ApplicationClientProtocol (SIMPLE auth);
* ``resourcemanager.scheduler_address``: ApplicationMasterProtocol, where an AM must
  authenticate with its AMRMToken (DIGEST-MD5) — that is how the RM knows which
  attempt calls;
* ``resourcemanager.webapp_address``: the REST API;
* ``resourcemanager.tracker_address``: the NodeTracker, where nodes register and
  report (Thrift over mutual TLS), with its expiry check;
* the scheduling service binding them (``ClusterScheduling``), which launches AM
  containers on nodes over Hadoop IPC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from cortex_rm import __version__
from cortex_rm.allocator.app_table import ApplicationTable, SchedulerLimits
from cortex_rm.allocator.cluster_scheduling import ClusterScheduling, SchedulingTimers
from cortex_rm.allocator.errors import AllocatorError
from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.resources import Resource
from cortex_rm.allocator.rm_context import RMContext
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.allocator.state_store import SqlStateStore, thread_runner
from cortex_rm.config import Config
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.internal.tracker_server import ExpiryMonitor, tracker_server_factory
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.am_launcher import AMLauncher
from cortex_rm.yarn_api.am_service import SCHEDULER_PROTOCOL, ApplicationMasterService
from cortex_rm.yarn_api.client_service import CLIENT_PROTOCOL, UNSUPPORTED_CLIENT_METHODS, ApplicationClientService
from cortex_rm.yarn_api.ipc_server import PORT_IDLE_TIMEOUT_S, PORT_MAX_OUTSTANDING_CALLS, IpcServerFactory
from cortex_rm.yarn_api.proto import applicationclient_protocol_pb2, applicationmaster_protocol_pb2
from cortex_rm.yarn_api.rest import build_rest_site
from cortex_rm.yarn_api.rpc_protocol import RpcProtocol
from cortex_rm.yarn_api.sasl import SaslServer
from cortex_rm.yarn_api.tokens import RMKeys, parse_amrm_identifier

log = Logger()

Listen = Callable[[str, str, Any], str]  # (name, configured address, factory) -> bound host:port


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


class ResourceManagerRole:
    """Starts and stops everything the RM role needs (see the module docstring)."""

    def __init__(self, config: Config, reactor: Any, listen: Listen, tls: MutualTLS) -> None:
        self.config = config
        self.reactor = reactor
        self._listen = listen
        self._tls = tls
        self.rm: RMContext | None = None
        self.keys: RMKeys | None = None
        self.tracker: NodeTracker | None = None
        self.scheduling: ClusterScheduling | None = None
        self._store: SqlStateStore | None = None
        self._pool: Any = None
        self._expiry: ExpiryMonitor | None = None

    @defer.inlineCallbacks
    def start(self, started_ms: int):  # type: ignore[no-untyped-def]
        conf, sched = self.config.resourcemanager, self.config.scheduler
        run, self._pool = thread_runner(self.reactor)
        self._pool.start()
        self._store = SqlStateStore(self.config.state_store_url, run)
        maximum = Resource(sched.maximum_allocation_mb, sched.maximum_allocation_vcores)
        limits = SchedulerLimits(
            maximum_allocation=maximum,
            max_app_attempts=conf.max_app_attempts,
            max_priority=conf.max_application_priority,
            max_completed_applications=conf.max_completed_applications,
        )
        queues = QueueTree(sched.queue_tree_spec())
        apps = yield ApplicationTable.recover(self.reactor, self._store, queues, limits)
        self.keys = yield RMKeys.recover(self._store)
        nodes = NodeTable()
        self.rm = RMContext(self.reactor, apps, nodes, started_ms)
        scheduler = CapacityScheduler(
            queues,
            nodes,
            self.reactor,
            SchedulerConfig(
                maximum_allocation=maximum,
                minimum_allocation=Resource(min(1024, maximum.memory_mb), 1),
                node_locality_delay_ms=sched.node_locality_delay_ms,
                rack_locality_delay_ms=sched.rack_locality_delay_ms,
                max_am_share=sched.max_am_share,
            ),
        )

        self._listen("resourcemanager.address", conf.address, self._client_port())
        scheduler_address = conf.scheduler_address  # what AMs find in their AMRMToken's service
        launcher = AMLauncher(self.reactor, self.keys, scheduler_address, started_ms, self.rm.now_ms)
        self.scheduling = ClusterScheduling(
            self.reactor,
            apps,
            scheduler,
            launcher.launch,
            SchedulingTimers(am_expiry_ms=conf.am_expiry_ms),
        )
        self.rm.usage_source = self.scheduling.usage_of
        self.rm.container_source = self.scheduling.containers_of
        am_service = ApplicationMasterService(self.scheduling, self.keys.container, started_ms, self.rm.now_ms)
        self.scheduling.on_attempt_ended.append(am_service.forget)
        self._listen("resourcemanager.scheduler_address", conf.scheduler_address, self._scheduler_port(am_service))
        self._listen(
            "resourcemanager.webapp_address", conf.webapp_address, build_rest_site(self.rm, version=__version__)
        )
        self.tracker = NodeTracker(
            nodes,
            self.reactor,
            nm_expiry_ms=conf.nm_expiry_ms,
            rm_identifier=started_ms,
            container_token_master_key=self.keys.container,
            listener=self.scheduling,
        )
        self._listen(
            "resourcemanager.tracker_address",
            conf.tracker_address,
            tracker_server_factory(self.tracker, self._tls, self.reactor),
        )
        self._expiry = ExpiryMonitor(self.tracker, self.reactor)
        self._expiry.start()
        self.scheduling.start()

    def _client_port(self) -> IpcServerFactory:
        assert self.rm is not None
        return IpcServerFactory(
            [client_protocol(ApplicationClientService(self.rm))],
            SaslServer.simple_only(),
            **self._ipc_limits(),
        )

    def _ipc_limits(self) -> dict[str, Any]:
        """Bounds shared by the RM's IPC ports: frame size, calls in flight, idle connections."""
        return {
            "max_data_length": self.config.resourcemanager.ipc_max_data_length,
            "max_outstanding_calls": PORT_MAX_OUTSTANDING_CALLS,
            "idle_timeout": PORT_IDLE_TIMEOUT_S,
            "clock": self.reactor,
        }

    def _scheduler_port(self, service: ApplicationMasterService) -> IpcServerFactory:
        protocol = RpcProtocol.from_service(
            SCHEDULER_PROTOCOL,
            applicationmaster_protocol_pb2.DESCRIPTOR.services_by_name["ApplicationMasterProtocolService"],
            service.handlers(),
        )
        return IpcServerFactory([protocol], SaslServer(self._amrm_password, allow_simple=False), **self._ipc_limits())

    def _amrm_password(self, identifier: bytes) -> bytes | None:
        """The password of a live attempt's AMRMToken; None for anything else (InvalidToken)."""
        assert self.keys is not None and self.rm is not None
        try:
            ident = parse_amrm_identifier(identifier)
            if ident.keyId != self.keys.amrm.key_id:
                return None
            app, attempt = self.rm.apps.get_attempt(records.attempt_id_from_proto(ident.appAttemptId))
        except (ValueError, AllocatorError):
            return None
        if attempt is not app.current_attempt or attempt.state.is_terminal:
            return None
        return self.keys.amrm.password(identifier)

    def stop(self) -> None:
        """Stop timers and the store (the composition root closes the ports first)."""
        if self.scheduling is not None:
            self.scheduling.stop()
        if self._expiry is not None:
            self._expiry.stop()
            self._expiry = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()  # waits for queued state-store writes to finish
        if self._store is not None:
            self._store.close()
