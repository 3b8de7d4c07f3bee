"""Queues in the allocation pass: guaranteed shares, maximum capacities (leaf and parent), headroom."""

from __future__ import annotations

from collections import Counter

from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.queues import QueueSpec
from cortex_rm.yarn.ids import ApplicationAttemptId
from cortex_rm.yarn.resources import Resource
from tests.support.scheduler_sim import GB, SimCluster, ask


def _two_queues(b_max: float = 100.0) -> QueueSpec:
    return QueueSpec(
        "root", children=(QueueSpec("a", capacity=70), QueueSpec("b", capacity=30, maximum_capacity=b_max))
    )


def _sim(queues: QueueSpec, nodes: int = 10) -> SimCluster:
    sim = SimCluster(queues)
    for i in range(nodes):
        sim.add_node(f"h{i}", GB, 1)
    return sim


def _queues_of(containers: list[RMContainer], apps: dict[ApplicationAttemptId, str]) -> Counter[str]:
    return Counter(apps[c.attempt_id] for c in containers)


def test_two_busy_queues_split_the_cluster_by_their_guarantees() -> None:
    """Both queues ask for more than the cluster: a (70%) ends with 7 containers, b (30%) with 3."""
    sim = _sim(_two_queues())
    a, b = sim.submit("a", am=None), sim.submit("b", am=None)
    sim.ask(a, ask(20))
    sim.ask(b, ask(20))
    placed = sim.schedule()
    assert _queues_of(placed, {a: "a", b: "b"}) == Counter(a=7, b=3)


def test_queue_below_its_guarantee_is_served_first() -> None:
    """a already holds 8 of 10; with 2 free and both asking, b (below its 30%) gets both."""
    sim = _sim(_two_queues())
    a = sim.submit("a", am=None)
    sim.ask(a, ask(8))
    assert len(sim.schedule()) == 8
    b = sim.submit("b", am=None)
    sim.ask(a, ask(5))
    sim.ask(b, ask(5))
    assert [c.attempt_id for c in sim.schedule()] == [b, b]


def test_lone_queue_grows_past_its_guarantee_up_to_its_maximum() -> None:
    """Alone on the cluster, b (30%, max 50%) takes 5 of 10 nodes and says why it waits."""
    sim = _sim(_two_queues(b_max=50))
    b = sim.submit("b", am=None)
    sim.ask(b, ask(20))
    assert len(sim.schedule()) == 5
    assert sim.scheduler.queue_used("b") == Resource(5 * GB, 5)
    assert sim.scheduler.waiting_reason(b) == (
        "Queue root.b is at its maximum capacity (50% = <memory:5120, vCores:5>); "
        "waiting for running containers to finish"
    )
    assert sim.scheduler.headroom(b) == Resource(0, 0)


def test_parent_maximum_capacity_bounds_its_leaves_together() -> None:
    """Two leaves of a parent capped at 40% cannot together pass 40%, though each alone could."""
    queues = QueueSpec(
        "root",
        children=(
            QueueSpec(
                "batch",
                capacity=40,
                maximum_capacity=40,
                children=(QueueSpec("etl", capacity=50), QueueSpec("ml", capacity=50)),
            ),
            QueueSpec("default", capacity=60),
        ),
    )
    sim = _sim(queues)
    etl, ml = sim.submit("etl", am=None), sim.submit("ml", am=None)
    sim.ask(etl, ask(10))
    sim.ask(ml, ask(10))
    placed = sim.schedule()
    assert _queues_of(placed, {etl: "etl", ml: "ml"}) == Counter(etl=2, ml=2)
    assert sim.scheduler.queue_used("batch") == Resource(4 * GB, 4)
    reason = sim.scheduler.waiting_reason(etl)
    assert reason is not None and reason.startswith("Queue root.batch is at its maximum capacity (40% = ")


def test_queue_without_guarantee_gets_only_what_others_leave() -> None:
    """A 0%-capacity queue sorts after every queue with a guarantee once it holds anything."""
    queues = QueueSpec("root", children=(QueueSpec("main", capacity=100), QueueSpec("spare", capacity=0)))
    sim = _sim(queues, nodes=4)
    main, spare = sim.submit("main", am=None), sim.submit("spare", am=None)
    sim.ask(spare, ask(4))
    sim.ask(main, ask(3))
    placed = sim.schedule()
    assert Counter(c.attempt_id for c in placed) == Counter({main: 3, spare: 1})


def test_headroom_is_the_queue_limit_left_capped_by_free_space() -> None:
    """headroom = min(queue maximum - queue use, cluster free), per resource."""
    sim = _sim(_two_queues(b_max=50))
    a, b = sim.submit("a", am=None), sim.submit("b", am=None)
    assert sim.scheduler.headroom(b) == Resource(5 * GB, 5)
    sim.ask(a, ask(7))
    sim.schedule()
    assert sim.scheduler.headroom(b) == Resource(3 * GB, 3)  # only 3 left in the cluster
    assert sim.scheduler.headroom(a) == Resource(3 * GB, 3)


def test_vcores_count_against_the_queue_limit_too() -> None:
    """A queue at 50% of the cores is full even with memory to spare."""
    sim = SimCluster(_two_queues(b_max=50))
    sim.add_node("h1", 64 * GB, 8)
    b = sim.submit("b", am=None)
    sim.ask(b, ask(10, memory_mb=GB, vcores=2))
    assert len(sim.schedule()) == 2  # 4 of the 8 cores
    assert "(50% = <memory:32768, vCores:4>)" in (sim.scheduler.waiting_reason(b) or "")
