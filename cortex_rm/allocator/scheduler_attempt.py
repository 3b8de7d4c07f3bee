"""One application attempt as the scheduler sees it (YARN's ``FiCaSchedulerApp``).

It holds the attempt's outstanding asks, its live containers, and the two
hand-over lists the ApplicationMaster drains on each allocate call: containers
allocated since its last call, and containers completed since its last call.
Containers the AM was never handed (still ALLOCATED when they vanished) are not
reported to it; their asks are put back instead.
"""

from __future__ import annotations

from cortex_rm.allocator.asks import AppSchedulingInfo
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.scheduler_queues import SchedulerQueue
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource


class SchedulerAttempt:
    """An attempt's scheduling state; created by ``CapacityScheduler.add_attempt``."""

    def __init__(
        self,
        attempt_id: ApplicationAttemptId,
        leaf: SchedulerQueue,
        user: str,
        app_priority: int,
        submission_order: int,
        am_resource: Resource | None,
    ) -> None:
        self.attempt_id = attempt_id
        self.leaf = leaf
        self.user = user
        self.app_priority = app_priority
        self.submission_order = submission_order
        self.am_resource = am_resource
        self.am_pending = am_resource is not None  # waiting for its AM container
        self.am_container: RMContainer | None = None
        self.am_label = ""  # the label its AM container must have ("": where am_placement says)
        self.am_blacklist: frozenset[NodeId] = frozenset()  # nodes where its application's AMs failed
        self.am_static_missed_ms: int | None = None  # the first pass that found no static node with room for its AM
        self.asks = AppSchedulingInfo()
        self.containers: dict[ContainerId, RMContainer] = {}  # live ones
        self.newly_allocated: list[RMContainer] = []
        self.just_completed: list[RMContainer] = []
        # released by the AM before a restarted RM recovered them: released once their node reports them
        self.pending_release: set[ContainerId] = set()
        self.used_mem = 0
        self.used_vcores = 0
        self.next_sequence = 1  # container 000001 is the AM's, as in YARN
        self.removed = False
        self.is_active = False  # in its leaf's active list (CapacityScheduler keeps this in step)

    @property
    def fifo_key(self) -> tuple[int, int, int, int]:
        """Serving order: higher application priority first, then the application submitted first.

        The application id gives the submission order (as YARN's FIFO ordering policy),
        so a second attempt keeps its application's place instead of queueing last.
        """
        app = self.attempt_id.app_id
        return (-self.app_priority, app.cluster_timestamp, app.id, self.submission_order)

    @property
    def used(self) -> Resource:
        return Resource(self.used_mem, self.used_vcores)

    @property
    def wants_containers(self) -> bool:
        """Whether the pass should look at its asks: AM placed, something outstanding."""
        return not self.am_pending and not self.removed and self.asks.has_outstanding

    def __repr__(self) -> str:
        return f"SchedulerAttempt({self.attempt_id} in {self.leaf.path}, used {self.used})"


def sync_active(attempt: SchedulerAttempt) -> None:
    """Keep ``attempt`` in its leaf's active list exactly while it wants containers."""
    wants = attempt.wants_containers
    if wants and not attempt.is_active:
        attempt.leaf.active.add(attempt)
        attempt.is_active = True
    elif not wants and attempt.is_active:
        attempt.leaf.active.remove(attempt)
        attempt.is_active = False
