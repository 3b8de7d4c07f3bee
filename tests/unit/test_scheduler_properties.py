"""Properties of the scheduler under random operations, and a pass over thousands of simulated nodes."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cortex_rm.allocator.asks import ANY
from cortex_rm.allocator.containers import RMContainerState
from cortex_rm.allocator.node_index import PlacementPolicy
from cortex_rm.allocator.node_labels import STATIC, VOLATILE
from cortex_rm.allocator.queues import QueueSpec
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource
from tests.support.scheduler_sim import GB, SimCluster, ask

QUEUES = QueueSpec(
    "root",
    children=(
        QueueSpec("a", capacity=60, maximum_capacity=80),
        QueueSpec("p", capacity=40, maximum_capacity=50, children=(QueueSpec("b", capacity=50), QueueSpec("c", capacity=50))),
    ),
)
HOSTS = [f"h{i}" for i in range(6)]
PLACES = [ANY, ANY, "h0", "h1", "h2", "/r0", "/r1"]
LABELS = ["", STATIC, VOLATILE]


class SchedulerMachine(RuleBasedStateMachine):
    """Random nodes, applications, asks, passes and node reports; the books must always balance."""

    def __init__(self) -> None:
        super().__init__()
        self.sim = SimCluster(QUEUES, SchedulerConfig(node_locality_delay_ms=200, rack_locality_delay_ms=200))
        self.s = self.sim.scheduler
        self.attempts: list[ApplicationAttemptId] = []
        self.handed_out: set[ContainerId] = set()
        self.reported: Counter[ContainerId] = Counter()
        self.allocated_ever: set[ContainerId] = set()
        self.labels_sent: dict[tuple[ApplicationAttemptId, int, int], str] = {}  # last "*" label per key

    @initialize(managed=st.lists(st.booleans(), min_size=1, max_size=3))
    def a_small_busy_cluster(self, managed: list[bool]) -> None:
        """Start with three nodes and a few applications asking, so that most steps have work to do."""
        for i, host in enumerate(HOSTS[:3]):
            self.sim.add_node(host, 4 * GB, 4, rack=f"/r{i % 2}")
        for i, m in enumerate(managed):
            attempt = self.sim.submit("abc"[i % 3], Resource(GB, 1) if m else None)
            self.attempts.append(attempt)
            self.s.update_requests(attempt, [ask(4, 1024, 1)])

    # -- nodes ---------------------------------------------------------------------

    @rule(host=st.sampled_from(HOSTS), mem=st.sampled_from([1, 2, 4, 8]), vcores=st.sampled_from([1, 2, 4]),
          rack=st.sampled_from(["/r0", "/r1"]), label=st.sampled_from(LABELS))
    def add_node(self, host: str, mem: int, vcores: int, rack: str, label: str) -> None:
        self.sim.add_node(host, mem * GB, vcores, rack=rack, label=label)

    @rule(host=st.sampled_from(HOSTS), label=st.sampled_from(LABELS))
    def relabel_node(self, host: str, label: str) -> None:
        """The ledger reclassed a node: it moves partition, its containers stay."""
        self.s.set_node_label(NodeId(host, 45454), label)

    @rule(host=st.sampled_from(HOSTS))
    def lose_node(self, host: str) -> None:
        for c in self.s.node_removed(NodeId(host, 45454)):
            assert c.state is RMContainerState.KILLED and c.exit_status == ContainerExitStatus.ABORTED

    # -- applications --------------------------------------------------------------

    @rule(queue=st.sampled_from(["a", "b", "c"]), managed=st.booleans(), priority=st.integers(0, 2))
    def submit(self, queue: str, managed: bool, priority: int) -> None:
        self.attempts.append(self.sim.submit(queue, Resource(GB, 1) if managed else None, priority))

    @precondition(lambda self: self.attempts)
    @rule(data=st.data())
    def finish_attempt(self, data: st.DataObject) -> None:
        attempt = data.draw(st.sampled_from(self.attempts))
        self.attempts.remove(attempt)
        for c in self.s.remove_attempt(attempt):
            assert not c.is_live

    @precondition(lambda self: self.attempts)
    @rule(data=st.data(), where=st.sampled_from(PLACES), n=st.integers(0, 6), mem=st.sampled_from([512, 1024, 2048]),
          priority=st.integers(0, 1), relax=st.booleans(), release=st.booleans(),
          blacklist=st.lists(st.sampled_from(HOSTS), max_size=2), unlist=st.lists(st.sampled_from(HOSTS), max_size=2),
          label=st.sampled_from(LABELS))
    def allocate_call(self, data: st.DataObject, where: str, n: int, mem: int, priority: int, relax: bool,
                      release: bool, blacklist: list[str], unlist: list[str], label: str) -> None:
        attempt = data.draw(st.sampled_from(self.attempts))
        mine = [c.container_id for c in self.s.attempt_containers(attempt) if not c.is_am and c.acquired]
        releases = mine[: len(mine) // 2] if release else []
        sent = replace(ask(n, mem, 1, where, priority, relax), node_label=label if where == ANY else None)
        if where == ANY:
            self.labels_sent[(attempt, priority, mem)] = label
        self.s.update_requests(attempt, [sent], releases, blacklist, unlist)
        self._pull(attempt)

    @precondition(lambda self: self.attempts)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        self._pull(data.draw(st.sampled_from(self.attempts)))

    def _pull(self, attempt: ApplicationAttemptId) -> None:
        for c in self.s.pull_allocated(attempt):
            assert c.container_id in self.allocated_ever and c.container_id not in self.handed_out
            self.handed_out.add(c.container_id)
        for c in self.s.pull_completed(attempt):
            assert c.container_id in self.handed_out and not c.is_am and not c.is_live
            self.reported[c.container_id] += 1

    # -- passes and node reports ---------------------------------------------------

    @rule(advance=st.sampled_from([0, 100, 250]))
    def schedule(self, advance: int) -> None:
        self.sim.advance_ms(advance)
        placed = self.s.schedule(self.sim.now_ms)
        total = self.s.nodes.total
        for leaf in {self.s.queues.by_path[self.s.attempt_queue(c.attempt_id)] for c in placed}:
            for q in leaf.chain:  # a queue that got containers is within its maximum, up the tree
                assert q.used.fits_in(q.limit(total)), (q, q.limit(total))
        assert all(c.state is RMContainerState.ALLOCATED for c in placed)
        for c in placed:  # a labelled ask lands on its label only
            assert c.requested is not None
            label = self.labels_sent.get((c.attempt_id, c.priority, c.requested.memory_mb), "")
            assert c.is_am or not label or self.s.nodes.by_id[c.node_id].label == label, (c, label)
        self.allocated_ever.update(c.container_id for c in placed)
        for c in placed:
            if c.is_am:  # the AM launcher takes it at once
                self.handed_out.update(x.container_id for x in self.s.pull_allocated(c.attempt_id))

    @rule(data=st.data(), exit_status=st.sampled_from([0, 1, 143, -100]), launch=st.booleans())
    def node_report(self, data: st.DataObject, exit_status: int, launch: bool) -> None:
        live = sorted(self.s.live_containers(), key=lambda c: c.container_id)
        if not live:
            return
        c = data.draw(st.sampled_from(live))
        if launch:
            self.s.container_launched(c.container_id)
        else:
            assert self.s.container_finished(c.container_id, exit_status) is c
            assert self.s.container_finished(c.container_id, exit_status) is None

    @rule()
    def expire(self) -> None:
        self.s.expire_unlaunched(self.sim.now_ms + 600_000)

    # -- the books -----------------------------------------------------------------

    @invariant()
    def no_node_is_overcommitted_and_the_node_table_matches_live_containers(self) -> None:
        by_node: dict[NodeId, list] = {}  # type: ignore[type-arg]
        for c in self.s.live_containers():
            by_node.setdefault(c.node_id, []).append(c)
        for node_id, node in self.s.nodes.by_id.items():
            assert node.free_mem >= 0 and node.free_vcores >= 0, node
            live = by_node.pop(node_id, [])
            used = Resource(sum(c.resource.memory_mb for c in live), sum(c.resource.vcores for c in live))
            assert node.used == used
            record = self.sim.table.get(node_id)
            assert (record.used, record.num_containers) == (used, len(live))
        assert not by_node, f"live containers on nodes the scheduler lost: {by_node}"
        live = self.s.live_containers()
        assert self.s.nodes.used() == Resource(sum(c.resource.memory_mb for c in live), sum(c.resource.vcores for c in live))

    @invariant()
    def queue_usage_is_the_sum_of_its_attempts(self) -> None:
        per_leaf: Counter[str] = Counter()
        per_leaf_vc: Counter[str] = Counter()
        for c in self.s.live_containers():
            path = self.s.attempt_queue(c.attempt_id)
            per_leaf[path] += c.resource.memory_mb
            per_leaf_vc[path] += c.resource.vcores
        for q in self.s.queues:
            leaves = [p for p in per_leaf if p == q.path or p.startswith(q.path + ".")]
            assert q.used == Resource(sum(per_leaf[p] for p in leaves), sum(per_leaf_vc[p] for p in leaves))

    @invariant()
    def each_node_is_in_its_own_label_partition_only(self) -> None:
        nodes = self.s.nodes
        assert sum(len(p) for p in nodes.partitions.values()) == len(nodes.by_id)
        for label, shapes in nodes.partition_shapes.items():
            assert sum(shapes.values()) == sum(1 for n in nodes.by_id.values() if n.label == label)
        for node in nodes.by_id.values():
            assert node in set(nodes.partition(node.label).candidates(0, 0, PlacementPolicy.SPREAD))

    @invariant()
    def every_container_is_reported_completed_at_most_once(self) -> None:
        assert all(n == 1 for n in self.reported.values())


SchedulerMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_scheduler_books_balance_under_random_operations = SchedulerMachine.TestCase


def test_five_thousand_nodes_fill_quickly_and_exactly() -> None:
    """5,000 nodes, 20 apps in two queues asking for more than all 40,000 cores: each queue gets its share, fast."""
    queues = QueueSpec("root", children=(QueueSpec("a", capacity=75), QueueSpec("b", capacity=25)))
    sim = SimCluster(queues, SchedulerConfig(max_am_share=1.0))
    sim.add_nodes(5000, memory_mb=16 * GB, vcores=8, racks=20)
    apps = [sim.submit("a" if i % 4 else "b") for i in range(20)]
    ams = sim.schedule()
    assert len(ams) == 20 and all(c.is_am for c in ams)
    for app in apps:
        sim.scheduler.pull_allocated(app)
        sim.ask(app, ask(2000, memory_mb=2 * GB, vcores=1, where=ANY), ask(50, where="node00042"))
    started = time.process_time()
    placed = sim.schedule()
    elapsed = time.process_time() - started
    assert len(placed) == 5000 * 8 - 20  # the cores left after the AMs
    used = {q: sim.scheduler.queue_used(q).vcores for q in ("a", "b")}
    assert used == {"a": 30000, "b": 10000}  # both want more than their share: exactly 75% / 25% of 40,000 cores
    assert sim.table.total_used() == sim.scheduler.nodes.used()
    print(f"one pass placed {len(placed)} containers on 5,000 nodes in {elapsed:.2f} s of CPU")
    assert elapsed < 5.0, f"a pass placing {len(placed)} containers took {elapsed:.2f} s of CPU"
    # a full cluster: the next pass finds nothing, fast
    started = time.process_time()
    assert sim.schedule() == []
    assert time.process_time() - started < 0.05
