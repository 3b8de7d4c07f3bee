"""What the RM asks of nodes in their next heartbeat answers: containers to kill and
finished applications to clean up (YARN's ``containersToCleanup`` and
``applicationsToCleanup``), and which nodes may then aggregate an application's logs.

``NodeCleanup`` only records; ``ClusterScheduling`` decides what goes in, and the
node tracker takes a node's share (``take``) when it answers that node.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict

from cortex_rm.yarn.ids import ApplicationId, ContainerId, NodeId

#: How many (application, node) log aggregations may wait to be taken; the oldest are
#: forgotten beyond it (a node that never aggregates must not grow the RM's memory).
MAX_PENDING_AGGREGATIONS = 100_000


class NodeCleanup:
    """Containers to kill and applications to clean up, per node (see the module docstring)."""

    def __init__(self) -> None:
        self._kill: dict[NodeId, set[ContainerId]] = defaultdict(set)
        self._app_nodes: dict[ApplicationId, set[NodeId]] = defaultdict(set)
        self._cleanup_apps: dict[NodeId, set[ApplicationId]] = defaultdict(set)
        # (application, node) pairs told to clean up, so allowed to aggregate; oldest first (bounded)
        self._may_aggregate: OrderedDict[tuple[ApplicationId, NodeId], None] = OrderedDict()

    def kill(self, node_id: NodeId, container_id: ContainerId) -> None:
        """``node_id`` must stop ``container_id``."""
        self._kill[node_id].add(container_id)

    def ran_on(self, app_id: ApplicationId, node_id: NodeId) -> None:
        """A container of ``app_id`` went to ``node_id``: the node cleans up after the application."""
        self._app_nodes[app_id].add(node_id)

    def app_finished(self, app_id: ApplicationId) -> None:
        """``app_id`` ended: every node that ran it cleans it up."""
        for node_id in self._app_nodes.pop(app_id, set()):
            self._cleanup_apps[node_id].add(app_id)

    def clean_app_on(self, node_id: NodeId, app_id: ApplicationId) -> None:
        """``node_id`` still holds something of the ended ``app_id``: it cleans it up."""
        self._cleanup_apps[node_id].add(app_id)

    def node_lost(self, node_id: NodeId) -> None:
        """A lost node is told nothing more (if it comes back, it registers afresh)."""
        self._kill.pop(node_id, None)
        self._cleanup_apps.pop(node_id, None)

    def take(self, node_id: NodeId) -> tuple[tuple[ContainerId, ...], tuple[ApplicationId, ...]]:
        """What ``node_id``'s next answer carries (then forgotten); its applications may aggregate."""
        containers = tuple(sorted(self._kill.pop(node_id, ())))
        apps = tuple(sorted(self._cleanup_apps.pop(node_id, ())))
        for app_id in apps:
            self._may_aggregate[(app_id, node_id)] = None
        while len(self._may_aggregate) > MAX_PENDING_AGGREGATIONS:
            self._may_aggregate.popitem(last=False)
        return containers, apps

    def may_aggregate(self, app_id: ApplicationId, node_id: NodeId) -> bool:
        """Whether ``node_id`` may aggregate ``app_id``'s logs: it ran containers of the
        application and was told to clean it up (again after a failed try: it writes only its
        own file), so no node writes logs for an application it never ran."""
        return (app_id, node_id) in self._may_aggregate
