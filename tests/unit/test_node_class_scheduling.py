"""Node classes in the RM's scheduling service: the ledger's static set becomes node labels,
AMs follow them, failed AMs blacklist their nodes, and labelled asks are checked.

The scheduling service on a Clock (``test_cluster_scheduling.Cluster``: real table,
scheduler and store, a recording AM launcher); the nodes register with ring ids as the
NodeTracker records them.
"""

from __future__ import annotations

import pytest

from cortex_rm.allocator.app_model import Application, SchedulerLimits
from cortex_rm.allocator.app_states import AppState, AttemptState
from cortex_rm.allocator.asks import ResourceAsk
from cortex_rm.allocator.node_labels import STATIC, VOLATILE, InvalidLabelResourceRequest
from cortex_rm.allocator.nodes import NodeRecord
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import Resource
from tests.support.rm_core import submitted
from tests.unit.test_cluster_scheduling import N1, N2, Cluster

N3 = NodeId("10.0.0.3", 45454)
RING = {N1: 0x11, N2: 0x22, N3: 0x33}


def _ringed(limits: SchedulerLimits = SchedulerLimits()) -> Cluster:
    """The two-node cluster, its nodes registered again as ring members, plus a third."""
    cluster = Cluster(limits)
    for node_id in (N1, N2, N3):
        _register(cluster, node_id)
    return cluster


def _register(cluster: Cluster, node_id: NodeId) -> NodeRecord:
    record = cluster.nodes.register(node_id, f"{node_id.host}:8042", Resource(8192, 8), 0, ring_id=RING[node_id])
    cluster.service.node_registered(record)
    return record


def _labels(cluster: Cluster) -> dict[NodeId, set[str]]:
    return {n.node_id: set(n.labels) for n in cluster.nodes}


def _am_node(cluster: Cluster, app: Application) -> NodeId:
    attempt = app.current_attempt
    assert attempt is not None and attempt.am_node, app.diagnostics
    return NodeId.parse(attempt.am_node)


def test_set_static_nodes_labels_every_node_by_its_ring_id() -> None:
    """Static if its member is in the set, volatile otherwise; the scheduler's partitions follow,
    an unchanged set changes nothing, and a node registering later gets its label at once."""
    cluster = _ringed()
    assert set(map(frozenset, _labels(cluster).values())) == {frozenset({VOLATILE})}
    changed = cluster.service.set_static_nodes(frozenset({RING[N2], 0x99}))  # 0x99: no such node
    assert [n.node_id for n in changed] == [N2]
    assert _labels(cluster) == {N1: {VOLATILE}, N2: {STATIC}, N3: {VOLATILE}}
    partitions = cluster.scheduler.nodes
    assert len(partitions.partition(STATIC)) == 1 and len(partitions.partition(VOLATILE)) == 2
    assert cluster.service.set_static_nodes(frozenset({RING[N2]})) == []
    cluster.nodes.expire(N2)
    cluster.service.node_lost(cluster.nodes.get(N2))
    _register(cluster, N2)  # it comes back: still static
    assert _labels(cluster)[N2] == {STATIC}
    assert len(partitions.partition(STATIC)) == 1
    unringed = cluster.nodes.register(NodeId("10.0.0.9", 1), "x:1", Resource(1024, 1), 0)
    cluster.service.node_registered(unringed)
    assert unringed.labels == {VOLATILE}


def test_an_am_goes_to_the_static_node_and_falls_back_while_there_is_none() -> None:
    """Before the ledger has classed anyone every node is volatile and AMs still run; afterwards
    each new AM goes to the static node."""
    cluster = _ringed()
    first = submitted(cluster.table)
    cluster.settle()
    assert first.current_attempt.state is AttemptState.LAUNCHED  # type: ignore[union-attr]
    cluster.service.set_static_nodes(frozenset({RING[N3]}))
    later = [submitted(cluster.table) for _ in range(3)]
    cluster.settle()
    assert {_am_node(cluster, app) for app in later} == {N3}


def test_an_application_waiting_for_a_static_node_says_so() -> None:
    """The only static node is full: the AM waits and the application's diagnostics say why."""
    cluster = _ringed()
    cluster.service.set_static_nodes(frozenset({RING[N1]}))
    big = submitted(cluster.table, am_resource=Resource(8192, 4))
    waiting = submitted(cluster.table, am_resource=Resource(2048, 1))
    cluster.settle()
    assert _am_node(cluster, big) == N1
    assert waiting.reported_state is AppState.ACCEPTED
    assert waiting.diagnostics.startswith("Waiting for the AM container: No static node has <memory:2048, vCores:1> free")


@pytest.mark.parametrize(
    ("exit_status", "avoided"),
    [(1, True), (ContainerExitStatus.INVALID, True), (ContainerExitStatus.ABORTED, False),
     (ContainerExitStatus.KILLED_EXCEEDED_PMEM, False)],
)
def test_the_next_attempt_avoids_the_node_where_the_am_failed(exit_status: int, avoided: bool) -> None:
    """YARN's AM blacklisting: an AM that failed on a node (exit 1, a failed launch) sends the next
    attempt elsewhere, even off the static nodes; the framework's exits (lost node, memory) do not."""
    cluster = _ringed(SchedulerLimits(max_app_attempts=3))
    cluster.service.set_static_nodes(frozenset({RING[N1]}))
    app, am = cluster.running_app()
    assert am.node_id == N1
    cluster.report(N1, am, ContainerState.COMPLETE, exit_status=exit_status)
    cluster.settle()
    assert len(app.attempts) == 2
    assert (_am_node(cluster, app) != N1) is avoided


def test_asks_take_the_application_label_and_bad_labels_are_refused() -> None:
    """A "*" ask without a label gets the application's label expression; a label the cluster has
    not, or one on a host ask, is refused with YARN's message before anything changes."""
    cluster = _ringed()
    cluster.service.set_static_nodes(frozenset({RING[N2]}))
    app, _ = cluster.running_app()
    app.label_expression = STATIC
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    ask = ResourceAsk(priority=1, resource_name="*", capability=Resource(1024, 1), num_containers=3)
    result = cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1)
    assert {c.node_id for c in result.allocated} == {N2} and len(result.allocated) == 3
    with pytest.raises(InvalidLabelResourceRequest, match="cluster do not contain , label= gpu"):
        cluster.service.allocate(attempt_id, [ResourceAsk(2, "*", Resource(1024, 1), 1, node_label="gpu")], [], [], [], 0.2)
    with pytest.raises(InvalidLabelResourceRequest, match="has resource name = 10.0.0.1"):
        cluster.service.allocate(
            attempt_id, [ResourceAsk(2, "10.0.0.1", Resource(1024, 1), 1, node_label=VOLATILE)], [], [], [], 0.2
        )
    with pytest.raises(InvalidLabelResourceRequest, match="more than one node label"):
        cluster.service.allocate(
            attempt_id, [ResourceAsk(2, "*", Resource(1024, 1), 1, node_label="static && volatile")], [], [], [], 0.2
        )
    assert cluster.scheduler.outstanding(attempt_id) == Resource()
