"""The scheduler's explanations: waiting_reason for each kind of wait, can_ever_fit for impossible asks."""

from __future__ import annotations

from cortex_rm.allocator.queues import QueueSpec
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.yarn.resources import Resource
from cortex_rm.allocator.node_labels import STATIC, VOLATILE
from tests.support.scheduler_sim import GB, SimCluster, ask


def test_request_bigger_than_the_maximum_allocation_can_never_fit() -> None:
    """An ask over maximum_allocation is refused by name, even before any node registers."""
    sim = SimCluster()
    assert sim.scheduler.can_ever_fit(Resource(9000, 1)) == (
        "Invalid resource request: <memory:9000, vCores:1> is more than the maximum allocation "
        "<memory:8192, vCores:4> (yarn.scheduler.maximum-allocation-mb / -vcores)"
    )
    assert sim.scheduler.can_ever_fit(Resource(1024, 5)) is not None
    assert sim.scheduler.can_ever_fit(Resource(-1, 1)) == "Invalid resource request: negative resource <memory:-1, vCores:1>"


def test_request_bigger_than_every_node_can_never_fit() -> None:
    """Within the maximum allocation but larger (after rounding up) than any node: refused, naming the nodes."""
    sim = SimCluster()
    sim.add_node("h1", 4 * GB, 4)
    sim.add_node("h2", 6 * GB, 2)
    assert sim.scheduler.can_ever_fit(Resource(5000, 3)) == (
        "Invalid resource request: <memory:5000, vCores:3> (normalized to <memory:5120, vCores:3>) "
        "is larger than every node; node capabilities: <memory:6144, vCores:2>, <memory:4096, vCores:4>"
    )
    assert sim.scheduler.can_ever_fit(Resource(5000, 2)) is None
    assert sim.scheduler.can_ever_fit(Resource(4096, 4)) is None


def test_nothing_can_be_judged_impossible_before_nodes_join() -> None:
    """With no node yet, only the maximum allocation can refuse an ask; the nodes may still come."""
    assert SimCluster().scheduler.can_ever_fit(Resource(8192, 4)) is None


def test_waiting_reason_names_the_queue_at_its_maximum_capacity() -> None:
    """The queue-limit text names the queue, its maximum as a share and as a resource."""
    sim = SimCluster()
    sim.add_node("h1", 8 * GB, 8)
    app = sim.running_app()
    sim.ask(app, ask(10))
    sim.schedule()
    assert sim.scheduler.waiting_reason(app) == (
        "Queue root.default is at its maximum capacity (100% = <memory:8192, vCores:8>); "
        "waiting for running containers to finish"
    )


def test_waiting_reason_names_the_resource_no_node_has_free() -> None:
    """When the queue has room but no node does, the text gives the largest free space and where it is."""
    sim = SimCluster()
    sim.add_node("127.0.0.1", 4 * GB, 5)
    sim.add_node("127.0.0.2", 2 * GB, 2)
    app = sim.running_app(am=Resource(2 * GB, 1))
    sim.ask(app, ask(1, memory_mb=3 * GB))
    assert sim.schedule() == []
    assert sim.scheduler.waiting_reason(app) == (
        "No node has <memory:3072, vCores:1> free (largest free: <memory:2048, vCores:4> on 127.0.0.1:45454)"
    )


def test_waiting_reason_for_an_am_with_no_room_and_no_nodes() -> None:
    """An AM waits for nodes to join, then for a static node with room (not for a volatile one)."""
    sim = SimCluster(config=SchedulerConfig(max_am_share=1.0))
    app = sim.submit(am=Resource(2 * GB, 1))
    assert sim.scheduler.waiting_reason(app) == (
        "No node is registered with the ResourceManager; waiting for nodes to join"
    )
    sim.add_node("h1", 3 * GB, 2, label=STATIC)
    sim.add_node("h2", 8 * GB, 8, label=VOLATILE)
    assert [c.attempt_id for c in sim.schedule()] == [app]  # on h1, the only static node
    later = sim.submit(am=Resource(2 * GB, 1))
    assert sim.schedule() == []
    sim.clock.advance(12.5)
    assert sim.scheduler.waiting_reason(later) == (
        "No static node has <memory:2048, vCores:1> free (largest free: <memory:1024, vCores:1> on h1:45454); "
        'ApplicationMasters go to static nodes (am_node_class = "static"), to any node once they have waited '
        "60 s for one (am_static_wait_s; waited 12.5 s)"
    )


def test_no_reason_when_nothing_is_asked_and_next_pass_when_it_would_fit() -> None:
    """None for an attempt that asks nothing; a placeable ask just waits for the next pass."""
    sim = SimCluster()
    sim.add_node("h1")
    app = sim.running_app()
    assert sim.scheduler.waiting_reason(app) is None
    sim.ask(app, ask(1))
    assert sim.scheduler.waiting_reason(app) == "Waiting for the next scheduling pass"


def test_queue_too_small_for_the_container_says_it_needs_a_bigger_cluster() -> None:
    """If even an empty queue's maximum cannot hold the container, the text says the cluster must grow."""
    queues = QueueSpec("root", children=(QueueSpec("tiny", capacity=10, maximum_capacity=10), QueueSpec("rest", capacity=90)))
    sim = SimCluster(queues)
    sim.add_node("h1", 8 * GB, 8)
    app = sim.submit("tiny", am=None)
    sim.ask(app, ask(1, memory_mb=2 * GB))
    assert sim.scheduler.waiting_reason(app) == (
        "Queue root.tiny's maximum capacity (10% = <memory:819, vCores:0>) is smaller than "
        "<memory:2048, vCores:1>; it can run only when the cluster grows"
    )
