"""The capacity scheduler: YARN's CapacityScheduler decisions as a plain object.

``CapacityScheduler`` keeps the cluster model -- schedulable nodes with their free
space, attempts per leaf queue, containers by id and by node -- and makes every
scheduling decision; it never does I/O.  The wire calls it:

* the RM's application lifecycle: ``add_attempt`` when an attempt is submitted to
  the scheduler (with ``am_resource`` it first needs an AM container) and
  ``remove_attempt`` when it ends (its containers come back to be killed);
* ``ApplicationMasterProtocol.allocate``: ``update_requests`` (asks, releases,
  blacklist), then ``pull_allocated`` and ``pull_completed`` for the response,
  ``headroom`` for its ``limit``; ``can_ever_fit`` first, to fail an application
  whose ask can never be served;
* node reports: ``node_added``/``node_removed``, ``container_launched`` and
  ``container_finished``; ``expire_unlaunched`` on a timer;
* a restarted RM: ``start_epoch`` before anything is placed, ``add_attempt`` with
  ``recovered`` for the attempts that go on, ``recover_container`` and
  ``recover_completed`` for what the nodes report when they register again;
* a timer or the heartbeats run ``schedule(now_ms)``, one allocation pass
  (``allocation_pass`` explains the order and the locality rules);
* reports: ``waiting_reason`` (why an application waits), the usage queries.

Completion rules, for each container exactly once: a container the AM was handed
and that ends (finished, released, lost with its node, expired) goes into the
AM's completed list; one it was never handed (still ALLOCATED) is not reported
and its ask is put back (for an AM container: the attempt waits for a new one);
containers of a removed attempt are reported to nobody.  The AM's own container
is never in its completed list: its end is the attempt's end, which the caller
learns from the returned container (``is_am``).

The ``NodeTable`` records of scheduled nodes have ``used``/``num_containers`` kept
in step with the containers, for the REST API and the metrics.  The counting in
and out of containers lives in ``live_containers``; the order of service and the
locality rules in ``allocation_pass``; the explanations in ``scheduler_diagnostics``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedList
from twisted.logger import Logger

from cortex_rm.allocator.allocation_pass import AllocationPass
from cortex_rm.allocator.asks import PendingRequest, ResourceAsk
from cortex_rm.allocator.containers import (
    COMPLETED_APPLICATION,
    LOST_CONTAINER,
    RELEASED_CONTAINER,
    InvalidContainerRelease,
    Locality,
    RMContainer,
    RMContainerEvent,
)
from cortex_rm.allocator.errors import RefusedOperation, UnknownAttempt
from cortex_rm.allocator.live_containers import LiveContainers
from cortex_rm.allocator.node_index import NodeDirectory, SchedulerNode
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.scheduler_attempt import SchedulerAttempt, sync_active
from cortex_rm.allocator.scheduler_config import SchedulerConfig, SecondsClock
from cortex_rm.allocator.scheduler_diagnostics import can_ever_fit, waiting_reason
from cortex_rm.allocator.scheduler_queues import SchedulerQueues
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import CONTAINER_EPOCH_SHIFT, ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resources import ZERO, Resource

log = Logger()

_E = RMContainerEvent
REREGISTERED_CONTAINER = "Container released on a node that registered again"
MAX_PENDING_RELEASES = 10_000  # releases of an attempt's containers not yet recovered, kept until they are


class CapacityScheduler:
    """Cluster model and allocation decisions (see the module docstring)."""

    def __init__(
        self, queues: QueueTree, nodes: NodeTable, clock: SecondsClock, config: SchedulerConfig | None = None
    ) -> None:
        self.config = config or SchedulerConfig()
        self.clock = clock
        self.node_table = nodes
        self.queues = SchedulerQueues(queues)
        self.nodes = NodeDirectory()
        self.am_queue: SortedList = SortedList(key=lambda a: a.fifo_key)  # attempts waiting for an AM container
        self._attempts: dict[ApplicationAttemptId, SchedulerAttempt] = {}
        self.containers = LiveContainers(self.nodes, self._attempts, self.am_queue, self.config.epoch)
        self._submissions = 0
        self.static_held = False  # the last pass kept unlabelled asks off static nodes (an AM waits for one)

    def now_ms(self) -> int:
        """The clock's time in milliseconds (for the records of calls that carry no time)."""
        return int(self.clock.seconds() * 1000)

    def _attempt(self, attempt_id: ApplicationAttemptId) -> SchedulerAttempt:
        attempt = self._attempts.get(attempt_id)
        if attempt is None:
            raise UnknownAttempt(f"ApplicationAttempt {attempt_id} is not known to the scheduler")
        return attempt

    # ------------------------------------------------------------------ attempts

    def add_attempt(
        self,
        attempt_id: ApplicationAttemptId,
        queue: str,
        user: str,
        app_priority: int = 0,
        am_resource: Resource | None = None,
        *,
        am_label: str = "",
        am_blacklist: frozenset[NodeId] = frozenset(),
        recovered: bool = False,
    ) -> None:
        """Take an attempt into its leaf queue (short name or full path).

        With ``am_resource`` the attempt first gets an AM container (cluster-wide FIFO,
        before any other ask); without, its AM runs elsewhere (unmanaged) and its asks
        are served at once.  The AM container goes to a node labelled ``am_label``, or
        with none, where ``am_placement`` says; never to a node of ``am_blacklist`` (the
        nodes where the application's earlier AMs failed) while that list is below the
        threshold.  ``recovered``: an attempt a restarted RM goes on with (its AM container, if
        any, comes back through ``recover_container``; no ``am_resource`` then).
        Raises ``InvalidSubmission`` for a queue that is not a running leaf,
        ``RefusedOperation`` for an attempt already added.
        """
        if attempt_id in self._attempts:
            raise RefusedOperation(f"ApplicationAttempt {attempt_id} was already added to the scheduler")
        leaf = self.queues.leaf(queue)
        self._submissions += 1
        attempt = SchedulerAttempt(attempt_id, leaf, user, app_priority, self._submissions, am_resource)
        attempt.am_label, attempt.am_blacklist = am_label, am_blacklist
        self._attempts[attempt_id] = attempt
        if attempt.am_pending:
            self.am_queue.add(attempt)
        log.info(
            "attempt {attempt_id} added to queue {queue} (user {user}, priority {priority}, AM {am})",
            attempt_id=str(attempt_id), queue=leaf.path, user=user, priority=app_priority,
            am=str(am_resource) if am_resource else ("recovered" if recovered else "unmanaged"), am_label=am_label,
            am_blacklist=sorted(str(n) for n in am_blacklist),
        )

    def remove_attempt(
        self,
        attempt_id: ApplicationAttemptId,
        exit_status: int = ContainerExitStatus.ABORTED,
        diagnostics: str = COMPLETED_APPLICATION,
    ) -> list[RMContainer]:
        """Forget an attempt; its live containers end KILLED with ``exit_status`` and are returned.

        The caller kills them on their nodes (those already ACQUIRED or RUNNING; the
        node ignores the others).  Nobody's completed list gets them.
        """
        attempt = self._attempt(attempt_id)
        attempt.removed = True
        now = self.now_ms()
        killed = []
        for container in list(attempt.containers.values()):
            if self.containers.end(container, _E.KILL, exit_status, diagnostics, now):
                killed.append(container)
        sync_active(attempt)
        if attempt.am_pending:
            self.am_queue.remove(attempt)
            attempt.am_pending = False
        del self._attempts[attempt_id]
        log.info("attempt {attempt_id} removed; {n} containers killed", attempt_id=str(attempt_id), n=len(killed))
        return killed

    def update_app_priority(self, attempt_id: ApplicationAttemptId, priority: int) -> None:
        """Move an attempt within its queue's FIFO (``updateApplicationPriority``)."""
        attempt = self._attempt(attempt_id)
        in_am_queue, in_active = attempt.am_pending, attempt.is_active
        if in_am_queue:
            self.am_queue.remove(attempt)
        if in_active:
            attempt.leaf.active.remove(attempt)
        attempt.app_priority = priority
        if in_am_queue:
            self.am_queue.add(attempt)
        if in_active:
            attempt.leaf.active.add(attempt)

    def update_requests(
        self,
        attempt_id: ApplicationAttemptId,
        asks: Iterable[ResourceAsk] = (),
        releases: Iterable[ContainerId] = (),
        blacklist_add: Iterable[str] = (),
        blacklist_remove: Iterable[str] = (),
    ) -> list[RMContainer]:
        """What an allocate call asks: absolute counts, releases, blacklist changes.

        Returns the released containers (RELEASED, exit status ABORTED), which the
        caller kills on their nodes; they also appear once in ``pull_completed``.
        Releasing a container that has already ended is not an error (it raced its
        end); one of another attempt raises ``InvalidContainerRelease``, a malformed
        ask ``InvalidResourceRequest`` -- in both cases before anything changes.
        """
        attempt = self._attempt(attempt_id)
        releases = list(releases)
        for container_id in releases:
            if container_id.attempt_id != attempt_id:
                raise InvalidContainerRelease(
                    f"Cannot release container {container_id}: it does not belong to {attempt_id}"
                )
            am = attempt.am_container
            if am is not None and am.container_id == container_id:
                raise InvalidContainerRelease(f"Cannot release container {container_id}: it runs the AM")
        attempt.asks.update(asks)
        attempt.asks.update_blacklist(blacklist_add, blacklist_remove)
        now = self.now_ms()
        released = []
        for container_id in releases:
            container = self.containers.get(container_id)
            if container is None and container_id.epoch < self.containers.epoch:
                # placed by an earlier RM, not yet reported by its node: released when it is (YARN's pendingRelease)
                if len(attempt.pending_release) < MAX_PENDING_RELEASES:
                    attempt.pending_release.add(container_id)
            elif container is not None and self.containers.end(
                container, _E.RELEASED, ContainerExitStatus.ABORTED, RELEASED_CONTAINER, now
            ):
                released.append(container)
        sync_active(attempt)
        return released

    def pull_allocated(self, attempt_id: ApplicationAttemptId) -> list[RMContainer]:
        """Containers allocated to the attempt since the last pull, now ACQUIRED (for the allocate response).

        The AM launcher pulls the AM container this way before the AM exists, so the
        AM container is never in an allocate response.
        """
        attempt = self._attempt(attempt_id)
        if not attempt.newly_allocated:
            return []
        return self.containers.acquire(attempt, self.now_ms())

    def pull_completed(self, attempt_id: ApplicationAttemptId) -> list[RMContainer]:
        """Containers of the attempt that ended since the last pull; each is returned once."""
        attempt = self._attempt(attempt_id)
        completed, attempt.just_completed = attempt.just_completed, []
        return completed

    def completions_pending(self, attempt_id: ApplicationAttemptId) -> frozenset[ContainerId]:
        """The containers in the attempt's completed list, not yet pulled by its AM."""
        attempt = self._attempts.get(attempt_id)
        return frozenset(c.container_id for c in attempt.just_completed) if attempt is not None else frozenset()

    # ------------------------------------------------------------------ nodes

    def node_added(self, node_id: NodeId, capability: Resource, *, label: str | None = None) -> list[RMContainer]:
        """A registered node (in the ``NodeTable``) may take containers; its rack comes from its record.

        ``label`` is its node label (``node_labels``), by default the one its record
        carries ("" for none).  A node added again (it re-registered) first loses every
        container the scheduler had on it, as ``node_removed``; those are returned.
        """
        if capability.memory_mb < 0 or capability.vcores < 0:
            raise ValueError(f"node {node_id}: negative capability {capability}")
        record = self.node_table.get(node_id)
        if label is None:
            label = min(record.labels) if record.labels else ""
        gone = self.node_removed(node_id, diagnostics=REREGISTERED_CONTAINER) if node_id in self.nodes.by_id else []
        self.nodes.add(node_id, record.rack, capability, label, record)
        record.used, record.num_containers = ZERO, 0
        log.info(
            "node {node_id} added to the scheduler with {capability} in {rack}, label {label!r}",
            node_id=str(node_id), capability=str(capability), rack=record.rack, label=label,
        )
        return gone

    def set_node_label(self, node_id: NodeId, label: str) -> None:
        """A scheduled node changes partition; what runs on it stays.  A node not in the scheduler: nothing."""
        node = self.nodes.by_id.get(node_id)
        if node is not None:
            self.nodes.relabel(node, label)

    def node_removed(
        self,
        node_id: NodeId,
        exit_status: int = ContainerExitStatus.ABORTED,
        diagnostics: str = LOST_CONTAINER,
    ) -> list[RMContainer]:
        """The node is gone (LOST, unhealthy, shut down): every container on it ends KILLED.

        Returns those containers; with the default ABORTED status Spark re-requests
        its executors without counting a failure.  A node not in the scheduler: [].
        """
        node = self.nodes.by_id.get(node_id)
        if node is None:
            return []
        now = self.now_ms()
        end = self.containers.end
        lost = [c for c in list(node.containers.values()) if end(c, _E.KILL, exit_status, diagnostics, now)]
        self.nodes.remove(node)
        if node.record is not None:
            node.record.used, node.record.num_containers = ZERO, 0
        log.info("node {node_id} removed from the scheduler; {n} containers lost", node_id=str(node_id), n=len(lost))
        return lost

    def start_epoch(self, start_count: int) -> int:
        """This RM's epoch: its start count (wrapped to the 23 bits it has), which new container ids carry
        above bit 40 so that none repeats an earlier RM's; set once, before any container is placed."""
        if len(self.containers) or start_count < 0:
            raise ValueError(f"epoch {start_count}: set once, before any container, not negative")
        self.containers.epoch = start_count % (1 << (63 - CONTAINER_EPOCH_SHIFT))
        return self.containers.epoch

    def recover_container(
        self, attempt_id: ApplicationAttemptId, container_id: ContainerId, node_id: NodeId, resource: Resource,
        priority: int, is_am: bool, creation_time_ms: int,
    ) -> RMContainer | None:
        """A container an earlier RM placed, which its node (registered again) still runs: counted in
        RUNNING, for its attempt (added ``recovered``).  None when the AM released it meanwhile, when it is
        live already, or when its node is not in the scheduler: the caller has the node kill it."""
        attempt = self._attempt(attempt_id)
        node = self.nodes.by_id.get(node_id)
        if node is None or self.containers.get(container_id) is not None or container_id in attempt.pending_release:
            attempt.pending_release.discard(container_id)
            return None
        return self.containers.recover(attempt, node, container_id, resource, priority, is_am, creation_time_ms,
                                       self.now_ms())  # fmt: skip

    def recover_completed(
        self, attempt_id: ApplicationAttemptId, container_id: ContainerId, node_id: NodeId, resource: Resource,
        exit_status: int, diagnostics: str,
    ) -> None:
        """A container of the attempt that ended while no RM ran: its AM hears of it in its next allocate."""
        attempt = self._attempt(attempt_id)
        if container_id in attempt.pending_release:
            attempt.pending_release.discard(container_id)
            return
        container = RMContainer(container_id, node_id, resource, 0)
        container.handle(_E.RECOVER, self.now_ms())
        container.finish(_E.FINISHED, exit_status, diagnostics, self.now_ms())
        attempt.just_completed.append(container)

    def container_launched(self, container_id: ContainerId) -> RMContainer | None:
        """Its node reports the container RUNNING (every heartbeat may); None if it is not live here."""
        return self.containers.launched(container_id, self.now_ms())

    def container_finished(
        self, container_id: ContainerId, exit_status: int, diagnostics: str = ""
    ) -> RMContainer | None:
        """Its node reports that the container exited; the container, or None if it had already ended."""
        container = self.containers.get(container_id)
        if container is None or not self.containers.end(
            container, _E.FINISHED, exit_status, diagnostics, self.now_ms()
        ):
            return None
        return container

    def expire_unlaunched(self, now_ms: int) -> list[RMContainer]:
        """Containers handed out but not RUNNING ``container_launch_expiry_ms`` later: EXPIRED, ABORTED."""
        return self.containers.expire(now_ms, self.config.container_launch_expiry_ms)

    # ------------------------------------------------------------------ the pass

    def schedule(self, now_ms: int) -> list[RMContainer]:
        """One allocation pass; the containers it allocated (ALLOCATED, in order)."""
        done = AllocationPass(self, now_ms)
        allocated = done.run()
        self.static_held = done.hold_static
        if allocated:
            log.debug("allocation pass placed {n} containers", n=len(allocated))
        return allocated

    def commit_am_container(
        self, attempt: SchedulerAttempt, node: SchedulerNode, resource: Resource, now_ms: int
    ) -> RMContainer:
        """Place ``attempt``'s AM container on ``node`` (for the pass)."""
        container = self.containers.place(
            attempt, node, resource, 0, 0, attempt.am_resource, Locality.OFF_SWITCH, True, None, now_ms
        )
        attempt.am_pending = False
        attempt.am_container = container
        self.am_queue.remove(attempt)
        sync_active(attempt)
        return container

    def commit_container(
        self, attempt: SchedulerAttempt, node: SchedulerNode, resource: Resource, request: PendingRequest,
        locality: Locality, now_ms: int,
    ) -> RMContainer:
        """Place one container of ``request`` on ``node`` (for the pass)."""
        key = request.key
        record = attempt.asks.allocate(request, locality, node.host, node.rack)
        container = self.containers.place(
            attempt, node, resource, key.priority, key.allocation_request_id, key.capability, locality, False,
            record, now_ms,
        )
        if not attempt.asks.has_outstanding:
            sync_active(attempt)
        return container

    # ------------------------------------------------------------------ reports

    def headroom(self, attempt_id: ApplicationAttemptId) -> Resource:
        """What the attempt's queue could still get now: its limits up the tree, capped by what is free."""
        attempt = self._attempt(attempt_id)
        nodes = self.nodes
        return attempt.leaf.headroom(nodes.total, nodes.total - nodes.used())

    def waiting_reason(self, attempt_id: ApplicationAttemptId) -> str | None:
        """Why the attempt waits for a container, in words; None when it asks for nothing."""
        return waiting_reason(self, self._attempt(attempt_id))

    def can_ever_fit(self, resource: Resource) -> str | None:
        """Why a container of ``resource`` can never be allocated; None if it can (or nodes may yet come)."""
        return can_ever_fit(self, resource)

    def container(self, container_id: ContainerId) -> RMContainer | None:
        """A live container by id."""
        return self.containers.get(container_id)

    def live_containers(self) -> list[RMContainer]:
        return list(self.containers)

    def attempt_containers(self, attempt_id: ApplicationAttemptId) -> list[RMContainer]:
        return list(self._attempt(attempt_id).containers.values())

    def node_containers(self, node_id: NodeId) -> list[RMContainer]:
        node = self.nodes.by_id.get(node_id)
        return [] if node is None else list(node.containers.values())

    def attempt_queue(self, attempt_id: ApplicationAttemptId) -> str:
        """The full path of the leaf queue the attempt is in."""
        return self._attempt(attempt_id).leaf.path

    def attempt_used(self, attempt_id: ApplicationAttemptId) -> Resource:
        return self._attempt(attempt_id).used

    def outstanding(self, attempt_id: ApplicationAttemptId) -> Resource:
        """What the attempt still asks for (its AM container included while it waits for one)."""
        attempt = self._attempt(attempt_id)
        pending = attempt.asks.outstanding_resource()
        if attempt.am_pending and attempt.am_resource is not None:
            pending = pending + attempt.am_resource
        return pending

    def pending_containers(self) -> int:
        """Containers asked for and not yet allocated, over all attempts (``containersPending``)."""
        return sum(a.asks.outstanding_containers + (1 if a.am_pending else 0) for a in self._attempts.values())

    def queue_used(self, queue: str) -> Resource:
        """Resources held by containers of a queue (a parent: of all its leaves)."""
        return self.queues.get(queue).used

    def has_attempt(self, attempt_id: ApplicationAttemptId) -> bool:
        return attempt_id in self._attempts
