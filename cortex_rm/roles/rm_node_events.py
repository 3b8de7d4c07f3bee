"""What the RM does when its node tracker hears from nodes: the tracker's listeners.

``NodeEvents`` hands each node event to the scheduler (containers), the NameNode
(replicas) and ``NodeUpdates`` (what AMs are told in ``updated_nodes``), for
registrations, reports, losses and health changes (``NodeTrackerListener``) and
graceful leaves (``NodeLeaveListener``, see ``allocator/node_leave.py``).
"""

from __future__ import annotations

from cortex_rm.allocator.cluster_scheduling import ClusterScheduling
from cortex_rm.allocator.node_cleanup import NodeOrders
from cortex_rm.allocator.node_updates import NodeUpdates
from cortex_rm.allocator.nodes import NodeRecord
from cortex_rm.fs.name_node import NameNode
from cortex_rm.yarn.resource_tracker import ContainerReport


class NodeEvents:
    """The node tracker's listener: the scheduler decides on containers, the NameNode forgets a lost
    node's replicas, and AMs hear of nodes that became unusable or leave."""

    def __init__(self, scheduling: ClusterScheduling, name_node: NameNode, updates: NodeUpdates | None = None) -> None:
        self.scheduling = scheduling
        self.name_node = name_node
        self.updates = updates if updates is not None else NodeUpdates()

    def node_registered(self, node: NodeRecord) -> None:
        self.scheduling.node_registered(node)
        self.name_node.blocks.node_registered(str(node.node_id))

    def containers_reported(self, node: NodeRecord, containers: tuple[ContainerReport, ...]) -> None:
        self.scheduling.containers_reported(node, containers)

    def node_lost(self, node: NodeRecord) -> None:
        self.scheduling.node_lost(node)
        self.name_node.blocks.node_lost(str(node.node_id))
        self.updates.changed(node)

    def node_health_changed(self, node: NodeRecord) -> None:
        self.scheduling.node_health_changed(node)  # an unhealthy node still stores blocks
        self.updates.changed(node)

    def node_resized(self, node: NodeRecord) -> None:
        if self.scheduling.scheduler.nodes.resize(node.node_id, node.capability, node.offering):  # (containers stay)
            self.scheduling.schedule_soon()

    def cleanup_for(self, node: NodeRecord) -> NodeOrders:
        return self.scheduling.cleanup_for(node)

    # -- graceful leave (NodeLeaveListener)

    def node_decommissioning(self, node: NodeRecord) -> None:
        """No new containers on ``node`` (its running ones go on); the AMs are told; its replicas stop
        counting, so its blocks are copied to other nodes."""
        self.scheduling.scheduler.nodes.drain(node.node_id)
        self.name_node.blocks.node_decommissioning(str(node.node_id))
        self.updates.changed(node)

    def waiting_for(self, node: NodeRecord) -> str | None:
        """The blocks of ``node`` that have no replica elsewhere yet, if any; or its first full block
        report since it registered (after an RM failover the new RM knows its replicas only from it)."""
        if self.name_node.blocks.report_awaited(str(node.node_id)):
            return "the node's first full block report"
        pending = self.name_node.blocks.decommission_pending(str(node.node_id))
        if not pending:
            return None
        shown = ", ".join(pending[:5]) + (", ..." if len(pending) > 5 else "")
        return f"{len(pending)} blocks not yet copied to other nodes ({shown})"

    def node_decommissioned(self, node: NodeRecord) -> None:
        """``node`` left: as a lost node it goes from the scheduler (what it still had there ends
        KILLED_BY_RESOURCEMANAGER: the scheduler reads the node's state) and from the block map."""
        self.node_lost(node)
