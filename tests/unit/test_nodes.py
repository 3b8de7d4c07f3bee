"""The RM's node table: registration, health reports, expiry to LOST, reconnection, queries."""

from __future__ import annotations

import pytest

from cortex_rm.allocator.errors import UnknownNode
from cortex_rm.allocator.nodes import ACTIVE_NODE_STATES, NodeState, NodeTable
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import ZERO, Resource

NM1 = NodeId("nm1.example.com", 8041)
NM2 = NodeId("nm2.example.com", 8041)
NM3 = NodeId("nm3.example.com", 8041)


def _table_with(*node_ids: NodeId) -> NodeTable:
    table = NodeTable()
    for i, node_id in enumerate(node_ids):
        table.register(node_id, f"{node_id.host}:8042", Resource(4096, 4), now_ms=1000 + i)
    return table


def test_registered_node_is_running_with_its_capacity() -> None:
    """A first registration records the node RUNNING, with its capacity, address, rack and time."""
    table = NodeTable()
    node = table.register(NM1, "nm1.example.com:8042", Resource(8192, 8), now_ms=5000, rack="/r1")
    assert node.state is NodeState.RUNNING
    assert (node.capability, node.used, node.available) == (Resource(8192, 8), ZERO, Resource(8192, 8))
    assert (node.http_address, node.rack, node.last_health_update_ms) == ("nm1.example.com:8042", "/r1", 5000)
    assert table.get(NM1) is node
    assert len(table) == 1 and list(table) == [node]


def test_unknown_node_is_refused_by_name() -> None:
    """Asking about, reporting for or expiring a node that never registered raises UnknownNode."""
    table = _table_with(NM1)
    for call in (lambda: table.get(NM2), lambda: table.report(NM2, 1), lambda: table.expire(NM2)):
        with pytest.raises(UnknownNode, match="nm2.example.com:8041"):
            call()


def test_unhealthy_report_marks_the_node_and_a_healthy_one_brings_it_back() -> None:
    """A report saying unhealthy makes the node UNHEALTHY with its report; a healthy one makes it RUNNING."""
    table = _table_with(NM1)
    node = table.report(NM1, now_ms=2000, healthy=False, health_report="disk full")
    assert (node.state, node.health_report, node.last_health_update_ms) == (NodeState.UNHEALTHY, "disk full", 2000)
    node = table.report(NM1, now_ms=3000, healthy=False, health_report="disk still full")
    assert (node.state, node.health_report) == (NodeState.UNHEALTHY, "disk still full")
    node = table.report(NM1, now_ms=4000)
    assert (node.state, node.health_report, node.last_health_update_ms) == (NodeState.RUNNING, "", 4000)


def test_repeated_healthy_reports_keep_the_node_running() -> None:
    """Heartbeats from a healthy node only move its last-report time."""
    table = _table_with(NM1)
    for t in (2000, 3000, 4000):
        node = table.report(NM1, now_ms=t)
    assert (node.state, node.last_health_update_ms) == (NodeState.RUNNING, 4000)


@pytest.mark.parametrize("healthy", [True, False])
def test_node_that_stops_reporting_is_lost(healthy: bool) -> None:
    """A running or unhealthy node that misses its expiry becomes LOST; expiring it again changes nothing."""
    table = _table_with(NM1)
    table.report(NM1, now_ms=2000, healthy=healthy)
    assert table.expire(NM1).state is NodeState.LOST
    assert table.expire(NM1).state is NodeState.LOST


def test_lost_node_that_registers_again_runs_with_fresh_capacity() -> None:
    """A LOST node's re-registration makes it RUNNING with its new capacity and no containers."""
    table = _table_with(NM1)
    node = table.get(NM1)
    node.used, node.num_containers = Resource(1024, 1), 1
    table.expire(NM1)
    node = table.register(NM1, "nm1.example.com:9042", Resource(2048, 2), now_ms=9000, rack="/r2")
    assert node.state is NodeState.RUNNING
    assert (node.capability, node.used, node.num_containers) == (Resource(2048, 2), ZERO, 0)
    assert (node.http_address, node.rack, node.last_health_update_ms) == ("nm1.example.com:9042", "/r2", 9000)
    assert len(table) == 1


def test_running_node_that_registers_again_forgets_its_containers() -> None:
    """A NodeManager restart (a second registration while RUNNING) resets its usage, as YARN's reconnect."""
    table = _table_with(NM1)
    node = table.get(NM1)
    node.used, node.num_containers = Resource(1024, 1), 3
    node = table.register(NM1, "nm1.example.com:8042", Resource(4096, 4), now_ms=5000)
    assert (node.state, node.used, node.num_containers) == (NodeState.RUNNING, ZERO, 0)


def test_with_states_defaults_to_every_node() -> None:
    """Without states (None or empty) the query returns nodes in every state, as YARN's getClusterNodes."""
    table = _table_with(NM1, NM2, NM3)
    table.report(NM2, now_ms=2000, healthy=False)
    table.expire(NM3)
    expected = {NM1, NM2, NM3}
    assert {n.node_id for n in table.with_states(None)} == expected
    assert {n.node_id for n in table.with_states([])} == expected
    assert {n.node_id for n in table.with_states(ACTIVE_NODE_STATES)} == {NM1, NM2}


def test_with_states_returns_exactly_the_asked_states() -> None:
    """Given states, the query returns the nodes in any of them and no others."""
    table = _table_with(NM1, NM2, NM3)
    table.report(NM2, now_ms=2000, healthy=False)
    table.expire(NM3)
    assert [n.node_id for n in table.with_states([NodeState.LOST])] == [NM3]
    assert {n.node_id for n in table.with_states(iter([NodeState.LOST, NodeState.RUNNING]))} == {NM1, NM3}
    assert table.with_states([NodeState.DECOMMISSIONED]) == []


def test_counts_and_totals_cover_the_nodes_the_scheduler_uses() -> None:
    """Counts are per state; total capability and usage add up the nodes the scheduler uses and
    leave out UNHEALTHY and LOST ones (YARN's cluster resource)."""
    table = _table_with(NM1, NM2, NM3)
    table.get(NM1).used = Resource(1024, 1)
    table.get(NM3).used = Resource(2048, 2)
    table.report(NM2, now_ms=2000, healthy=False)
    table.expire(NM3)
    assert (table.count(NodeState.RUNNING), table.count(NodeState.UNHEALTHY), table.count(NodeState.LOST)) == (1, 1, 1)
    assert table.total_capability() == Resource(4096, 4)
    assert table.total_used() == Resource(1024, 1)
