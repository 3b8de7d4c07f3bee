"""The static/volatile label of every node, kept where the RM's faces read it.

The ledger decides which ring members are static (``accounting.node_classes``);
the RM is told the whole set from time to time (``set_static``).  A node's label
is derived from the ring id of the member that registered it
(``NodeRecord.ring_id``): static if that id is in the last set, volatile otherwise
-- also a node of a member the ledger has not classed yet, or of none.  Each
label lives in two places, changed together: the node's ``NodeTable`` record
(node reports, ``getNodeToLabels``, REST) and the scheduler's partition of it
(placement).  A node that registers gets its label from the last set at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from cortex_rm.allocator.node_labels import label_of
from cortex_rm.allocator.nodes import NodeRecord
from cortex_rm.allocator.scheduler import CapacityScheduler

log = Logger()


class NodeClassLabels:
    """Labels the nodes of one scheduler's ``NodeTable`` from the set of static ring ids."""

    def __init__(self, scheduler: CapacityScheduler) -> None:
        self.scheduler = scheduler
        self.static_ring_ids: frozenset[int] = frozenset()

    def label(self, node: NodeRecord) -> None:
        """Give ``node`` its label by the last set (call before the scheduler takes it)."""
        node.labels = frozenset({label_of(node.ring_id, self.static_ring_ids)})

    def set_static(self, ring_ids: Iterable[int]) -> list[NodeRecord]:
        """``ring_ids`` are the static members now: relabel every node; the nodes whose label changed."""
        self.static_ring_ids = frozenset(ring_ids)
        changed = []
        for node in self.scheduler.node_table:
            label = label_of(node.ring_id, self.static_ring_ids)
            if node.labels == {label}:
                continue
            before = ",".join(sorted(node.labels)) or "none"
            node.labels = frozenset({label})
            self.scheduler.set_node_label(node.node_id, label)
            changed.append(node)
            log.info(
                "node {node_id} relabelled {old} -> {new}", node_id=str(node.node_id), old=before, new=label,
                ring_id=None if node.ring_id is None else f"{node.ring_id:040x}",
            )
        return changed
