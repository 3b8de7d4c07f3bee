"""Every live container, and what placing or ending one changes (YARN's liveContainers bookkeeping).

``LiveContainers`` is the one place where a container is counted in and out:
placing it takes its resources from its node (and the node's ``NodeTable``
record), charges its attempt and the attempt's queues, and queues it for its
AM's next pull; ending it gives all of that back, once, and decides who hears
of it:

* a container its AM was handed (ACQUIRED or RUNNING) goes into the AM's
  completed list -- except the AM's own container, whose end is the attempt's;
* a container never handed out (still ALLOCATED) is not reported; its ask is
  put back, or for an AM container the attempt waits for a new one;
* the containers of a removed attempt are reported to nobody.

It also keeps the handed-out containers not yet RUNNING in acquisition order,
so that ``expire`` finds the overdue ones without a scan.  A restarted RM counts
in, with ``recover``, the containers its nodes still run (already RUNNING and
handed out by an earlier RM, so nobody pulls them again).
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedList

from cortex_rm.allocator.asks import AllocationRecord
from cortex_rm.allocator.containers import EXPIRED_CONTAINER, Locality, RMContainer, RMContainerEvent, RMContainerState
from cortex_rm.allocator.node_index import NodeDirectory, SchedulerNode
from cortex_rm.allocator.scheduler_attempt import SchedulerAttempt, sync_active
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import CONTAINER_EPOCH_SHIFT, ApplicationAttemptId, ContainerId
from cortex_rm.yarn.resources import Resource

_E = RMContainerEvent


class LiveContainers:
    """The containers that hold resources now, by id, with their hand-over state."""

    def __init__(
        self,
        nodes: NodeDirectory,
        attempts: dict[ApplicationAttemptId, SchedulerAttempt],
        am_queue: SortedList,
        epoch: int,
    ) -> None:
        self._nodes = nodes
        self._attempts = attempts
        self._am_queue = am_queue
        self.epoch = epoch
        self._live: dict[ContainerId, RMContainer] = {}
        self._unacquired: dict[ContainerId, AllocationRecord | None] = {}  # ALLOCATED: how to put them back
        self._unlaunched: dict[ContainerId, RMContainer] = {}  # ACQUIRED, not yet RUNNING, oldest first

    def get(self, container_id: ContainerId) -> RMContainer | None:
        return self._live.get(container_id)

    def __iter__(self) -> Iterator[RMContainer]:
        return iter(self._live.values())

    def __len__(self) -> int:
        return len(self._live)

    def place(
        self,
        attempt: SchedulerAttempt,
        node: SchedulerNode,
        resource: Resource,
        priority: int,
        allocation_request_id: int,
        requested: Resource | None,
        locality: Locality,
        is_am: bool,
        record: AllocationRecord | None,
        now_ms: int,
    ) -> RMContainer:
        """A new ALLOCATED container of ``attempt`` on ``node``, counted everywhere."""
        container_id = ContainerId(attempt.attempt_id, (self.epoch << CONTAINER_EPOCH_SHIFT) | attempt.next_sequence)
        attempt.next_sequence += 1
        container = RMContainer(
            container_id, node.node_id, resource, priority, allocation_request_id, is_am, requested, locality
        )
        container.handle(_E.START, now_ms)
        self._count_in(attempt, node, container)
        attempt.newly_allocated.append(container)
        self._unacquired[container_id] = record
        return container

    def recover(
        self, attempt: SchedulerAttempt, node: SchedulerNode, container_id: ContainerId, resource: Resource,
        priority: int, is_am: bool, creation_time_ms: int, now_ms: int,
    ) -> RMContainer:
        """A container an earlier RM placed and ``node`` still runs, counted in RUNNING (YARN's
        ``recoverContainersOnNode``); the node may end up over-committed, as in YARN."""
        container = RMContainer(container_id, node.node_id, resource, priority, 0, is_am, resource)
        container.handle(_E.RECOVER, now_ms)
        container.creation_time_ms = creation_time_ms or now_ms
        self._count_in(attempt, node, container)
        if is_am:
            attempt.am_container = container
        return container

    def _count_in(self, attempt: SchedulerAttempt, node: SchedulerNode, container: RMContainer) -> None:
        container_id, resource = container.container_id, container.resource
        node.containers[container_id] = container
        self._nodes.change_free(node, -resource.memory_mb, -resource.vcores)
        attempt.containers[container_id] = container
        attempt.used_mem += resource.memory_mb
        attempt.used_vcores += resource.vcores
        attempt.leaf.add_container(resource, container.is_am)
        self._live[container_id] = container

    def acquire(self, attempt: SchedulerAttempt, now_ms: int) -> list[RMContainer]:
        """Hand over the attempt's containers allocated since the last call (ALLOCATED -> ACQUIRED)."""
        pulled = []
        for container in attempt.newly_allocated:
            if container.state is RMContainerState.ALLOCATED:
                container.handle(_E.ACQUIRED, now_ms)
                del self._unacquired[container.container_id]
                self._unlaunched[container.container_id] = container
                pulled.append(container)
        attempt.newly_allocated = []
        return pulled

    def launched(self, container_id: ContainerId, now_ms: int) -> RMContainer | None:
        """Its node reports it RUNNING; None if it is not live."""
        container = self._live.get(container_id)
        if container is not None and container.handle(_E.LAUNCHED, now_ms):
            self._unlaunched.pop(container_id, None)
        return container

    def end(self, container: RMContainer, event: RMContainerEvent, exit_status: int, diagnostics: str,
            now_ms: int) -> bool:
        """End a live container once (see the module docstring); False if it had already ended."""
        if not container.finish(event, exit_status, diagnostics, now_ms):
            return False
        container_id, resource = container.container_id, container.resource
        del self._live[container_id]
        self._unlaunched.pop(container_id, None)
        unacquired = container_id in self._unacquired
        record = self._unacquired.pop(container_id, None)
        node = self._nodes.by_id[container.node_id]
        del node.containers[container_id]
        self._nodes.change_free(node, resource.memory_mb, resource.vcores)
        attempt = self._attempts[container.attempt_id]
        del attempt.containers[container_id]
        attempt.used_mem -= resource.memory_mb
        attempt.used_vcores -= resource.vcores
        attempt.leaf.remove_container(resource, container.is_am)
        if attempt.removed:
            return True
        if not unacquired:
            if not container.is_am:
                attempt.just_completed.append(container)
        elif container.is_am:
            attempt.am_container = None
            attempt.am_pending = True
            self._am_queue.add(attempt)
        elif record is not None:
            attempt.asks.recover(record)
        sync_active(attempt)
        return True

    def expire(self, now_ms: int, expiry_ms: int) -> list[RMContainer]:
        """Handed-out containers not RUNNING ``expiry_ms`` after they were acquired: EXPIRED, ABORTED."""
        deadline = now_ms - expiry_ms
        expired = []
        for container in list(self._unlaunched.values()):
            if container.acquired_time_ms > deadline:
                break  # acquisition order: the rest are younger
            if self.end(container, _E.EXPIRE, ContainerExitStatus.ABORTED, EXPIRED_CONTAINER, now_ms):
                expired.append(container)
        return expired
