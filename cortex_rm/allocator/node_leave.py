"""The RM's side of a graceful leave: YARN's graceful decommission, driven by the node.

In YARN an administrator decommissions a node at the RM (``rmadmin -refreshNodes
-g``); here the contributor stops the machine, so the node starts it and says so in
its heartbeats (``NodeStatusReport.leave``, see ``container/node_leave.py``):

* ``DECOMMISSIONING``: the node goes RUNNING/UNHEALTHY -> DECOMMISSIONING (as
  RMNodeImpl's DecommissioningNodeTransition): the scheduler places nothing new on
  it, its containers go on, and the AMs hear of it in ``updated_nodes`` (the
  listener's ``node_decommissioning``);
* ``DRAINED``: nothing is left on the node.  Once the listener has nothing more to
  wait for (``waiting_for``: the file system's blocks it holds are replicated
  elsewhere), or ``max_wait_ms`` after the first DRAINED report (what was not done is
  logged), the node goes DECOMMISSIONING -> DECOMMISSIONED (not LOST), the
  listener's ``node_decommissioned`` forgets it, and the heartbeat's answer is
  SHUTDOWN with ``decommissioned``: the node may go.

A node that registers again is RUNNING (``NodeTable.register``), unless its
registration says it leaves (an RM failover, a RESYNC mid-leave): then it is
DECOMMISSIONING at once (``NodeTracker.register``).  A DECOMMISSIONING node that
falls silent is LOST as any other.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

from cortex_rm.allocator.nodes import NodeEvent, NodeRecord, NodeState, NodeTable
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeLeave

log = Logger()

#: How long a drained node waits at most for its blocks to be copied elsewhere.
DEFAULT_MAX_WAIT_MS = 120_000


class NodeLeaveListener(Protocol):
    """What the rest of the RM does when a node leaves gracefully."""

    def node_decommissioning(self, node: NodeRecord) -> None:
        """``node`` became DECOMMISSIONING: no new containers there; AMs are told."""

    def waiting_for(self, node: NodeRecord) -> str | None:
        """What the drained ``node`` must still wait for before it goes (None: nothing)."""

    def node_decommissioned(self, node: NodeRecord) -> None:
        """``node`` became DECOMMISSIONED: forget it (what it still had ends, not as lost)."""


class NoLeaveListener:
    """Nothing else to do or wait for (an RM without a scheduler or file system)."""

    def node_decommissioning(self, node: NodeRecord) -> None:
        pass

    def waiting_for(self, node: NodeRecord) -> str | None:
        return None

    def node_decommissioned(self, node: NodeRecord) -> None:
        pass


class NodeLeaves:
    """Applies the leave steps nodes report (see the module docstring)."""

    def __init__(
        self, nodes: NodeTable, listener: NodeLeaveListener | None = None, max_wait_ms: int = DEFAULT_MAX_WAIT_MS
    ) -> None:
        self.nodes = nodes
        self.listener: NodeLeaveListener = listener or NoLeaveListener()
        self.max_wait_ms = max_wait_ms
        self._drained_since: dict[NodeId, int] = {}

    def report(self, node: NodeRecord, leave: NodeLeave | None, now_ms: int) -> bool:
        """A fresh heartbeat from active ``node`` said ``leave``; True when the node is DECOMMISSIONED now."""
        if leave is None:
            self._drained_since.pop(node.node_id, None)
            return False
        if node.state is not NodeState.DECOMMISSIONING:
            before = node.state
            self.nodes.leave(node.node_id, NodeEvent.DECOMMISSION)
            log.info(
                "node {node_id} {old} -> DECOMMISSIONING: it leaves gracefully",
                node_id=str(node.node_id), old=before.name,
            )  # fmt: skip
            self.listener.node_decommissioning(node)
        if leave is not NodeLeave.DRAINED:
            return False
        since = self._drained_since.setdefault(node.node_id, now_ms)
        waiting = self.listener.waiting_for(node)
        if waiting is not None:
            if now_ms - since < self.max_wait_ms:
                return False
            log.warn(
                "node {node_id} decommissioned after {waited_ms} ms without: {waiting}",
                node_id=str(node.node_id), waited_ms=now_ms - since, waiting=waiting,
            )  # fmt: skip
        del self._drained_since[node.node_id]
        self.nodes.leave(node.node_id, NodeEvent.DECOMMISSIONED)
        log.info("node {node_id} DECOMMISSIONING -> DECOMMISSIONED", node_id=str(node.node_id))
        self.listener.node_decommissioned(node)
        return True

    def forget(self, node_id: NodeId) -> None:
        """``node_id`` registered again or was lost: a later leave starts afresh."""
        self._drained_since.pop(node_id, None)
