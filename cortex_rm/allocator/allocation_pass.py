"""One allocation pass of the capacity scheduler: who gets which node, in which order.

Order of service
    1. **ApplicationMaster containers**, cluster-wide, FIFO (higher application
       priority first, then earlier application id), each where ``am_placement``
       allows (static nodes first, its label, its blacklist) and within its leaf's
       maximum capacity and AM limit.  An AM that does not fit does not block a
       smaller one behind it.  If an AM found no static node with room while it may
       only take a static one, the rest of the pass keeps unlabelled asks off static
       nodes (``hold_static``): as in YARN's non-exclusive partitions, the
       partition's own asks (here the AMs) go first, the others get only space
       nobody of the partition waits for -- so static space that frees up is the
       AM's, not the next executor's.  Asks labelled ``static`` still take it.
    2. **Everything else, one container at a time to the leaf with the lowest
       share** (dominant used/guaranteed, see ``scheduler_queues``), re-ranked after
       each container, so leaves below their guarantee are served first and spare
       capacity is split in proportion to the guarantees.  Within a leaf, attempts
       are served FIFO; within an attempt, keys in priority order (lower value
       first).  A leaf drops out of the pass when nothing in it can be placed.

Locality (delay scheduling, simplified from YARN's missed-opportunity counts)
    An ask that names hosts first looks only at those hosts.  The time from the
    first pass that could not place it there (``first_missed_ms``) decides how far
    it may relax: after ``node_locality_delay_ms`` it may take any node of its
    requested racks, after ``rack_locality_delay_ms`` more any node at all -- if
    its ``"*"`` entry has ``relax_locality``.  A rack entry sent with
    ``relax_locality=false`` is never used as a rack (only the named hosts in it),
    as in YARN.  A node-local container resets the wait (a requested host had room
    again); rack-local and off-switch ones do not, so once relaxed a request is not
    delayed container by container.
    An ask with no hosts and no racks goes anywhere at once.  Time rather than a
    pass count, so the wait does not depend on how often the wire runs passes.

Node labels
    An ask whose ``"*"`` entry named a label (``node_labels``) goes only to nodes
    with that label, hosts and racks included; an ask without one goes anywhere
    (both labels are non-exclusive) -- but not to a static node while an AM waits
    for one (``hold_static`` above).

Cost
    Nothing here scans the nodes: hosts are found through a dict, racks and the
    cluster through ``FreeSpaceIndex`` queries.  Free space only shrinks during a
    pass, so every failure is final for the pass: the pass remembers the
    smallest sizes that fitted nowhere (any larger ask fails at once), moves each
    leaf's, attempt's and host list's cursor past what failed, and so visits each
    (attempt, key) at most once more than it allocates containers.  When no node
    has even the minimum allocation free, the pass ends at once: the frequent pass
    after a node report that freed one slot places a container or two and stops,
    whatever the number of waiting attempts.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from twisted.logger import Logger

from cortex_rm.allocator.am_placement import am_placement
from cortex_rm.allocator.asks import PendingRequest
from cortex_rm.allocator.containers import Locality, RMContainer
from cortex_rm.allocator.node_index import Exclude, SchedulerNode
from cortex_rm.allocator.node_labels import STATIC
from cortex_rm.allocator.scheduler_attempt import SchedulerAttempt
from cortex_rm.allocator.scheduler_queues import SchedulerQueue

if TYPE_CHECKING:
    from cortex_rm.allocator.scheduler import CapacityScheduler

log = Logger()


class _LeafCursor:
    """Where a leaf's FIFO stands in this pass: the index of the attempt being served in ``leaf.active``.

    During the by-share phase an attempt leaves ``active`` only when it is the one
    being served and its last outstanding container is placed; the next attempt then
    slides into the same index, so the cursor needs no copy of the list.
    """

    __slots__ = ("leaf", "index")

    def __init__(self, leaf: SchedulerQueue) -> None:
        self.leaf = leaf
        self.index = 0


class AllocationPass:
    """The state of one pass; ``run`` does it and returns the containers allocated."""

    def __init__(self, scheduler: CapacityScheduler, now_ms: int) -> None:
        self.s = scheduler
        self.nodes = scheduler.nodes
        self.config = scheduler.config
        self.now_ms = now_ms
        self.allocated: list[RMContainer] = []
        self.budget = self.config.max_containers_per_pass or -1
        self._unfit: dict[str, list[tuple[int, int]]] = {}  # by label: sizes that fitted on no such node in this pass
        self.exhausted = False  # no node has even the minimum allocation free: the pass is over
        self.hold_static = False  # an AM waits for a static node: unlabelled asks keep off static nodes
        self._key_cursors: dict[SchedulerAttempt, tuple[list[PendingRequest], list[int]]] = {}
        self._host_cursors: dict[PendingRequest, tuple[list[str], list[int]]] = {}

    def run(self) -> list[RMContainer]:
        self._check_exhausted()
        if self.exhausted:
            return self.allocated
        if self.s.am_queue:
            self._assign_am_containers()
        self._assign_by_share()
        return self.allocated

    # ------------------------------------------------------------------ order of service

    def _assign_am_containers(self) -> None:
        total = self.nodes.total
        for attempt in list(self.s.am_queue):
            if self.budget == 0 or self.exhausted:
                return
            assert attempt.am_resource is not None
            res = self.config.normalize(attempt.am_resource)
            leaf = attempt.leaf
            if leaf.blocking_queue(res.memory_mb, res.vcores, total.memory_mb, total.vcores) is not None:
                continue
            if not leaf.am_allowed(res, total, self.config.max_am_share):
                continue
            placement = am_placement(self.s, attempt, res, self.now_ms)
            node = placement.find(res, self.config.placement)
            if node is None:
                if placement.static_only:
                    self.hold_static = True
                    if attempt.am_static_missed_ms is None:
                        attempt.am_static_missed_ms = self.now_ms  # am_static_wait_ms counts from here
                continue
            if not placement.label and node.label != STATIC:
                log.info(
                    "AM of {attempt} goes to {label} node {node_id}: {why}",
                    attempt=str(attempt.attempt_id), label=node.label or "unlabelled", node_id=str(node.node_id),
                    why=placement.beyond_static,
                )
            self._took(self.s.commit_am_container(attempt, node, res, self.now_ms))

    def _assign_by_share(self) -> None:
        total_mem, total_vcores = self.nodes.total_mem, self.nodes.total_vcores
        heap = [
            (leaf.share(total_mem, total_vcores), leaf.path, _LeafCursor(leaf))
            for leaf in self.s.queues.leaves
            if leaf.active
        ]
        heapq.heapify(heap)
        while heap and self.budget != 0 and not self.exhausted:
            _, path, cursor = heap[0]
            container = self._next_in_leaf(cursor)
            if container is None:
                heapq.heappop(heap)
                continue
            self._took(container)
            heapq.heapreplace(heap, (cursor.leaf.share(total_mem, total_vcores), path, cursor))

    def _took(self, container: RMContainer) -> None:
        self.allocated.append(container)
        self.budget -= 1

    def _next_in_leaf(self, cursor: _LeafCursor) -> RMContainer | None:
        """One container for the first attempt of the leaf that can still get one."""
        smallest = self.config.minimum_allocation
        room_mem, room_vcores = cursor.leaf.room(self.nodes.total_mem, self.nodes.total_vcores)
        if room_mem < smallest.memory_mb or room_vcores < smallest.vcores:
            return None  # at its maximum capacity (or under a parent that is): nothing of it fits
        active = cursor.leaf.active
        while cursor.index < len(active) and not self.exhausted:
            container = self._next_for_attempt(active[cursor.index])
            if container is not None:
                return container
            cursor.index += 1
        return None

    def _next_for_attempt(self, attempt: SchedulerAttempt) -> RMContainer | None:
        state = self._key_cursors.get(attempt)
        if state is None:
            state = self._key_cursors[attempt] = (attempt.asks.pending(), [0])
        requests, position = state
        while position[0] < len(requests):
            request = requests[position[0]]
            if request.total > 0:
                container = self._next_for_request(attempt, request)
                if container is not None:
                    return container
            position[0] += 1
        return None

    # ------------------------------------------------------------------ placement

    def _next_for_request(self, attempt: SchedulerAttempt, request: PendingRequest) -> RMContainer | None:
        res = request.normalized
        if res is None:
            res = request.normalized = self.config.normalize(request.key.capability)
        mem, vcores = res.memory_mb, res.vcores
        nodes = self.nodes
        if attempt.leaf.blocking_queue(mem, vcores, nodes.total_mem, nodes.total_vcores) is not None:
            return None
        if self._known_unfit(request.label, mem, vcores):
            placed = None
        else:
            placed = self.place(attempt, request, mem, vcores)
        if placed is None:
            if request.first_missed_ms is None:
                request.first_missed_ms = self.now_ms
            return None
        node, locality = placed
        return self.s.commit_container(attempt, node, res, request, locality, self.now_ms)

    def _check_exhausted(self) -> None:
        """Every container is at least the minimum allocation: if no node has that free, stop."""
        smallest = self.config.minimum_allocation
        if self.nodes.everywhere.find(smallest.memory_mb, smallest.vcores, self.config.placement) is None:
            self.exhausted = True

    def _known_unfit(self, label: str, mem: int, vcores: int) -> bool:
        return any(m <= mem and v <= vcores for m, v in self._unfit.get(label, ()))

    def place(self, attempt: SchedulerAttempt, request: PendingRequest, mem: int,
              vcores: int) -> tuple[SchedulerNode, Locality] | None:
        """The node and locality for one container of ``request`` now, or None (nothing changes)."""
        config, nodes = self.config, self.nodes
        asks = attempt.asks
        label = request.label
        if request.hosts:
            node = self._node_local(attempt, request, mem, vcores)
            if node is not None:
                return node, Locality.NODE_LOCAL
            rack_after = config.node_locality_delay_ms
        else:
            rack_after = 0
        waited = 0 if request.first_missed_ms is None else self.now_ms - request.first_missed_ms
        blacklisted = (lambda n: asks.is_blacklisted(n.host, n.rack)) if asks.has_blacklist else None
        if request.racks and waited >= rack_after:
            in_rack: Exclude | None = blacklisted
            if label:
                in_rack = lambda n: n.label != label or asks.is_blacklisted(n.host, n.rack)  # noqa: E731
            elif self.hold_static:
                in_rack = lambda n: n.label == STATIC or asks.is_blacklisted(n.host, n.rack)  # noqa: E731
            for rack in request.racks:
                if rack in request.strict_racks or rack not in nodes.racks:
                    continue
                node = nodes.racks[rack].find(mem, vcores, config.placement, in_rack)
                if node is not None:
                    return node, Locality.RACK_LOCAL
        if request.has_places:
            if not request.relax_locality or waited < rack_after + config.rack_locality_delay_ms:
                return None
        exclude = blacklisted
        if request.strict_racks:
            strict = request.strict_racks
            exclude = lambda n: n.rack in strict or asks.is_blacklisted(n.host, n.rack)  # noqa: E731
        if label:
            node = nodes.partition(label).find(mem, vcores, config.placement, exclude)
        elif self.hold_static:
            node = nodes.find_outside(STATIC, mem, vcores, config.placement, exclude)
        else:
            node = nodes.everywhere.find(mem, vcores, config.placement, exclude)
        if node is None:
            if exclude is None:
                self._unfit.setdefault(label, []).append((mem, vcores))
                if not label:
                    self._check_exhausted()
            return None
        return node, Locality.OFF_SWITCH

    def _node_local(self, attempt: SchedulerAttempt, request: PendingRequest, mem: int,
                    vcores: int) -> SchedulerNode | None:
        """A requested host with room, resuming where this pass last left the request's hosts."""
        state = self._host_cursors.get(request)
        if state is None:
            state = self._host_cursors[request] = (list(request.hosts), [0])
        hosts, position = state
        by_host, asks = self.nodes.by_host, attempt.asks
        label, off_static = request.label, not request.label and self.hold_static
        while position[0] < len(hosts):
            host = hosts[position[0]]
            if request.hosts.get(host, 0) > 0:
                for node in by_host.get(host, ()):
                    if (
                        node.fits(mem, vcores)
                        and not asks.is_blacklisted(host, node.rack)
                        and (node.label == label if label else not (off_static and node.label == STATIC))
                    ):
                        return node
            position[0] += 1
        return None
