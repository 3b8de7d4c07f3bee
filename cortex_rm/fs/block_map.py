"""Which node holds which replica, and what each node must copy or delete (HDFS's BlockManager, small).

The NameNode tells the map which blocks files have and how many replicas each
wants; the nodes tell it what they hold (a full report after each new
connection, changes otherwise, and the replicas a write pipeline stored).  On
every report the map answers that node's commands:

* **deletes**: replicas of deleted files, replicas whose length or checksum is not
  the block's (corrupt), extra replicas of over-replicated blocks, and orphans
  (ids no file has) older than ``orphan_grace_ms`` — younger ones may belong to
  a write whose commit is on its way, and are deleted when their grace ends if no
  file has them by then.  A replica its node is to delete does not count, and an
  extra replica's delete not yet sent is withdrawn if the block has lost replicas
  since (so the last replica is never deleted as extra);
* **fetches**: for under-replicated blocks (live valid replicas plus fetches in
  flight below ``min(expected, live nodes)``), the reporting node is asked to copy
  the block from its live holders, at most ``max_fetches_per_report`` new orders a
  time, blocks with the fewest live replicas first, never a block the node is told
  to delete in the same answer.  A fetch counts as a replica until the node reports
  the block or ``pending_timeout_ms`` passes.

A node's replicas count only while it is live: from its first full report after
``node_up`` until ``node_lost``.  A decommissioning node (``node_decommissioning``,
HDFS's DECOMMISSION_INPROGRESS) is live but its replicas do not count: its blocks are
copied to other nodes (it is still a source to copy and read from, after the others),
it gets no fetches and is no write target, and ``decommission_pending`` names the
blocks it holds that have no replica elsewhere yet.  Only blocks whose state changed are looked at
(``_attention``), so a report costs what changed, not the whole map; blocks held
back by the number of live nodes (``_capped``) are looked at again when a node
becomes live.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from cortex_rm.fs.errors import NotEnoughDataNodes
from cortex_rm.fs.model import BlockRef


@dataclass(frozen=True)
class DataNode:
    """A node of the file system: its YARN NodeId (``host:port``) and the web address its blocks are served on."""

    node_id: str
    http_address: str


@dataclass(frozen=True)
class ReportedBlock:
    """A replica as its node reports it (``age_ms``: how long ago the node finished writing it)."""

    block_id: str
    length: int
    checksum: str
    age_ms: int


@dataclass(frozen=True)
class FetchOrder:
    """Copy this block from one of these holders."""

    block_id: str
    length: int
    checksum: str
    sources: tuple[DataNode, ...]


@dataclass(frozen=True)
class NodeCommands:
    delete: tuple[str, ...] = ()
    fetch: tuple[FetchOrder, ...] = ()
    full_report_wanted: bool = False


class BlockMap:
    """Replica locations and the replication plan (see the module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        rng: random.Random,
        *,
        pending_timeout_ms: int = 300_000,
        orphan_grace_ms: int = 600_000,
        max_fetches_per_report: int = 4,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.pending_timeout_s = pending_timeout_ms / 1000
        self.orphan_grace_ms = orphan_grace_ms
        self.max_fetches_per_report = max_fetches_per_report
        self._blocks: dict[str, BlockRef] = {}
        self._expected: dict[str, int] = {}
        self._holders: dict[str, set[str]] = {}  # block -> live nodes with a valid replica
        self._node_blocks: dict[str, set[str]] = {}  # live node -> its valid replicas
        self._nodes: dict[str, DataNode] = {}  # every node that is up
        self._live: set[str] = set()  # up, and sent its full report since
        self._pending: dict[str, dict[str, float]] = {}  # block -> target node -> expiry (s)
        self._deletes: dict[str, set[str]] = {}  # node -> replicas it must delete
        self._excess: dict[str, set[str]] = {}  # node -> its deletes of extra (valid) replicas, not yet sent
        self._young_orphans: dict[str, dict[str, float]] = {}  # node -> unknown replica -> end of grace (s)
        self._attention: set[str] = set()
        self._capped: set[str] = set()  # fewer replicas than expected only because there are few live nodes
        self._preferred: frozenset[str] = frozenset()  # static nodes: new replicas go there first, extra ones leave others
        self.free: dict[str, int] = {}  # node -> room for blocks it last reported (its disk cap's, or its disk's)
        self._decommissioning: set[str] = set()  # live, but their replicas do not count: copied elsewhere

    def prefer(self, nodes: Iterable[str]) -> None:
        """Nodes likely to stay up (the ledger's static class): write pipelines take them first
        (after the writer's own node), and extra replicas are deleted from the others first."""
        self._preferred = frozenset(nodes)

    # -- the namespace's side

    def add_blocks(self, blocks: Iterable[BlockRef], replication: int) -> None:
        """A committed file's blocks, and the replicas each wants."""
        for block in blocks:
            self._blocks[block.block_id] = block
            self._expected[block.block_id] = replication
            self._holders.setdefault(block.block_id, set())
            self._attention.add(block.block_id)

    def set_replication(self, block_ids: Iterable[str], replication: int) -> None:
        for block_id in block_ids:
            if block_id in self._blocks:
                self._expected[block_id] = replication
                self._attention.add(block_id)

    def remove_blocks(self, block_ids: Iterable[str]) -> None:
        """Blocks no file has any more: every holder deletes its replica."""
        for block_id in block_ids:
            for node_id in self._holders.pop(block_id, set()):
                self._node_blocks.get(node_id, set()).discard(block_id)
                self._deletes.setdefault(node_id, set()).add(block_id)
            self._blocks.pop(block_id, None)
            self._expected.pop(block_id, None)
            self._pending.pop(block_id, None)
            self._attention.discard(block_id)
            self._capped.discard(block_id)

    # -- the nodes' side

    def node_up(self, node: DataNode) -> None:
        """A node is registered and RUNNING (again): its replicas count after its next full report."""
        self._nodes[node.node_id] = node

    def node_registered(self, node_id: str) -> None:
        """A node registered (again: restarted, or reconnected): it is no write target until its next full
        report, whose answer carries the keys it checks tickets with (its replicas count again from it)."""
        self._live.discard(node_id)
        self._stop_decommissioning(node_id)

    def node_decommissioning(self, node_id: str) -> None:
        """``node_id`` leaves: its replicas stop counting (so they are copied elsewhere), it stays a source."""
        if node_id in self._decommissioning:
            return
        self._decommissioning.add(node_id)
        self._attention |= self._node_blocks.get(node_id, set())
        self._attention |= self._capped  # one node fewer to count on: the capped may want a copy now
        self._capped.clear()

    def _stop_decommissioning(self, node_id: str) -> None:
        if node_id in self._decommissioning:
            self._decommissioning.discard(node_id)
            self._attention |= self._node_blocks.get(node_id, set())

    def report_awaited(self, node_id: str) -> bool:
        """Whether ``node_id`` has not sent its full report since it was up or registered here (an RM
        that took over knows nothing of its replicas until then): a leave must wait for it."""
        return self.needs_full_report(node_id) or node_id not in self._live

    def decommission_pending(self, node_id: str) -> list[str]:
        """The blocks ``node_id`` holds that do not yet have the replicas they want elsewhere (at least
        one), so it cannot leave without losing them; sorted."""
        return sorted(b for b in self._node_blocks.get(node_id, ()) if len(self._counted(b)) < max(1, self._wanted(b)))

    def _counted(self, block_id: str) -> set[str]:
        """The holders whose replica counts (not decommissioning)."""
        return self._holders[block_id] - self._decommissioning

    def node_lost(self, node_id: str) -> None:
        """LOST, decommissioned or gone: its replicas stop counting, its fetches are cancelled."""
        self._nodes.pop(node_id, None)
        self.free.pop(node_id, None)
        self._live.discard(node_id)
        self._deletes.pop(node_id, None)
        self._excess.pop(node_id, None)
        self._young_orphans.pop(node_id, None)
        self._decommissioning.discard(node_id)
        self._drop_holder_of_all(node_id)
        for targets in self._pending.values():
            targets.pop(node_id, None)

    def _drop_holder_of_all(self, node_id: str) -> None:
        for block_id in self._node_blocks.pop(node_id, set()):
            self._holders.get(block_id, set()).discard(node_id)
            self._attention.add(block_id)

    def full_report(self, node_id: str, blocks: Sequence[ReportedBlock]) -> None:
        """Everything ``node_id`` holds, replacing what was known; ignored from a node that is not up."""
        if node_id not in self._nodes:
            return
        self._drop_holder_of_all(node_id)
        self._node_blocks[node_id] = set()
        self._young_orphans.pop(node_id, None)  # the report names the young orphans again
        if node_id in self._excess:  # an extra replica no longer reported is gone: nothing to withdraw
            self._excess[node_id] &= {block.block_id for block in blocks}
        if node_id not in self._live:
            self._live.add(node_id)
            self._attention |= self._capped  # one more live node: they may have another replica now
            self._capped.clear()
        for block in blocks:
            self._reported(node_id, block)

    def incremental_report(self, node_id: str, added: Sequence[ReportedBlock], removed: Sequence[str]) -> None:
        """What changed on ``node_id``; ignored from a node that owes a full report."""
        if node_id not in self._live:
            return
        for block in added:
            self._reported(node_id, block)
        for block_id in removed:
            self._node_blocks[node_id].discard(block_id)
            self._excess.get(node_id, set()).discard(block_id)
            self._young_orphans.get(node_id, {}).pop(block_id, None)
            if block_id in self._holders:
                self._holders[block_id].discard(node_id)
                self._attention.add(block_id)

    def replica_written(self, node_id: str, block: BlockRef) -> None:
        """A write pipeline stored ``block`` on ``node_id`` (counts at once if the node is live)."""
        if node_id in self._live:
            self._reported(node_id, ReportedBlock(block.block_id, block.length, block.checksum, 0))

    def _reported(self, node_id: str, reported: ReportedBlock) -> None:
        known = self._blocks.get(reported.block_id)
        if known is None:
            if reported.age_ms >= self.orphan_grace_ms:
                self._deletes.setdefault(node_id, set()).add(reported.block_id)
            else:  # its commit may be on its way: looked at again when its grace ends (``commands``)
                grace_end = self.clock.seconds() + (self.orphan_grace_ms - reported.age_ms) / 1000
                self._young_orphans.setdefault(node_id, {})[reported.block_id] = grace_end
            return
        self._pending.get(reported.block_id, {}).pop(node_id, None)
        self._attention.add(reported.block_id)
        corrupt = (reported.length, reported.checksum) != (known.length, known.checksum)
        if corrupt:
            self._excess.get(node_id, set()).discard(reported.block_id)  # never withdraw this delete
        if corrupt or reported.block_id in self._deletes.get(node_id, ()):
            # corrupt, or to be deleted on this node anyway: it must not count
            self._deletes.setdefault(node_id, set()).add(reported.block_id)
            self._holders[reported.block_id].discard(node_id)
            self._node_blocks[node_id].discard(reported.block_id)
            return
        self._holders[reported.block_id].add(node_id)
        self._node_blocks[node_id].add(reported.block_id)

    # -- commands

    def needs_full_report(self, node_id: str) -> bool:
        return node_id in self._nodes and node_id not in self._live

    def commands(self, node_id: str) -> NodeCommands:
        """What ``node_id`` must delete and fetch now (called on each of its reports)."""
        now = self.clock.seconds()
        self._expire_pending(now)
        self._withdraw_needed_excess(node_id)
        self._delete_expired_orphans(node_id, now)
        fetches = self._plan(node_id, now) if node_id in self._live and node_id not in self._decommissioning else ()
        deletes = tuple(sorted(self._deletes.pop(node_id, set())))
        return NodeCommands(deletes, fetches, self.needs_full_report(node_id))

    def _withdraw_needed_excess(self, node_id: str) -> None:
        """Before ``node_id`` hears of its deletes of extra replicas: keep those whose block has lost
        replicas since (a holder lost, a replica removed), so the block keeps what it has."""
        for block_id in sorted(self._excess.pop(node_id, set())):
            if node_id not in self._live or block_id not in self._blocks:
                continue
            if len(self._counted(block_id)) < self._wanted(block_id):
                self._deletes.get(node_id, set()).discard(block_id)
                self._holders[block_id].add(node_id)
                self._node_blocks[node_id].add(block_id)
                self._attention.add(block_id)

    def _delete_expired_orphans(self, node_id: str, now: float) -> None:
        orphans = self._young_orphans.get(node_id, {})
        for block_id, grace_end in list(orphans.items()):
            if block_id in self._blocks:
                del orphans[block_id]  # its file was committed
            elif grace_end <= now:
                del orphans[block_id]
                self._deletes.setdefault(node_id, set()).add(block_id)

    def _expire_pending(self, now: float) -> None:
        for block_id, targets in list(self._pending.items()):
            for target, expiry in list(targets.items()):
                if expiry <= now:
                    del targets[target]
                    self._attention.add(block_id)
            if not targets:
                del self._pending[block_id]

    def _wanted(self, block_id: str) -> int:
        return min(self._expected[block_id], len(self._live - self._decommissioning))

    def _plan(self, node_id: str, now: float) -> tuple[FetchOrder, ...]:
        candidates: list[tuple[int, str]] = []
        deleting = self._deletes.get(node_id, set())
        for block_id in sorted(self._attention):  # sorted: a seeded rng gives the same plan on every run
            if block_id not in self._blocks:
                self._attention.discard(block_id)
                continue
            holders = self._counted(block_id)
            pending = self._pending.get(block_id, {})
            wanted = self._wanted(block_id)
            if len(holders) > wanted:
                self._trim(block_id, len(holders) - wanted)
                continue
            if len(holders) + len(pending) >= wanted:
                if len(holders) >= wanted:
                    self._attention.discard(block_id)
                    if wanted < self._expected[block_id]:
                        self._capped.add(block_id)
                continue
            if not self._holders[block_id]:
                continue  # missing: nothing to copy from (kept in view until a replica reappears)
            if node_id not in self._holders[block_id] and node_id not in pending and block_id not in deleting:
                candidates.append((len(holders), block_id))
        orders = []
        room = self.free.get(node_id)  # (its disk cap's room: no copy it has no room for is ordered)
        for _, block_id in heapq.nsmallest(self.max_fetches_per_report, candidates):
            block = self._blocks[block_id]
            if room is not None:
                if block.length > room:
                    continue
                room -= block.length
            sources = self.locations(block_id)
            self._pending.setdefault(block_id, {})[node_id] = now + self.pending_timeout_s
            orders.append(FetchOrder(block_id, block.length, block.checksum, tuple(sources)))
        return tuple(orders)

    def _trim(self, block_id: str, extra: int) -> None:
        holders = sorted(self._counted(block_id))  # (a decommissioning node's replica goes with it)
        others = [n for n in holders if n not in self._preferred]
        doomed = self.rng.sample(others, min(extra, len(others)))
        preferred = [n for n in holders if n in self._preferred]
        doomed += self.rng.sample(preferred, extra - len(doomed))
        for node_id in doomed:
            self._holders[block_id].discard(node_id)
            self._node_blocks[node_id].discard(block_id)
            self._deletes.setdefault(node_id, set()).add(block_id)
            self._excess.setdefault(node_id, set()).add(block_id)

    # -- queries

    def locations(self, block_id: str) -> list[DataNode]:
        """The live nodes with a valid replica, in random order (reads spread over them); decommissioning
        ones last (they are about to go, as HDFS orders them)."""
        holders = sorted(self._holders.get(block_id, ()))
        staying = [self._nodes[n] for n in holders if n not in self._decommissioning]
        leaving = [self._nodes[n] for n in holders if n in self._decommissioning]
        self.rng.shuffle(staying)
        self.rng.shuffle(leaving)
        return staying + leaving

    def live_nodes(self) -> list[DataNode]:
        return [self._nodes[n] for n in sorted(self._live)]

    def choose_targets(self, count: int, *, writer: str | None = None, block_size: int = 0) -> list[DataNode]:
        """Up to ``count`` distinct live nodes for a write pipeline, the writer's own node first if live;
        nodes whose last report left less room than ``block_size`` are left out while others have it
        (if none has, they are chosen anyway: the first refuses the write, naming its disk cap)."""
        live = sorted(self._live - self._decommissioning)
        roomy = [n for n in live if self.free.get(n, block_size) >= block_size]
        live = roomy or live
        if not live:
            raise NotEnoughDataNodes(
                "no DataNode has reported to the NameNode yet; wait until the cluster's nodes have started"
            )
        first = [writer] if writer in live else []
        chosen = list(first)
        others = [n for n in live if n != writer]
        for group in ([n for n in others if n in self._preferred], [n for n in others if n not in self._preferred]):
            chosen += self.rng.sample(group, min(len(group), max(0, count - len(chosen))))
        return [self._nodes[n] for n in chosen[:count]]

    def under_replicated(self) -> int:
        return sum(
            1 for b in self._blocks if 0 < len(self._counted(b)) < self._wanted(b)
        )

    def missing(self) -> list[str]:
        return sorted(b for b in self._blocks if not self._holders[b])

    def holders_of(self, node_id: str) -> int:
        return len(self._node_blocks.get(node_id, ()))
