"""The RM context: cluster metrics from applications and nodes, and per-queue usage."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from cortex_rm.allocator.app_model import Application, SchedulerLimits, Submission
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueSpec, QueueTree
from cortex_rm.allocator.rm_context import QueueUsage, RMContext
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import ZERO, Resource
from tests.support.rm_core import result_of

T0 = 1_700_000_000.0
QUEUES = QueueSpec(
    "root",
    children=(
        QueueSpec("default", capacity=25),
        QueueSpec("team", capacity=75, children=(QueueSpec("etl", capacity=40), QueueSpec("ml", capacity=60))),
    ),
)


def _context() -> RMContext:
    clock = Clock()
    clock.advance(T0)
    apps = result_of(ApplicationTable.recover(clock, MemoryStateStore(), QueueTree(QUEUES), SchedulerLimits()))
    return RMContext(clock, apps, NodeTable(), rm_started_ms=int(T0 * 1000))


def _submit(rm: RMContext, **fields: Any) -> Application:
    app_id = result_of(rm.apps.new_application("alice"))
    return result_of(rm.apps.submit(Submission(app_id=app_id, user="alice", **fields)))


def _node(rm: RMContext, name: str, memory_mb: int = 4096, vcores: int = 4) -> NodeId:
    node_id = NodeId(name, 8041)
    rm.nodes.register(node_id, f"{name}:8042", Resource(memory_mb, vcores), rm.now_ms())
    return node_id


def test_context_shares_the_tables_and_the_clock() -> None:
    """The context exposes the apps' queues and limits, the cluster id and the clock's time in ms."""
    rm = _context()
    assert rm.queues is rm.apps.queues and rm.limits is rm.apps.limits
    assert rm.cluster_id == rm.apps.cluster_timestamp == int(T0 * 1000)
    rm.clock.advance(2.5)  # type: ignore[attr-defined]
    assert rm.now_ms() == int(T0 * 1000) + 2500
    assert rm.started_ms == int(T0 * 1000)


def test_metrics_of_an_empty_cluster_are_zero() -> None:
    """No apps and no nodes: every figure is zero."""
    m = _context().metrics()
    assert (m.apps_submitted, m.apps_pending, m.total, m.allocated, m.available, m.total_nodes) == (
        0,
        0,
        ZERO,
        ZERO,
        ZERO,
        0,
    )


def test_metrics_count_applications_by_reported_state() -> None:
    """Submitted counts all; ACCEPTED ones are pending; completed means FINISHED; killed and failed are counted apart (YARN)."""
    rm = _context()
    _submit(rm)
    _submit(rm, queue="etl")
    killed = _submit(rm)
    result_of(rm.apps.kill(killed.app_id))
    _submit(rm, queue="nope")
    m = rm.metrics()
    assert (m.apps_submitted, m.apps_pending, m.apps_running, m.apps_completed) == (4, 2, 0, 0)
    assert (m.apps_killed, m.apps_failed) == (1, 1)


def test_metrics_count_nodes_by_state_and_resources_of_schedulable_ones() -> None:
    """Node counts follow states; totals and usage add up the nodes the scheduler uses (as YARN's
    cluster resource): neither unhealthy nor lost nodes are in them."""
    rm = _context()
    running = _node(rm, "nm1", 8192, 8)
    unhealthy = _node(rm, "nm2", 4096, 4)
    lost = _node(rm, "nm3", 2048, 2)
    rm.nodes.get(running).used = Resource(2048, 2)
    rm.nodes.report(unhealthy, rm.now_ms(), healthy=False, health_report="disk")
    rm.nodes.expire(lost)
    m = rm.metrics()
    assert (m.active_nodes, m.unhealthy_nodes, m.lost_nodes, m.shutdown_nodes, m.decommissioned_nodes) == (
        1,
        1,
        1,
        0,
        0,
    )
    assert m.total_nodes == 2
    assert m.total == Resource(8192, 8)
    assert m.allocated == Resource(2048, 2)
    assert m.available == Resource(6144, 6)


def test_containers_on_lost_nodes_are_not_counted_as_allocated() -> None:
    """Allocated containers, like allocated resources, count only nodes that are still active."""
    rm = _context()
    live, gone = _node(rm, "nm1"), _node(rm, "nm2")
    rm.nodes.get(live).num_containers = 2
    rm.nodes.get(gone).num_containers = 5
    rm.nodes.get(gone).used = Resource(2048, 2)
    rm.nodes.expire(gone)
    m = rm.metrics()
    assert m.containers_allocated == 2
    assert m.allocated == ZERO


def test_queue_usage_counts_pending_applications_of_a_leaf() -> None:
    """A leaf's usage counts its live ACCEPTED applications as pending; ended ones do not count."""
    rm = _context()
    _submit(rm, queue="etl")
    _submit(rm, queue="etl")
    killed = _submit(rm, queue="etl")
    result_of(rm.apps.kill(killed.app_id))
    _submit(rm, queue="ml")
    usage = rm.queue_usage(rm.queues.find("etl"))
    assert usage == QueueUsage(used=ZERO, num_apps_pending=2, num_apps_running=0)


def test_parent_queue_usage_adds_up_its_leaves() -> None:
    """A parent's usage is the sum over the leaves below it, and the root's over all leaves."""
    rm = _context()
    _submit(rm, queue="etl")
    _submit(rm, queue="ml")
    _submit(rm, queue="ml")
    _submit(rm)
    assert rm.queue_usage(rm.queues.find("root.team")).num_apps_pending == 3
    assert rm.queue_usage(rm.queues.root).num_apps_pending == 4


@pytest.mark.parametrize(
    ("queue", "used_mb", "total_mb", "expected"),
    [
        ("default", 1024, 16384, 1024 / (0.25 * 16384)),
        ("root.team.etl", 2400, 10000, 2400 / (0.75 * 0.4 * 10000)),
        ("ml", 0, 10000, 0.0),
        ("ml", 5000, 0, 0.0),  # no cluster: nothing is guaranteed, so the fraction is 0, not a division error
    ],
)
def test_current_capacity_is_used_over_guaranteed_memory(
    queue: str, used_mb: int, total_mb: int, expected: float
) -> None:
    """currentCapacity = used memory / (absolute capacity × cluster memory), 0 when nothing is guaranteed."""
    tree = QueueTree(QUEUES)
    usage = QueueUsage(Resource(used_mb, 1), 0, 1)
    assert usage.current_capacity(tree.find(queue), Resource(total_mb, 8)) == pytest.approx(expected)
