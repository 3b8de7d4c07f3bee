"""A simulated cluster around a ``CapacityScheduler``: nodes, attempts and a clock, no I/O.

Tests drive it the way the wire will: register nodes in the ``NodeTable`` and add
them to the scheduler, submit attempts, send asks, run passes, and play the
nodes' reports (launched, finished) and the AM's pulls.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.task import Clock

from cortex_rm.allocator.asks import ANY, ResourceAsk
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import DEFAULT_QUEUES, QueueSpec, QueueTree
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, NodeId
from cortex_rm.yarn.resources import Resource

CLUSTER_TS = 1_700_000_000_000
NM_PORT = 45454
GB = 1024


def ask(
    n: int,
    memory_mb: int = GB,
    vcores: int = 1,
    where: str = ANY,
    priority: int = 0,
    relax: bool = True,
    allocation_request_id: int = 0,
) -> ResourceAsk:
    """One ResourceAsk, as Spark's AMRMClient would send it."""
    return ResourceAsk(priority, where, Resource(memory_mb, vcores), n, relax, allocation_request_id)


class SimCluster:
    """A scheduler with a fake clock and helpers to play nodes and ApplicationMasters."""

    def __init__(
        self,
        queues: QueueSpec = DEFAULT_QUEUES,
        config: SchedulerConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.table = NodeTable()
        self.scheduler = CapacityScheduler(QueueTree(queues), self.table, self.clock, config)
        self._apps = 0

    # -- nodes ---------------------------------------------------------------------

    def add_node(
        self,
        host: str,
        memory_mb: int = 8 * GB,
        vcores: int = 8,
        rack: str = "/default-rack",
        port: int = NM_PORT,
        label: str = "",
    ) -> NodeId:
        """A node in the table and the scheduler; ``label``: its node label ("" none, as before
        the ledger classes it: then AMs may go to it like to any node)."""
        node_id = NodeId(host, port)
        capability = Resource(memory_mb, vcores)
        record = self.table.register(node_id, f"{host}:8042", capability, self.now_ms, rack=rack)
        record.labels = frozenset({label}) if label else frozenset()
        self.scheduler.node_added(node_id, capability)
        return node_id

    def add_nodes(self, count: int, memory_mb: int = 8 * GB, vcores: int = 8, racks: int = 1) -> list[NodeId]:
        return [
            self.add_node(f"node{i:05d}", memory_mb, vcores, rack=f"/rack{i % racks}") for i in range(count)
        ]

    # -- attempts ------------------------------------------------------------------

    def submit(
        self,
        queue: str = "default",
        am: Resource | None = Resource(GB, 1),
        priority: int = 0,
        user: str = "alice",
    ) -> ApplicationAttemptId:
        """A new application's first attempt, added to the scheduler."""
        self._apps += 1
        attempt_id = ApplicationAttemptId(ApplicationId(CLUSTER_TS, self._apps), 1)
        self.scheduler.add_attempt(attempt_id, queue, user, priority, am)
        return attempt_id

    def start_am(self, attempt_id: ApplicationAttemptId) -> RMContainer:
        """Run a pass, hand the AM container to the launcher, and have its node report it RUNNING."""
        self.schedule()
        (am,) = self.scheduler.pull_allocated(attempt_id)
        assert am.is_am
        self.scheduler.container_launched(am.container_id)
        return am

    def running_app(self, queue: str = "default", priority: int = 0, am: Resource = Resource(GB, 1)) -> ApplicationAttemptId:
        attempt_id = self.submit(queue, am, priority)
        self.start_am(attempt_id)
        return attempt_id

    def ask(self, attempt_id: ApplicationAttemptId, *asks: ResourceAsk) -> None:
        self.scheduler.update_requests(attempt_id, asks)

    def acquire_and_launch(self, attempt_id: ApplicationAttemptId) -> list[RMContainer]:
        """The AM takes its new containers and starts them all."""
        got = self.scheduler.pull_allocated(attempt_id)
        for container in got:
            self.scheduler.container_launched(container.container_id)
        return got

    # -- time and passes -----------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def advance_ms(self, ms: int) -> None:
        self.clock.advance(ms / 1000)

    def schedule(self) -> list[RMContainer]:
        return self.scheduler.schedule(self.now_ms)

    def hosts_of(self, containers: Iterable[RMContainer]) -> list[str]:
        return [c.node_id.host for c in containers]
