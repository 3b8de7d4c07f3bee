"""Random schedules of RM restarts among an application's work, on a Clock: whatever the order of asks,
releases, executor exits, heartbeats and restarts, the RM's accounting matches what the nodes run.

Three modelled NodeManagers run what the AM starts, report it (registrations list it, heartbeats
repeat completed containers until an answer acknowledges them) and kill what the RM's answers
name; the modelled AM asks with absolute counts, releases, and resyncs as AMRMClient does (on
ApplicationMasterNotRegisteredException: register again, re-send the outstanding count).  After each
step, and after a final round in which everyone catches up:

* every node's usage is the sum of the containers the scheduler holds on it;
* no container id is ever handed out twice, across all the RMs;
* no completion reaches the AM twice -- but for a container it released: if the RM died before
  its node killed it, the next RM recovers it from the node's list and reports its end again
  (YARN has the same window; Spark ignores news of containers it released);
* the application keeps its one attempt;
* once caught up, the containers the scheduler holds for the attempt are exactly those the nodes run.
"""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import ContainerReport, NodeAction, NodeStatusReport
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.errors import APPLICATION_MASTER_NOT_REGISTERED, RemoteError
from tests.support.restartable_rm import KEY, RM, completed, running
from tests.support.rm_core import submitted

NODES = (NodeId("10.0.0.1", 45454), NodeId("10.0.0.2", 45454), NodeId("10.0.0.3", 45454))
MAX_EXECUTORS = 6


class NodeModel:
    """A NodeManager's containers: running ones, and completed ones not yet acknowledged."""

    def __init__(self, node_id: NodeId) -> None:
        self.node_id = node_id
        self.running: dict[ContainerId, RMContainer] = {}
        self.done: dict[ContainerId, ContainerReport] = {}
        self.response_id = 0

    def reports(self) -> tuple[ContainerReport, ...]:
        return (*(running(c) for c in self.running.values()), *self.done.values())

    def end(self, cid: ContainerId, exit_status: int) -> None:
        container = self.running.pop(cid, None)
        if container is not None:
            self.done[cid] = completed(container, exit_status)


class Schedule:
    """One run: an RM (started again at times) over a store, the nodes, and an AM with executors."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStateStore()
        self.rm = RM(self.store, self.clock)
        self.nms = {n: NodeModel(n) for n in NODES}
        for nm in self.nms.values():
            self.register(nm)
        app = submitted(self.rm.scheduling.table)
        self.app_id = app.app_id
        self.clock.advance(0)
        (am,) = self.rm.launches
        self.attempt_id: ApplicationAttemptId = am.attempt_id
        self.am_container = am.container_id
        self.nms[am.node_id].running[am.container_id] = am
        self.handed_out: set[ContainerId] = {am.container_id}
        self.completions: list[ContainerId] = []
        self.released: set[ContainerId] = set()
        self.executors: set[ContainerId] = set()
        self.outstanding = 0
        self.heartbeat(self.nms[am.node_id])
        self.rm.register_am(self.attempt_id)
        self.am_response_id = 0

    # -- the nodes ------------------------------------------------------------------------

    def register(self, nm: NodeModel) -> None:
        self.rm.register(nm.node_id, *nm.reports())
        nm.response_id = 0
        nm.done.clear()  # the answer acknowledges the completed ones listed

    def heartbeat(self, nm: NodeModel) -> None:
        answer = self.rm.tracker.heartbeat(NodeStatusReport(nm.node_id, nm.response_id, containers=nm.reports()), KEY)
        self.clock.advance(0)
        if answer.action is NodeAction.RESYNC:
            self.register(nm)
            return
        nm.response_id = answer.response_id
        nm.done.clear()  # a NORMAL answer acknowledges the completed ones reported
        for cid in answer.containers_to_cleanup:
            nm.end(cid, ContainerExitStatus.KILLED_BY_RESOURCEMANAGER)

    # -- the AM ---------------------------------------------------------------------------

    def allocate(self, more: int = 0, release: tuple[ContainerId, ...] = ()) -> None:
        """One AM heartbeat, resyncing as AMRMClient does when the RM does not know it registered."""
        self.outstanding += more
        try:
            response = self.rm.allocate(self.attempt_id, self.am_response_id, self.outstanding if more else 0, release)
        except RemoteError as e:
            assert e.java_class == APPLICATION_MASTER_NOT_REGISTERED
            self.rm.register_am(self.attempt_id)  # and re-send the outstanding asks, from response id 0
            response = self.rm.allocate(self.attempt_id, 0, self.outstanding, release)
        self.am_response_id = response.response_id
        for proto in response.allocated_containers:
            cid = records.container_id_from_proto(proto.id)
            assert cid not in self.handed_out, f"{cid} handed out twice"
            self.handed_out.add(cid)
            self.outstanding -= 1
            container = self.rm.scheduling.scheduler.container(cid)
            assert container is not None
            self.executors.add(cid)
            self.nms[container.node_id].running[cid] = container  # the AM starts it on its node
        for status in response.completed_container_statuses:
            cid = records.container_id_from_proto(status.container_id)
            assert cid not in self.completions or cid in self.released, f"the completion of {cid} reached the AM twice"
            self.completions.append(cid)
            self.executors.discard(cid)

    # -- the schedule ---------------------------------------------------------------------

    def step(self) -> None:
        action = self.random.choice(["ask", "release", "exit", "heartbeat", "heartbeat", "allocate", "restart", "tick"])
        if action == "ask" and len(self.executors) + self.outstanding < MAX_EXECUTORS:
            self.allocate(more=self.random.randint(1, 2))
        elif action == "release" and self.executors:
            victim = self.random.choice(sorted(self.executors))
            self.released.add(victim)
            self.allocate(release=(victim,))
        elif action == "exit":
            nm = self.random.choice(list(self.nms.values()))
            executors = sorted(c for c in nm.running if c != self.am_container)
            if executors:
                nm.end(self.random.choice(executors), 1)
        elif action == "heartbeat":
            self.heartbeat(self.random.choice(list(self.nms.values())))
        elif action == "allocate":
            self.allocate()
        elif action == "restart":
            self.rm.scheduling.stop()
            self.clock.advance(self.random.uniform(0.5, 3))
            self.rm = RM(self.store, self.clock)
        else:
            self.clock.advance(1)
        self.check()

    def catch_up(self) -> None:
        """Everyone reports until nothing is left to settle."""
        for _ in range(3):
            self.allocate()
            for nm in self.nms.values():
                self.heartbeat(nm)
        self.check()
        held = {c.container_id for c in self.rm.scheduling.containers_of(self.attempt_id)}
        runs = {cid for nm in self.nms.values() for cid in nm.running}
        assert held == runs

    def check(self) -> None:
        scheduler = self.rm.scheduling.scheduler
        for node in self.rm.nodes:
            on_it = sum((c.resource for c in scheduler.node_containers(node.node_id)), Resource())
            assert node.used == on_it, f"{node.node_id} uses {node.used}, holds {on_it}"
        app = self.rm.scheduling.table.get(self.app_id)
        assert len(app.attempts) == 1 and not app.attempts[0].state.is_terminal


@pytest.mark.parametrize("seed", range(300))
def test_a_random_schedule_of_restarts_keeps_the_accounting_and_the_attempt(seed: int) -> None:
    """See the module docstring."""
    schedule = Schedule(seed)
    for _ in range(60):
        schedule.step()
    schedule.catch_up()
