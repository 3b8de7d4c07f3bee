"""The scheduler's view of nodes, indexed by free space so a placement never scans the cluster.

``FreeSpaceIndex`` keeps nodes in one ``SortedList`` per *free vcores* value, each
sorted by free memory.  Free vcores take few distinct values (0..the largest node's
cores), so a question "which node has at least ``m`` MiB and ``v`` cores free?"
costs one binary search per bucket with ``>= v`` cores: O(V log N), V the number of
distinct free-vcores values, independent of how many nodes are full.  Both
dimensions are checked; memory-only indexes fail exactly when cores run out first
(nodes with memory left but no cores would be visited one by one).

Which fitting node wins is the placement policy:

* ``SPREAD`` (default): the node with the most free memory, so load spreads and a
  lost volunteer machine takes few containers with it;
* ``PACK``: the node with the least free memory that fits (best fit), keeping
  large holes for large containers.

Ties are broken by the order nodes were added (SPREAD: the earlier; PACK: the
later), so placements are deterministic.
``NodeDirectory`` holds every schedulable node with the indexes that must move
together when a node's free space changes: the whole cluster, each rack, and each
node label's partition (``node_labels``: static, volatile; "" for an unlabelled node).
"""

from __future__ import annotations

import enum
import heapq
from bisect import insort
from collections import Counter
from collections.abc import Callable, Iterator

from sortedcontainers import SortedList

from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.nodes import NodeRecord
from cortex_rm.yarn.ids import ContainerId, NodeId
from cortex_rm.yarn.resources import Resource


class PlacementPolicy(enum.Enum):
    SPREAD = "spread"
    PACK = "pack"


class SchedulerNode:
    """A schedulable node: capacity, what is free, and the containers on it."""

    __slots__ = ("node_id", "host", "rack", "capability", "free_mem", "free_vcores", "label", "order",
                 "containers", "record", "withheld", "draining")

    def __init__(self, node_id: NodeId, rack: str, capability: Resource, label: str, order: int,
                 record: NodeRecord | None) -> None:
        self.node_id = node_id
        self.host = node_id.host
        self.rack = rack
        self.capability = capability
        self.free_mem = capability.memory_mb
        self.free_vcores = capability.vcores
        self.label = label  # its partition (node_labels); "" when it has none
        self.order = order
        self.containers: dict[ContainerId, RMContainer] = {}
        self.record = record  # the NodeTable's record, kept in step for REST and metrics
        self.withheld = False  # outside its schedule: in no free-space index, so nothing is placed on it
        self.draining = False  # DECOMMISSIONING: out of the free-space indexes, its containers go on

    @property
    def free(self) -> Resource:
        return Resource(self.free_mem, self.free_vcores)

    @property
    def used(self) -> Resource:
        return Resource(self.capability.memory_mb - self.free_mem, self.capability.vcores - self.free_vcores)

    @property
    def placeable(self) -> bool:
        """Whether new containers may go here (neither outside its schedule nor leaving)."""
        return not (self.withheld or self.draining)

    def fits(self, memory_mb: int, vcores: int) -> bool:
        return self.placeable and memory_mb <= self.free_mem and vcores <= self.free_vcores

    def __repr__(self) -> str:
        return f"SchedulerNode({self.node_id}, free {self.free} of {self.capability})"


# (free memory, -order, node): among equal free memory the larger entry is the node
# added first; the order is unique, so comparisons never reach the node itself
_Entry = tuple[int, int, SchedulerNode]
Exclude = Callable[[SchedulerNode], bool]


def _rank(entry: _Entry) -> tuple[int, int]:
    return entry[0], entry[1]


class FreeSpaceIndex:
    """Nodes by free (vcores, memory); see the module docstring."""

    def __init__(self) -> None:
        self._buckets: dict[int, SortedList] = {}
        self._vcore_keys: list[int] = []  # sorted keys of non-empty buckets
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, node: SchedulerNode) -> None:
        bucket = self._buckets.get(node.free_vcores)
        if bucket is None:
            bucket = self._buckets[node.free_vcores] = SortedList()
            insort(self._vcore_keys, node.free_vcores)
        bucket.add((node.free_mem, -node.order, node))
        self._size += 1

    def remove(self, node: SchedulerNode) -> None:
        """Remove ``node`` as filed under its *current* free values (call before changing them)."""
        bucket = self._buckets[node.free_vcores]
        bucket.remove((node.free_mem, -node.order, node))
        self._size -= 1
        if not bucket:
            del self._buckets[node.free_vcores]
            self._vcore_keys.remove(node.free_vcores)

    def _buckets_from(self, vcores: int) -> list[SortedList]:
        keys = self._vcore_keys
        lo, hi = 0, len(keys)
        while lo < hi:  # first key >= vcores
            mid = (lo + hi) // 2
            if keys[mid] < vcores:
                lo = mid + 1
            else:
                hi = mid
        return [self._buckets[k] for k in keys[lo:]]

    def find(self, memory_mb: int, vcores: int, policy: PlacementPolicy,
             exclude: Exclude | None = None) -> SchedulerNode | None:
        """The node ``policy`` prefers among those with room and not excluded; None if there is none."""
        if exclude is not None:
            for node in self.candidates(memory_mb, vcores, policy):
                if not exclude(node):
                    return node
            return None
        best: _Entry | None = None
        if policy is PlacementPolicy.SPREAD:
            for bucket in self._buckets_from(vcores):
                top = bucket[-1]
                if top[0] >= memory_mb and (best is None or top[:2] > best[:2]):
                    best = top
        else:
            for bucket in self._buckets_from(vcores):
                i = bucket.bisect_left((memory_mb,))
                if i < len(bucket):
                    entry = bucket[i]
                    if best is None or entry[:2] < best[:2]:
                        best = entry
        return None if best is None else best[2]

    def candidates(self, memory_mb: int, vcores: int, policy: PlacementPolicy) -> Iterator[SchedulerNode]:
        """Every node with room, in ``policy``'s order of preference (lazily)."""
        buckets = self._buckets_from(vcores)
        reverse = policy is PlacementPolicy.SPREAD
        streams = [b.irange(minimum=(memory_mb,), reverse=reverse) for b in buckets]
        for entry in heapq.merge(*streams, key=_rank, reverse=reverse):
            yield entry[2]

    def largest(self) -> SchedulerNode | None:
        """The node with the most free memory (then the most free cores)."""
        best: _Entry | None = None
        best_vcores = -1
        for vcores, bucket in self._buckets.items():
            top = bucket[-1]
            if best is None or (top[0], vcores) > (best[0], best_vcores):
                best, best_vcores = top, vcores
        return None if best is None else best[2]


_EMPTY = FreeSpaceIndex()  # never filled: what ``partition`` answers for a label no node has


class NodeDirectory:
    """Every schedulable node, by id and host, with the free-space indexes kept in step."""

    def __init__(self) -> None:
        self.by_id: dict[NodeId, SchedulerNode] = {}
        self.by_host: dict[str, list[SchedulerNode]] = {}
        self.everywhere = FreeSpaceIndex()
        self.racks: dict[str, FreeSpaceIndex] = {}
        self.partitions: dict[str, FreeSpaceIndex] = {}  # by node label
        self.partition_shapes: dict[str, Counter[Resource]] = {}  # capabilities of nodes not leaving, by label
        self.total_mem = 0
        self.total_vcores = 0
        self.used_mem = 0  # held by containers, over all nodes
        self.used_vcores = 0
        self.shapes: Counter[Resource] = Counter()  # every node's capability: "can this ever fit?"
        self._next_order = 0

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, node_id: NodeId, rack: str, capability: Resource, label: str,
            record: NodeRecord | None) -> SchedulerNode:
        node = SchedulerNode(node_id, rack, capability, label, self._next_order, record)
        self._next_order += 1
        self.by_id[node_id] = node
        self.by_host.setdefault(node.host, []).append(node)
        self._file(node)
        self.total_mem += capability.memory_mb
        self.total_vcores += capability.vcores
        self._count_shape(node)
        return node

    def remove(self, node: SchedulerNode) -> None:
        del self.by_id[node.node_id]
        same_host = self.by_host[node.host]
        same_host.remove(node)
        if not same_host:
            del self.by_host[node.host]
        self._unfile(node)
        if node.rack in self.racks and not self.racks[node.rack]:
            del self.racks[node.rack]
        self._drop_if_empty(node.label)
        self.total_mem -= node.capability.memory_mb
        self.total_vcores -= node.capability.vcores
        used = node.used
        self.used_mem -= used.memory_mb
        self.used_vcores -= used.vcores
        self._forget_shape(node)

    def drain(self, node_id: NodeId) -> bool:
        """A DECOMMISSIONING node takes no new containers: out of every free-space index (and
        ``fits`` says no), while its containers run on and release their room as they end; and out
        of its partition's shapes, so an AM that waits for a static node does not wait for it (the
        cluster's ``shapes`` keep it: an ask only it could hold waits for a node of its size rather
        than being refused).  False if the node is not in the scheduler."""
        node = self.by_id.get(node_id)
        if node is None or node.draining:
            return node is not None
        self._unfile(node)
        if not self.racks.get(node.rack):
            self.racks.pop(node.rack, None)
        self._drop_if_empty(node.label)
        self._forget_partition_shape(node)
        node.draining = True
        return True

    def relabel(self, node: SchedulerNode, label: str) -> None:
        """Move ``node`` to the partition of ``label`` (its containers stay where they are)."""
        if label == node.label:
            return
        self._unfile(node)
        self._drop_if_empty(node.label)
        self._forget_shape(node)
        node.label = label
        self._file(node)
        self._count_shape(node)

    def resize(self, node_id: NodeId, capability: Resource, offering: bool = True) -> bool:
        """The node's total resource changed (its contributor's caps): what is free moves by the
        difference, its containers stay (free may go below zero until enough of them end, and
        nothing new fits meanwhile); ``offering`` False (outside its schedule): the node leaves the
        free-space indexes (nothing is placed on it; it keeps its containers, its totals and shapes)
        until it offers again.  False if nothing changed or the node is not in the scheduler."""
        node = self.by_id.get(node_id)
        if node is None or (capability == node.capability and offering != node.withheld):
            return False
        self._unfile(node)
        node.withheld = not offering
        self._forget_shape(node)
        delta_mem, delta_vcores = capability.memory_mb - node.capability.memory_mb, capability.vcores - node.capability.vcores
        self.total_mem += delta_mem
        self.total_vcores += delta_vcores
        node.free_mem += delta_mem
        node.free_vcores += delta_vcores
        node.capability = capability
        self._file(node)
        self._count_shape(node)
        return True

    def partition(self, label: str) -> FreeSpaceIndex:
        """The nodes labelled ``label`` (an empty index when there are none)."""
        return self.partitions.get(label) or _EMPTY

    def find_outside(self, label: str, memory_mb: int, vcores: int, policy: PlacementPolicy,
                     exclude: Exclude | None = None) -> SchedulerNode | None:
        """What ``everywhere.find`` answers with the nodes labelled ``label`` left out (one query per
        other partition, no scan of ``label``'s nodes)."""
        best: SchedulerNode | None = None
        for other, index in self.partitions.items():
            if other == label:
                continue
            node = index.find(memory_mb, vcores, policy, exclude)
            if node is None:
                continue
            if best is None:
                best = node
            elif policy is PlacementPolicy.SPREAD:  # most free memory, then the node added first
                if (node.free_mem, -node.order) > (best.free_mem, -best.order):
                    best = node
            elif (node.free_mem, -node.order) < (best.free_mem, -best.order):  # PACK: least, then the later
                best = node
        return best

    def _count_shape(self, node: SchedulerNode) -> None:
        self.shapes[node.capability] += 1
        if not node.draining:
            self.partition_shapes.setdefault(node.label, Counter())[node.capability] += 1

    def _forget_shape(self, node: SchedulerNode) -> None:
        self.shapes[node.capability] -= 1
        if not self.shapes[node.capability]:
            del self.shapes[node.capability]
        self._forget_partition_shape(node)

    def _forget_partition_shape(self, node: SchedulerNode) -> None:
        if node.draining:
            return
        shapes = self.partition_shapes[node.label]
        shapes[node.capability] -= 1
        if not shapes[node.capability]:
            del shapes[node.capability]
        if not shapes:
            del self.partition_shapes[node.label]

    def _file(self, node: SchedulerNode) -> None:
        if not node.placeable:
            return
        self.everywhere.add(node)
        rack = self.racks.get(node.rack)
        if rack is None:
            rack = self.racks[node.rack] = FreeSpaceIndex()
        rack.add(node)
        partition = self.partitions.get(node.label)
        if partition is None:
            partition = self.partitions[node.label] = FreeSpaceIndex()
        partition.add(node)

    def _unfile(self, node: SchedulerNode) -> None:
        if not node.placeable:
            return
        self.everywhere.remove(node)
        self.racks[node.rack].remove(node)
        self.partitions[node.label].remove(node)

    def _drop_if_empty(self, label: str) -> None:
        if label in self.partitions and not self.partitions[label]:
            del self.partitions[label]

    def change_free(self, node: SchedulerNode, memory_mb: int, vcores: int) -> None:
        """Add (or, negative, take) free space on ``node``, moving it in every index."""
        self._unfile(node)
        node.free_mem += memory_mb
        node.free_vcores += vcores
        self.used_mem -= memory_mb
        self.used_vcores -= vcores
        self._file(node)
        record = node.record
        if record is not None:
            record.used = node.used
            record.num_containers = len(node.containers)

    @property
    def total(self) -> Resource:
        return Resource(self.total_mem, self.total_vcores)

    def used(self) -> Resource:
        """Resources held by containers on all nodes."""
        return Resource(self.used_mem, self.used_vcores)
