"""Completed containers reach their AM across an RM failover, and nodes forget them only after (issue 13).

The RM side is the RM as the role wires it (``tests/support/restartable_rm.py``: node
tracker, scheduling service, AM service, one state store, a Clock).  The node is the
real ``NodeStatusUpdater`` core, whose registrations and heartbeats go to the tracker
of whichever RM is active, and whose acknowledgements drop containers from what it
reports, as the NodeManager's container manager does.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.node_cleanup import MAX_GONE_NODES, NodeCleanup, NodeOrders
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.container.status_updater import (
    Action,
    ContainersAcknowledged,
    NodeStatusUpdater,
    SendHeartbeat,
    SendRegistration,
)
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import MAX_CONTAINERS, ContainerReport, NodeHealth, NodeRegistration, NodeStatusReport
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.errors import RemoteError
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from tests.support.restartable_rm import KEY, RM, completed, container_ids, running
from tests.support.rm_core import submitted

N1 = NodeId("10.0.0.1", 45454)


class Node:
    """A NodeManager's status updater talking to ``rm``'s tracker; ``reports`` is what its container
    manager would report (acknowledged completions leave it)."""

    def __init__(self, rm: RM, node_id: NodeId = N1) -> None:
        self.rm = rm
        self.reports: dict[ContainerId, ContainerReport] = {}
        registration = NodeRegistration(node_id, f"{node_id.host}:8042", "/default-rack", Resource(8192, 8), 1000)
        self.updater = NodeStatusUpdater(registration)
        self.updater.start()
        self.run(self.updater.connected(self.health()))

    def health(self) -> NodeHealth:
        return NodeHealth(containers=tuple(self.reports.values()))

    def run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendRegistration):
                answer = self.rm.tracker.register(action.registration, KEY)
                self.rm.clock.advance(0)
                self.run(self.updater.registered_with(answer))
            elif isinstance(action, SendHeartbeat):
                self.sent = action.status
                heartbeat_answer = self.rm.tracker.heartbeat(action.status, KEY)
                self.rm.clock.advance(0)
                self.answer = heartbeat_answer
                self.run(self.updater.answered(heartbeat_answer))
            elif isinstance(action, ContainersAcknowledged):
                for cid in action.container_ids:
                    self.reports.pop(cid, None)

    def beat(self) -> None:
        self.run(self.updater.heartbeat_due(self.health()))

    def runs(self, container: RMContainer) -> None:
        self.reports[container.container_id] = running(container)

    def ends(self, container: RMContainer, exit_status: int) -> None:
        self.reports[container.container_id] = completed(container, exit_status)


class Cluster:
    """One node (N1) and an application whose AM runs there and holds one executor.  ``removes``: the
    first RM names removable completions (False: it behaves as an RM before issue 13)."""

    def __init__(self, removes: bool = True) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStateStore()
        self.rm = RM(self.store, self.clock)
        self.rm.tracker.removes_completed_containers = removes
        self.node = Node(self.rm)
        submitted(self.rm.scheduling.table)
        self.clock.advance(0)
        (self.am,) = self.rm.launches
        self.attempt_id: ApplicationAttemptId = self.am.attempt_id
        self.node.runs(self.am)
        self.node.beat()
        self.rm.register_am(self.attempt_id)
        self.response_id = 0
        (executor_id,) = container_ids(self.allocate(executors=1))
        executor = self.rm.scheduling.scheduler.container(executor_id)
        assert executor is not None
        self.executor: RMContainer = executor
        self.node.runs(executor)
        self.node.beat()

    def allocate(self, executors: int = 0) -> ys.AllocateResponseProto:
        response = self.rm.allocate(self.attempt_id, self.response_id, executors)
        self.response_id = response.response_id
        return response

    def fail_over(self) -> None:
        """The active RM dies; the next one starts on the replicated state; the AM registers again."""
        self.rm.scheduling.stop()
        self.clock.advance(5)
        self.rm = self.node.rm = RM(self.store, self.clock)
        self.node.beat()  # RESYNC, then the registration with what the node reports and keeps
        with pytest.raises(RemoteError):
            self.rm.allocate(self.attempt_id, self.response_id)
        self.rm.register_am(self.attempt_id)
        self.response_id = 0


def completions(response: ys.AllocateResponseProto) -> list[tuple[ContainerId, int]]:
    statuses = response.completed_container_statuses
    return [(records.container_id_from_proto(s.container_id), s.exit_status) for s in statuses]


def test_a_completion_is_forgotten_by_its_node_once_the_am_called_again_after_getting_it() -> None:
    """Acknowledged by the RM: kept by the node.  Handed to the AM in an allocate response: still
    kept (the response may be lost).  The AM's next allocate shows it got it: the node's next
    answer names it, and the node forgets it; later answers name nothing."""
    cluster = Cluster()
    node, executor = cluster.node, cluster.executor
    node.ends(executor, 1)
    node.beat()
    assert executor.container_id not in node.reports and executor.container_id in node.updater.kept
    assert completions(cluster.allocate()) == [(executor.container_id, 1)]
    node.beat()
    assert not node.answer.containers_to_remove and executor.container_id in node.updater.kept
    cluster.allocate()
    node.beat()
    assert node.answer.containers_to_remove == (executor.container_id,)
    assert executor.container_id not in node.updater.kept
    node.beat()
    assert not node.answer.containers_to_remove


def test_a_resent_allocate_is_not_the_ams_receipt_and_a_resent_heartbeat_gets_the_same_removals() -> None:
    """The AM resending the allocate whose response it lost gets that response again: it does not show
    the AM got it, so nothing is removed.  A node resending a heartbeat gets the stored answer, removals
    included, and the following fresh heartbeat's answer has none."""
    cluster = Cluster()
    node, executor, rm = cluster.node, cluster.executor, cluster.rm
    node.ends(executor, 1)
    node.beat()
    first = cluster.allocate()
    assert rm.allocate(cluster.attempt_id, first.response_id - 1) == first  # resent: the same response
    node.beat()
    assert not node.answer.containers_to_remove
    cluster.allocate()
    node.beat()
    answer, sent = node.answer, node.sent
    assert answer.containers_to_remove == (executor.container_id,)
    assert rm.tracker.heartbeat(sent, KEY) == answer  # the answer was lost: the same one again
    fresh = NodeStatusReport(N1, answer.response_id, containers=sent.containers)
    assert rm.tracker.heartbeat(fresh, KEY).containers_to_remove == ()


def test_completions_no_am_will_get_are_forgotten_at_once() -> None:
    """The AM's own container (its end is its attempt's) and the unpulled completions of an attempt
    that ended are named in their node's next answer."""
    cluster = Cluster()
    node, executor, am = cluster.node, cluster.executor, cluster.am
    node.ends(executor, 1)
    node.ends(am, 1)
    node.beat()
    node.beat()
    assert node.updater.kept.reports() == ()


@pytest.mark.parametrize("removes", [True, False])
def test_a_completion_acknowledged_by_a_dead_rm_reaches_the_am_through_the_next_one(removes: bool) -> None:
    """The scenario of issue 13: RM1 acknowledges an executor's completion and dies before the AM pulled
    it.  The node kept it and lists it when it registers with RM2, which puts it in the AM's completed
    list; the node forgets it once the AM called RM2 again.  A control: with an RM1 that does not name
    removals (the behaviour before), the node forgot it and the AM never hears of it."""
    cluster = Cluster(removes)
    node, executor = cluster.node, cluster.executor
    node.ends(executor, 137)
    node.beat()
    assert executor.container_id not in node.reports
    cluster.fail_over()
    first = cluster.allocate()
    if not removes:
        assert completions(first) == []
        return
    assert completions(first) == [(executor.container_id, 137)]
    assert executor.container_id in node.updater.kept
    cluster.allocate()
    node.beat()
    assert executor.container_id not in node.updater.kept


def test_removals_are_queued_per_node_and_not_for_a_lost_node() -> None:
    """NodeCleanup alone: a handed batch is released by the AM's next call (to each container's node),
    the last one by the attempt's end; nothing is queued for a LOST node (it may never answer again)
    until it registers again; ``completed_reported`` keeps what an AM is still to be handed."""
    cleanup = NodeCleanup()
    attempt = ApplicationAttemptId(ApplicationId(1, 1), 1)
    a, b, c = (ContainerId(attempt, seq) for seq in (2, 3, 4))
    n2 = NodeId("10.0.0.2", 45454)
    cleanup.handed_to_am(attempt, [(N1, a), (n2, b)])
    assert cleanup.take(N1).containers_to_remove == ()
    cleanup.node_lost(n2)
    cleanup.handed_to_am(attempt, [(N1, c)])
    assert cleanup.take(N1).containers_to_remove == (a,)
    assert cleanup.take(n2).containers_to_remove == ()
    cleanup.completed_reported(N1, [c, b], pending=lambda attempt_id: {b})
    assert cleanup.take(N1).containers_to_remove == ()  # c: in the AM's last response; b: still to be handed
    cleanup.node_back(n2)
    cleanup.attempt_ended(attempt)
    cleanup.remove(n2, b)
    assert (cleanup.take(N1).containers_to_remove, cleanup.take(n2).containers_to_remove) == ((c,), (b,))


def test_an_answer_names_at_most_what_a_node_decodes_and_the_rest_follow() -> None:
    """A node decodes at most MAX_CONTAINERS ids a list: more removals (or kills) than that go out over several
    answers, never in one the node could not take (it would resend its heartbeat and get the same answer forever)."""
    cleanup = NodeCleanup()
    attempt = ApplicationAttemptId(ApplicationId(1, 1), 1)
    ids = [ContainerId(attempt, seq) for seq in range(2, MAX_CONTAINERS + 502)]
    for cid in ids:
        cleanup.remove(N1, cid)
        cleanup.kill(N1, cid)
    first, second, third = cleanup.take(N1), cleanup.take(N1), cleanup.take(N1)
    assert len(first.containers_to_remove) == len(first.containers_to_cleanup) == MAX_CONTAINERS
    assert len(second.containers_to_remove) == len(second.containers_to_cleanup) == 500
    assert set(first.containers_to_remove + second.containers_to_remove) == set(ids)
    assert third == NodeOrders()


def test_what_is_kept_for_lost_nodes_stays_bounded() -> None:
    """An application that ends after one of its nodes was lost queues no cleanup for that node (its
    registration, if it comes back, names what it still holds), and only the newest MAX_GONE_NODES lost nodes
    are remembered: nodes that come and go for ever do not grow the RM's memory."""
    cleanup = NodeCleanup()
    app = ApplicationId(1, 1)
    n2 = NodeId("10.0.0.2", 45454)
    cleanup.ran_on(app, N1)
    cleanup.ran_on(app, n2)
    cleanup.node_lost(n2)
    cleanup.app_finished(app)
    assert cleanup.take(N1).applications_to_cleanup == (app,)
    cleanup.node_back(n2)
    assert cleanup.take(n2).applications_to_cleanup == ()
    for k in range(MAX_GONE_NODES + 5):
        cleanup.node_lost(NodeId(f"10.1.{k // 250}.{k % 250}", 45454))
    assert len(cleanup._gone) == MAX_GONE_NODES and NodeId("10.1.0.0", 45454) not in cleanup._gone
