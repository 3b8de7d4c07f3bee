"""Scheduler benchmark: the capacity scheduler's decision core under a simulated 5,000-node cluster.

No sockets and no reactor: the simulation calls ``CapacityScheduler`` the way the
wire (``ClusterScheduling``) does, on a simulated clock, and times each call.

Each simulated second:

* every node heartbeats once (the heartbeats are spread evenly over the second):
  it reports RUNNING the containers its AMs started since its last heartbeat and
  COMPLETE those whose run is over (each executor lives a random 2-6 s); a
  heartbeat that completed anything is followed by an allocation pass, as
  ``ClusterScheduling.containers_reported`` schedules one;
* every ApplicationMaster makes one allocate call at a random moment: it re-sends
  its outstanding executors as an absolute count (target minus what it holds;
  some apps add host and rack preferences), and the RM runs
  ``update_requests`` + ``schedule`` + ``pull_allocated`` + ``pull_completed`` +
  ``headroom`` -- the work one allocate call triggers, timed as one cycle;
* applications end after a random 20-60 s (or when their AM's node is lost) and
  new ones are submitted in their place (AM containers, attempt removal);
* one node is lost (its containers end ABORTED) and another comes back.

Demand exceeds the cluster (every app wants more executors than its share), so the
scheduler always has work.  Printed: containers allocated per second of scheduler
CPU, the latency percentiles of the allocate cycle and of a node heartbeat's work,
and the simulated seconds per CPU second (above 1: the core keeps up with a real
5,000-node cluster on one core).

    .venv/bin/python bench/scheduler_bench.py [--nodes 5000] [--seconds 30] [--apps 60]

Targets (issue 3): >= 2,000 containers/s, p99 of the allocate cycle < 50 ms.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortex_rm.allocator.asks import ANY, ResourceAsk  # noqa: E402
from cortex_rm.allocator.containers import RMContainer  # noqa: E402
from cortex_rm.allocator.nodes import NodeTable  # noqa: E402
from cortex_rm.allocator.queues import QueueSpec, QueueTree  # noqa: E402
from cortex_rm.allocator.scheduler import CapacityScheduler  # noqa: E402
from cortex_rm.allocator.scheduler_config import SchedulerConfig  # noqa: E402
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId  # noqa: E402
from cortex_rm.yarn.resources import Resource  # noqa: E402

QUEUES = QueueSpec(
    "root",
    children=(QueueSpec("etl", capacity=70), QueueSpec("adhoc", capacity=30, maximum_capacity=60)),
)
NODE = Resource(16 * 1024, 8)
EXECUTOR = Resource(1920, 1)  # Spark's 1536m executor + overhead; the scheduler rounds it to 2048
AM = Resource(1024, 1)
RACKS = 50
P = ParamSpec("P")
T = TypeVar("T")


class SimClock:
    """The scheduler's clock: simulated seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def seconds(self) -> float:
        return self.now


@dataclass
class SimApp:
    attempt_id: ApplicationAttemptId
    target: int  # executors it would like
    ends_at_ms: int
    hosts: list[str]  # locality preferences (empty: none)
    held: set[ContainerId] = field(default_factory=set)
    am_running: bool = False


@dataclass
class SimNode:
    node_id: NodeId
    to_launch: list[ContainerId] = field(default_factory=list)
    running: list[tuple[int, ContainerId]] = field(default_factory=list)  # (end ms, id)


@dataclass
class Figures:
    allocated: int = 0
    completed: int = 0
    passes: int = 0
    scheduler_s: float = 0.0
    cycle_ms: list[float] = field(default_factory=list)
    heartbeat_ms: list[float] = field(default_factory=list)
    longest_cycle: tuple[float, int] = (0.0, 0)  # (ms, containers placed), warm-up included


class GcPauses:
    """The longest collections of Python's cyclic GC while measuring (they show up as latency outliers)."""

    def __init__(self) -> None:
        self.longest_ms = 0.0
        self.generation = -1
        self._started = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            elapsed = (time.perf_counter() - self._started) * 1000
            if elapsed > self.longest_ms:
                self.longest_ms, self.generation = elapsed, info["generation"]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Simulation:
    def __init__(self, nodes: int, apps: int, seed: int, max_per_pass: int = 0) -> None:
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.table = NodeTable()
        self.scheduler = CapacityScheduler(
            QueueTree(QUEUES), self.table, self.clock, SchedulerConfig(max_am_share=0.5, max_containers_per_pass=max_per_pass)
        )
        self.nodes: dict[NodeId, SimNode] = {}
        self.hosts: list[str] = []
        for i in range(nodes):
            node_id = NodeId(f"10.{i // 250}.{i % 250}.1", 45454)
            self.table.register(node_id, f"{node_id.host}:8042", NODE, 0, rack=f"/rack{i % RACKS}")
            self.scheduler.node_added(node_id, NODE)
            self.nodes[node_id] = SimNode(node_id)
            self.hosts.append(node_id.host)
        self.apps: dict[ApplicationAttemptId, SimApp] = {}
        self.down: dict[NodeId, int] = {}  # lost nodes and the second they come back
        self.next_app = 0
        self.total_slots = nodes * NODE.vcores
        self.figures = Figures()
        self.measuring = False
        for _ in range(apps):
            self.submit()

    @property
    def now_ms(self) -> int:
        return int(self.clock.now * 1000)

    def timed(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call the scheduler, adding the time it took to the scheduler's CPU (while measuring)."""
        started = time.perf_counter()
        result = work(*args, **kwargs)
        if self.measuring:
            self.figures.scheduler_s += time.perf_counter() - started
        return result

    def count_allocated(self, containers: list[RMContainer]) -> None:
        if self.measuring:
            self.figures.allocated += len(containers)
        for c in containers:
            if c.is_am:  # the AM launcher takes it and the node starts it
                self.scheduler.pull_allocated(c.attempt_id)
                self.nodes[c.node_id].to_launch.append(c.container_id)

    # -- applications ------------------------------------------------------------------------

    def submit(self) -> None:
        self.next_app += 1
        attempt_id = ApplicationAttemptId(ApplicationId(1_700_000_000_000, self.next_app), 1)
        queue = "etl" if self.rng.random() < 0.7 else "adhoc"
        hosts = self.rng.sample(self.hosts, 3) if self.rng.random() < 0.2 else []
        target = self.rng.randint(self.total_slots // 30, self.total_slots // 10)
        lifetime = self.rng.randint(20_000, 60_000)
        self.apps[attempt_id] = SimApp(attempt_id, target, self.now_ms + lifetime, hosts)
        self.scheduler.add_attempt(attempt_id, queue, "bench", 0, AM)
        allocated = self.timed(self.scheduler.schedule, self.now_ms)  # as ClusterScheduling on a new attempt
        self.count_allocated(allocated)

    def finish(self, app: SimApp) -> None:
        self.timed(self.scheduler.remove_attempt, app.attempt_id)
        del self.apps[app.attempt_id]
        self.submit()

    def allocate_call(self, app: SimApp) -> None:
        """One AM heartbeat: absolute asks, then the RM's pass and the response's lists."""
        s = self.scheduler
        if not app.am_running:
            return  # no AM yet: nobody to call
        want = max(0, app.target - len(app.held))
        asks = [ResourceAsk(0, ANY, EXECUTOR, want)]
        if app.hosts:
            racks = {self.table.get(NodeId(h, 45454)).rack for h in app.hosts}
            asks += [ResourceAsk(0, h, EXECUTOR, want) for h in app.hosts]
            asks += [ResourceAsk(0, r, EXECUTOR, want) for r in racks]
        started = time.perf_counter()
        s.update_requests(app.attempt_id, asks)
        allocated = s.schedule(self.now_ms)
        pulled = s.pull_allocated(app.attempt_id)
        completed = s.pull_completed(app.attempt_id)
        s.headroom(app.attempt_id)
        elapsed = time.perf_counter() - started
        self.figures.longest_cycle = max(self.figures.longest_cycle, (elapsed * 1000, len(allocated)))
        if self.measuring:
            self.figures.scheduler_s += elapsed
            self.figures.cycle_ms.append(elapsed * 1000)
            self.figures.passes += 1
        self.count_allocated(allocated)
        for c in pulled:
            app.held.add(c.container_id)
            self.nodes[c.node_id].to_launch.append(c.container_id)
        for c in completed:
            app.held.discard(c.container_id)

    # -- nodes -------------------------------------------------------------------------------

    def heartbeat(self, node: SimNode) -> None:
        """The node reports launches and completions; a completion triggers a pass."""
        s, now = self.scheduler, self.now_ms
        launching, node.to_launch = node.to_launch, []
        done = [cid for end, cid in node.running if end <= now]
        if done:
            node.running = [(end, cid) for end, cid in node.running if end > now]
        started = time.perf_counter()
        for cid in launching:
            s.container_launched(cid)
        finished = 0
        for cid in done:
            if s.container_finished(cid, 0) is not None:
                finished += 1
        allocated = s.schedule(now) if finished else []
        elapsed = time.perf_counter() - started
        if self.measuring:
            self.figures.scheduler_s += elapsed
            self.figures.heartbeat_ms.append(elapsed * 1000)
            self.figures.completed += finished
            self.figures.passes += 1 if finished else 0
        self.count_allocated(allocated)
        for cid in launching:
            container = s.container(cid)
            if container is None:
                continue
            if container.is_am:
                app = self.apps.get(container.attempt_id)
                if app is not None:
                    app.am_running = True
            else:
                node.running.append((now + self.rng.randint(2_000, 6_000), cid))

    # -- the simulated second ----------------------------------------------------------------

    def churn(self, t: int) -> None:
        """One volunteer machine leaves each second (its containers end ABORTED); it is back 5 s later."""
        for node_id in [n for n, back in self.down.items() if back <= t]:
            del self.down[node_id]
            self.timed(self.scheduler.node_added, node_id, NODE)
        node = self.rng.choice(list(self.nodes.values()))
        if node.node_id in self.down:
            return
        lost = self.timed(self.scheduler.node_removed, node.node_id)
        for c in lost:
            if c.is_am and c.attempt_id in self.apps:  # the attempt failed: the app ends
                self.finish(self.apps[c.attempt_id])
        node.to_launch, node.running = [], []
        self.down[node.node_id] = t + 5

    def second(self, t: int) -> None:
        self.churn(t)
        events: list[tuple[float, int, SimNode | SimApp]] = []
        n = len(self.nodes)
        for i, node in enumerate(self.nodes.values()):
            if node.node_id not in self.down:
                events.append((t + i / n, 0, node))
        for app in list(self.apps.values()):
            events.append((t + self.rng.random(), 1, app))
        events.sort(key=lambda e: (e[0], e[1]))
        for at, _, subject in events:
            self.clock.now = at
            if isinstance(subject, SimNode):
                self.heartbeat(subject)
            elif subject.attempt_id not in self.apps:
                continue  # ended earlier in this second
            elif self.now_ms >= subject.ends_at_ms:
                self.finish(subject)
            else:
                self.allocate_call(subject)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--apps", type=int, default=60)
    parser.add_argument("--seconds", type=int, default=30, help="simulated seconds measured")
    parser.add_argument("--warmup", type=int, default=10, help="simulated seconds before measuring")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-per-pass", type=int, default=0, help="SchedulerConfig.max_containers_per_pass")
    args = parser.parse_args()

    setup_started = time.process_time()
    sim = Simulation(args.nodes, args.apps, args.seed, args.max_per_pass)
    print(f"{args.nodes} nodes ({NODE} each, {RACKS} racks), {args.apps} applications; "
          f"set up in {time.process_time() - setup_started:.2f} s")
    for t in range(args.warmup):
        sim.second(t)
    sim.measuring = True
    pauses = GcPauses()
    cpu_started = time.process_time()
    for t in range(args.warmup, args.warmup + args.seconds):
        sim.second(t)
    cpu = time.process_time() - cpu_started
    f = sim.figures
    used = sim.table.total_used()
    total = sim.table.total_capability()
    rate = f.allocated / f.scheduler_s if f.scheduler_s else 0.0
    print(f"simulated {args.seconds} s after {args.warmup} s of warm-up; cluster {used.vcores}/{total.vcores} cores in use")
    print(f"containers allocated: {f.allocated:,} ({f.allocated / args.seconds:,.0f} per simulated second), "
          f"finished on nodes: {f.completed:,}, passes: {f.passes:,}")
    print(f"scheduler CPU: {f.scheduler_s:.2f} s -> {rate:,.0f} containers/s of scheduler CPU; "
          f"with the simulation {cpu:.2f} s -> {f.allocated / cpu:,.0f} containers/s")
    print(f"real-time factor: {args.seconds / f.scheduler_s:.2f} simulated s per scheduler CPU s")
    cyc, hb = f.cycle_ms, f.heartbeat_ms
    print(f"allocate cycle (update_requests+schedule+pull_allocated+pull_completed+headroom), {len(cyc):,} calls: "
          f"p50 {percentile(cyc, 50):.3f} ms, p90 {percentile(cyc, 90):.3f} ms, p99 {percentile(cyc, 99):.3f} ms, "
          f"max {max(cyc, default=0):.3f} ms")
    print(f"node heartbeat (reports + pass), {len(hb):,} heartbeats: p50 {percentile(hb, 50):.3f} ms, "
          f"p99 {percentile(hb, 99):.3f} ms, max {max(hb, default=0):.3f} ms")
    longest_ms, placed = f.longest_cycle
    print(f"longest allocate cycle of the whole run (warm-up included): {longest_ms:.1f} ms, "
          f"its pass placed {placed:,} containers")
    print(f"longest garbage collection while measuring: {pauses.longest_ms:.1f} ms (generation {pauses.generation})")
    print("markdown row: | nodes | apps | containers/s of scheduler CPU | allocate p50 ms | p99 ms | max ms "
          "| heartbeat p99 ms | real-time factor |")
    print(f"| {args.nodes:,} | {args.apps} | {rate:,.0f} | {percentile(cyc, 50):.3f} | {percentile(cyc, 99):.3f} "
          f"| {max(cyc, default=0):.3f} | {percentile(hb, 99):.3f} | {args.seconds / f.scheduler_s:.2f} |")


if __name__ == "__main__":
    main()
