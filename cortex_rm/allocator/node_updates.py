"""Node changes the ApplicationMasters have not heard of yet: YARN's ``updatedNodes``.

YARN's RM tells every running application when a node becomes unusable or starts
decommissioning (NodesListManager's NODE_UNUSABLE / NODE_DECOMMISSIONING events);
each AM's next AllocateResponse carries the node's report.  Spark's YarnAllocator
reads them: with ``spark.decommission.enabled`` it decommissions the executors on
a DECOMMISSIONING host before the node goes.

``NodeUpdates`` is a bounded, numbered log of node reports (copies of the record
at the time of the change).  An AM session starts at the log's current number
(``cursor``) and takes, at each allocate, the latest report of each node that
changed since (``since``).  An AM that falls more than ``limit`` changes behind
misses the oldest ones, as an AM that registered after them would.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from cortex_rm.allocator.nodes import NodeRecord

DEFAULT_LIMIT = 1024


class NodeUpdates:
    """The numbered log of node changes AMs are told about."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._log: deque[tuple[int, NodeRecord]] = deque(maxlen=limit)
        self._last = 0

    def changed(self, node: NodeRecord) -> None:
        """``node`` changed state in a way AMs should hear of: log a copy of its record now."""
        self._last += 1
        self._log.append((self._last, replace(node)))

    def cursor(self) -> int:
        """The number of the latest change: a new session starts after it."""
        return self._last

    def since(self, cursor: int) -> tuple[list[NodeRecord], int]:
        """The latest report of every node changed after ``cursor``, and the new cursor."""
        latest: dict[object, NodeRecord] = {}
        for number, record in self._log:
            if number > cursor:
                latest[record.node_id] = record
        return list(latest.values()), self._last
