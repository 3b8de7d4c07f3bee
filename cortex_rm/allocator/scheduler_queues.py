"""What each queue uses, and the capacity rules the allocation pass applies to it.

Every queue of the ``QueueTree`` (parents too) has a ``SchedulerQueue`` with the
resources its containers hold.  With ``T`` the cluster's total (the sum of the
schedulable nodes' capabilities), a queue's

* **guaranteed** share is ``absolute_capacity * T`` -- what it gets when every queue
  wants more than it has;
* **limit** is ``absolute_maximum_capacity * T`` (rounded down) -- it never grows past
  it, even on an idle cluster; a container is refused when the queue *or any
  ancestor* would exceed its limit in memory or in vcores;
* **share** is its dominant used/guaranteed ratio, ``max(used_mem / guaranteed_mem,
  used_vcores / guaranteed_vcores)``.  The pass serves leaves in increasing share,
  so queues below their guarantee go first (a queue with no guarantee sorts last).

A leaf's ApplicationMasters together may use at most ``max_am_share`` of its
guaranteed share (YARN's ``maximum-am-resource-percent``), but a leaf running no
AM may always start one, so a small queue is never locked out.

A leaf also holds its attempts that have outstanding asks (``active``), in FIFO
order: higher application priority first, then earlier submission.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sortedcontainers import SortedList

from cortex_rm.allocator.queues import Queue, QueueTree
from cortex_rm.yarn.resources import Resource

if TYPE_CHECKING:
    pass


def _floor(fraction: float, amount: int) -> int:
    # a tolerance so that 0.3 * 10000 (2999.9999999999995) counts as 3000
    return math.floor(fraction * amount + 1e-6)


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


class SchedulerQueue:
    """One queue's usage and limits."""

    def __init__(self, queue: Queue, parent: SchedulerQueue | None) -> None:
        self.queue = queue
        self.path = queue.path
        self.parent = parent
        self.absolute_capacity = queue.absolute_capacity
        self.absolute_maximum_capacity = queue.absolute_maximum_capacity
        self.used_mem = 0
        self.used_vcores = 0
        self.am_used_mem = 0
        self.am_used_vcores = 0
        self.num_ams = 0
        self._limit_cache = (-1, -1, 0, 0)  # (total memory, total vcores, limit memory, limit vcores)
        # leaves only: attempts with outstanding asks, FIFO (see SchedulerAttempt.fifo_key)
        self.active: SortedList = SortedList(key=lambda a: a.fifo_key)
        chain = []
        q: SchedulerQueue | None = self
        while q is not None:
            chain.append(q)
            q = q.parent
        self.chain: tuple[SchedulerQueue, ...] = tuple(chain)  # self, parent, ..., root

    @property
    def is_leaf(self) -> bool:
        return self.queue.is_leaf

    @property
    def used(self) -> Resource:
        return Resource(self.used_mem, self.used_vcores)

    @property
    def am_used(self) -> Resource:
        return Resource(self.am_used_mem, self.am_used_vcores)

    def limit(self, total: Resource) -> Resource:
        """The most this queue may hold (its absolute maximum capacity of ``total``)."""
        f = self.absolute_maximum_capacity
        return Resource(_floor(f, total.memory_mb), _floor(f, total.vcores))

    def guaranteed(self, total: Resource) -> Resource:
        f = self.absolute_capacity
        return Resource(_floor(f, total.memory_mb), _floor(f, total.vcores))

    def share(self, total_mem: int, total_vcores: int) -> float:
        """Dominant used/guaranteed ratio; infinite for a queue with no guarantee that uses something."""
        g_mem = self.absolute_capacity * total_mem
        g_vc = self.absolute_capacity * total_vcores
        s_mem = self.used_mem / g_mem if g_mem > 0 else (math.inf if self.used_mem else 0.0)
        s_vc = self.used_vcores / g_vc if g_vc > 0 else (math.inf if self.used_vcores else 0.0)
        return max(s_mem, s_vc)

    def limit_values(self, total_mem: int, total_vcores: int) -> tuple[int, int]:
        """``limit`` as (memory, vcores), remembered for the last cluster total (passes ask it often)."""
        cached = self._limit_cache
        if cached[0] != total_mem or cached[1] != total_vcores:
            f = self.absolute_maximum_capacity
            cached = self._limit_cache = (total_mem, total_vcores, _floor(f, total_mem), _floor(f, total_vcores))
        return cached[2], cached[3]

    def blocking_queue(self, memory_mb: int, vcores: int, total_mem: int, total_vcores: int) -> SchedulerQueue | None:
        """The first queue from this one up to the root whose limit ``memory_mb``/``vcores`` more would pass."""
        for q in self.chain:
            limit_mem, limit_vcores = q.limit_values(total_mem, total_vcores)
            if q.used_mem + memory_mb > limit_mem or q.used_vcores + vcores > limit_vcores:
                return q
        return None

    def room(self, total_mem: int, total_vcores: int) -> tuple[int, int]:
        """What the tightest limit from this queue up to the root still allows, as (memory, vcores)."""
        mem = vcores = 1 << 62
        for q in self.chain:
            limit_mem, limit_vcores = q.limit_values(total_mem, total_vcores)
            mem = min(mem, limit_mem - q.used_mem)
            vcores = min(vcores, limit_vcores - q.used_vcores)
        return mem, vcores

    def am_limit(self, total: Resource, max_am_share: float) -> Resource:
        """What this leaf's ApplicationMasters may hold together."""
        g = self.guaranteed(total)
        return Resource(_floor(max_am_share, g.memory_mb), max(1, _floor(max_am_share, g.vcores)))

    def am_allowed(self, am: Resource, total: Resource, max_am_share: float) -> bool:
        """Whether one more AM of ``am`` fits under the AM limit (always, if the leaf runs none)."""
        if self.num_ams == 0:
            return True
        limit = self.am_limit(total, max_am_share)
        return (self.am_used_mem + am.memory_mb <= limit.memory_mb
                and self.am_used_vcores + am.vcores <= limit.vcores)

    def headroom(self, total: Resource, cluster_free: Resource) -> Resource:
        """What this queue could still get: the tightest limit up the tree, and what is free."""
        mem, vcores = cluster_free.memory_mb, cluster_free.vcores
        for q in self.chain:
            lim = q.limit(total)
            mem = min(mem, lim.memory_mb - q.used_mem)
            vcores = min(vcores, lim.vcores - q.used_vcores)
        return Resource(max(0, mem), max(0, vcores))

    def add_container(self, resource: Resource, am: bool) -> None:
        """Count a container against this leaf and its ancestors."""
        for q in self.chain:
            q.used_mem += resource.memory_mb
            q.used_vcores += resource.vcores
        if am:
            self.am_used_mem += resource.memory_mb
            self.am_used_vcores += resource.vcores
            self.num_ams += 1

    def remove_container(self, resource: Resource, am: bool) -> None:
        """Stop counting a container that ``add_container`` counted."""
        for q in self.chain:
            q.used_mem -= resource.memory_mb
            q.used_vcores -= resource.vcores
        if am:
            self.am_used_mem -= resource.memory_mb
            self.am_used_vcores -= resource.vcores
            self.num_ams -= 1

    def __repr__(self) -> str:
        return f"SchedulerQueue({self.path}, used {self.used})"


class SchedulerQueues:
    """A ``SchedulerQueue`` for every queue of the tree."""

    def __init__(self, tree: QueueTree) -> None:
        self.tree = tree
        self.by_path: dict[str, SchedulerQueue] = {}
        for queue in tree:  # parents come before their children
            parent = self.by_path[queue.parent.path] if queue.parent is not None else None
            self.by_path[queue.path] = SchedulerQueue(queue, parent)
        self.leaves = [q for q in self.by_path.values() if q.is_leaf]

    def leaf(self, name: str) -> SchedulerQueue:
        """The leaf for a submission's queue name (short or full), with QueueTree's rules and errors."""
        return self.by_path[self.tree.leaf_for_submission(name).path]

    def get(self, path: str) -> SchedulerQueue:
        return self.by_path[self.tree.find(path).path]

    def __iter__(self) -> Iterator[SchedulerQueue]:
        return iter(self.by_path.values())
