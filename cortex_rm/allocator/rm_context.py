"""The ResourceManager's shared state, as the wire layers (IPC, REST) see it.

``RMContext`` bundles the application table, the node table and the queue tree
with the figures derived from them (cluster metrics, queue usage).  Both the
ApplicationClientProtocol service and the REST API read and act through it, so
they can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from cortex_rm.allocator.app_model import Application
from cortex_rm.allocator.app_states import PENDING_APP_STATES, AppState
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.nodes import ACTIVE_NODE_STATES, NodeState, NodeTable
from cortex_rm.allocator.queues import Queue
from cortex_rm.yarn.ids import ApplicationAttemptId
from cortex_rm.yarn.resources import Resource


@dataclass(frozen=True)
class ClusterMetrics:
    """The figures of ``/ws/v1/cluster/metrics`` and ``getClusterMetrics``."""

    apps_submitted: int
    apps_completed: int
    apps_pending: int
    apps_running: int
    apps_failed: int
    apps_killed: int
    total: Resource
    allocated: Resource
    containers_allocated: int
    containers_pending: int
    active_nodes: int
    lost_nodes: int
    unhealthy_nodes: int
    decommissioned_nodes: int
    decommissioning_nodes: int
    rebooted_nodes: int
    shutdown_nodes: int

    @property
    def available(self) -> Resource:
        return self.total - self.allocated

    @property
    def total_nodes(self) -> int:
        return self.active_nodes + self.unhealthy_nodes + self.decommissioning_nodes


@dataclass(frozen=True)
class QueueUsage:
    """How much of the cluster a queue uses, and its applications by state."""

    used: Resource
    num_apps_pending: int
    num_apps_running: int

    def current_capacity(self, queue: Queue, cluster_total: Resource) -> float:
        """Used memory as a fraction of the queue's guaranteed memory (YARN's currentCapacity)."""
        guaranteed = queue.absolute_capacity * cluster_total.memory_mb
        return self.used.memory_mb / guaranteed if guaranteed > 0 else 0.0


@dataclass(frozen=True)
class AppUsage:
    """What an application holds now: its live containers and their resources."""

    containers: int
    used: Resource


UsageSource = Callable[[Application], AppUsage]
ContainerSource = Callable[[ApplicationAttemptId], list[RMContainer]]


class RMContext:
    """Everything an RM front end needs: applications, nodes, queues, time."""

    def __init__(
        self,
        clock: IReactorTime,
        apps: ApplicationTable,
        nodes: NodeTable,
        rm_started_ms: int,
        *,
        usage_source: UsageSource | None = None,
        container_source: ContainerSource | None = None,
    ) -> None:
        self.clock = clock
        self.apps = apps
        self.nodes = nodes
        self.queues = apps.queues
        self.limits = apps.limits
        self.started_ms = rm_started_ms
        # The scheduler's view of what each application holds; without one (front ends
        # tested alone), a RUNNING application is taken to hold just its AM container.
        self.usage_source = usage_source
        # The live containers of an attempt, as the scheduler knows them.
        self.container_source = container_source

    def attempt_containers(self, attempt_id: ApplicationAttemptId) -> list[RMContainer]:
        """The live containers of an attempt (none without a scheduler)."""
        return self.container_source(attempt_id) if self.container_source is not None else []

    def app_usage(self, app: Application) -> AppUsage:
        """The containers and resources ``app`` holds."""
        if self.usage_source is not None:
            return self.usage_source(app)
        running = app.reported_state is AppState.RUNNING
        return AppUsage(1 if running else 0, app.am_resource if running else Resource())

    @property
    def cluster_id(self) -> int:
        return self.apps.cluster_timestamp

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def metrics(self) -> ClusterMetrics:
        counts = self.apps.counts()
        nodes = self.nodes
        return ClusterMetrics(
            apps_submitted=counts.submitted,
            apps_completed=counts.completed,
            apps_pending=counts.pending,
            apps_running=counts.running,
            apps_failed=counts.failed,
            apps_killed=counts.killed,
            total=nodes.total_capability(),
            allocated=nodes.total_used(),
            containers_allocated=sum(n.num_containers for n in nodes.with_states(ACTIVE_NODE_STATES)),  # active, as `allocated`
            containers_pending=0,
            active_nodes=nodes.count(NodeState.RUNNING),
            lost_nodes=nodes.count(NodeState.LOST),
            unhealthy_nodes=nodes.count(NodeState.UNHEALTHY),
            decommissioned_nodes=nodes.count(NodeState.DECOMMISSIONED),
            decommissioning_nodes=nodes.count(NodeState.DECOMMISSIONING),
            rebooted_nodes=nodes.count(NodeState.REBOOTED),
            shutdown_nodes=nodes.count(NodeState.SHUTDOWN),
        )

    def queue_usage(self, queue: Queue) -> QueueUsage:
        """Usage of a queue and, for a parent, of all its leaves."""
        leaves = [queue] if queue.is_leaf else [q for q in self.queues if q.is_leaf and q.path.startswith(queue.path + ".")]
        pending = running = 0
        used = Resource()
        for leaf in leaves:
            for app in self.apps.in_queue(leaf):
                state = app.reported_state
                if state is AppState.RUNNING:
                    running += 1
                    used = used + app.am_resource
                elif state in PENDING_APP_STATES:
                    pending += 1
        return QueueUsage(used, pending, running)
