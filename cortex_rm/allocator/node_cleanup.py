"""What the RM asks of nodes in their next heartbeat answers: containers to kill,
finished applications to clean up and completed containers the node may forget
(YARN's ``containersToCleanup``, ``applicationsToCleanup`` and
``containersToBeRemovedFromNM``), and which nodes may then aggregate an application's logs.

``NodeCleanup`` only records; ``ClusterScheduling`` decides what goes in, and the
node tracker takes a node's share (``take``) when it answers that node.  The answer
is stored and sent again to a node that resends its heartbeat (``node_tracker.py``),
so what was taken reaches the node unless the RM dies first; then the node lists its
kept completions to the next RM, whose AM pulls bring the removals again.

Removals (the node keeps an acknowledged completion until named, see
``container/kept_completions.py``): a completion handed to an AM in an allocate
response (``handed_to_am``) is removed once the AM calls again, which shows it got
that response (YARN's ``RMAppAttemptImpl.pullJustFinishedContainers``); the last batch
when its attempt ends.  A completion no AM will be handed (``completed_reported``: the
scheduler did not put it in an AM's completed list, e.g. the AM's own container, one
the RM ended before, one of an ended attempt) is removed in the next answer.  Nothing
is queued for a node that is LOST (``node_lost`` until ``node_back``): it may never
answer again, and if it comes back it lists what it kept, which is decided afresh; nor
does an application that ends later queue a cleanup for it (the node's registration
names what it still holds: ``clean_app_on``).  What is kept per node stays bounded as
nodes come and go: a lost node's queues are dropped, and at most ``MAX_GONE_NODES``
lost nodes are remembered (the oldest forgotten).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable
from typing import NamedTuple, TypeVar

from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import MAX_CONTAINERS

_Id = TypeVar("_Id", ContainerId, ApplicationId)

#: How many (application, node) log aggregations may wait to be taken; the oldest are
#: forgotten beyond it (a node that never aggregates must not grow the RM's memory).
MAX_PENDING_AGGREGATIONS = 100_000
#: How many LOST nodes are remembered as such (volunteers' machines come and go, some never back).
MAX_GONE_NODES = 10_000


class NodeOrders(NamedTuple):
    """What one heartbeat answer tells its node to do (``NodeCleanup.take``)."""

    containers_to_cleanup: tuple[ContainerId, ...] = ()
    applications_to_cleanup: tuple[ApplicationId, ...] = ()
    containers_to_remove: tuple[ContainerId, ...] = ()


class NodeCleanup:
    """Containers to kill and applications to clean up, per node (see the module docstring)."""

    def __init__(self) -> None:
        self._kill: dict[NodeId, set[ContainerId]] = defaultdict(set)
        self._app_nodes: dict[ApplicationId, set[NodeId]] = defaultdict(set)
        self._cleanup_apps: dict[NodeId, set[ApplicationId]] = defaultdict(set)
        # (application, node) pairs told to clean up, so allowed to aggregate; oldest first (bounded)
        self._may_aggregate: OrderedDict[tuple[ApplicationId, NodeId], None] = OrderedDict()
        self._remove: dict[NodeId, set[ContainerId]] = defaultdict(set)
        # per attempt: the completions of its last allocate response, until the AM calls again
        self._handed: dict[ApplicationAttemptId, list[tuple[NodeId, ContainerId]]] = {}
        self._handed_ids: set[ContainerId] = set()
        self._gone: OrderedDict[NodeId, None] = OrderedDict()  # LOST nodes, oldest first: nothing queued for them

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

    def remove(self, node_id: NodeId, container_id: ContainerId) -> None:
        """``node_id`` may forget the completed ``container_id``."""
        if node_id not in self._gone:
            self._remove[node_id].add(container_id)

    def handed_to_am(self, attempt_id: ApplicationAttemptId, completed: Iterable[tuple[NodeId, ContainerId]]) -> None:
        """An allocate call of ``attempt_id`` (so its AM got the previous response) hands it ``completed``
        ((node, container) pairs): the previous batch may go from its nodes, this one once the AM calls again."""
        self.attempt_ended(attempt_id)
        batch = list(completed)
        if batch:
            self._handed[attempt_id] = batch
            self._handed_ids.update(cid for _, cid in batch)

    def attempt_ended(self, attempt_id: ApplicationAttemptId) -> None:
        """No AM of ``attempt_id`` calls again: its last batch may go from its nodes."""
        for node_id, cid in self._handed.pop(attempt_id, ()):
            self._handed_ids.discard(cid)
            self.remove(node_id, cid)

    def completed_reported(
        self,
        node_id: NodeId,
        container_ids: Iterable[ContainerId],
        pending: Callable[[ApplicationAttemptId], Collection[ContainerId]],
    ) -> None:
        """``node_id`` reported these containers COMPLETE and the scheduler took note: each that is neither
        ``pending`` in its attempt's completed list (asked once per attempt) nor in its AM's last response is no
        AM's to get; the node may forget it."""
        by_attempt: dict[ApplicationAttemptId, Collection[ContainerId]] = {}
        for cid in container_ids:
            if cid in self._handed_ids:
                continue
            waiting = by_attempt.get(cid.attempt_id)
            if waiting is None:
                waiting = by_attempt[cid.attempt_id] = pending(cid.attempt_id)
            if cid not in waiting:
                self.remove(node_id, cid)

    def node_lost(self, node_id: NodeId) -> None:
        """A lost node is told nothing more (if it comes back, it registers afresh)."""
        self._kill.pop(node_id, None)
        self._cleanup_apps.pop(node_id, None)
        self._remove.pop(node_id, None)
        for nodes in self._app_nodes.values():  # (its applications' ends are not its business now)
            nodes.discard(node_id)
        self._gone[node_id] = None
        self._gone.move_to_end(node_id)
        while len(self._gone) > MAX_GONE_NODES:
            self._gone.popitem(last=False)

    def node_back(self, node_id: NodeId) -> None:
        """``node_id`` registered: it hears of removals again."""
        self._gone.pop(node_id, None)

    def take(self, node_id: NodeId) -> NodeOrders:
        """What ``node_id``'s next answer carries (then forgotten); its applications may aggregate."""
        containers = _at_most(self._kill, node_id, MAX_CONTAINERS)
        apps = _at_most(self._cleanup_apps, node_id, MAX_CONTAINERS)
        for app_id in apps:
            self._may_aggregate[(app_id, node_id)] = None
        while len(self._may_aggregate) > MAX_PENDING_AGGREGATIONS:
            self._may_aggregate.popitem(last=False)
        return NodeOrders(containers, apps, _at_most(self._remove, node_id, MAX_CONTAINERS))

    def may_aggregate(self, app_id: ApplicationId, node_id: NodeId) -> bool:
        """Whether ``node_id`` may aggregate ``app_id``'s logs: it ran containers of the
        application and was told to clean it up (again after a failed try: it writes only its
        own file), so no node writes logs for an application it never ran."""
        return (app_id, node_id) in self._may_aggregate


def _at_most(table: dict[NodeId, set[_Id]], node_id: NodeId, limit: int) -> tuple[_Id, ...]:
    """Up to ``limit`` of ``node_id``'s ids, taken from ``table`` (the rest wait for its next answers): an answer
    must stay within what a node decodes (``MAX_CONTAINERS`` ids a list), or the node could never take it."""
    ids = table.pop(node_id, set())
    if len(ids) <= limit:
        return tuple(sorted(ids))
    ordered = sorted(ids)
    table[node_id] = set(ordered[limit:])
    return tuple(ordered[:limit])
