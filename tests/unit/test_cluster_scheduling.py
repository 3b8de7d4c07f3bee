"""The RM's scheduling service on a Clock: applications, scheduler, nodes and AMs together.

Everything is real but the AM launcher (the one I/O seam), which records what it
was asked to start and answers as the test says.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator import node_cleanup
from cortex_rm.allocator.app_model import Application, SchedulerLimits
from cortex_rm.allocator.app_states import AppState, AttemptState, FinalStatus
from cortex_rm.allocator.app_table import ApplicationTable
from cortex_rm.allocator.asks import ResourceAsk
from cortex_rm.allocator.cluster_scheduling import ClusterScheduling, SchedulingTimers
from cortex_rm.allocator.containers import RMContainer
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.allocator.queues import QueueTree
from cortex_rm.allocator.scheduler import CapacityScheduler
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import ContainerReport
from cortex_rm.yarn.resources import Resource
from tests.support.rm_core import result_of, submitted

N1, N2 = NodeId("10.0.0.1", 45454), NodeId("10.0.0.2", 45454)


class Cluster:
    """A scheduling service over two 8 GiB nodes, with a recording AM launcher."""

    def __init__(self, limits: SchedulerLimits = SchedulerLimits(), am_expiry_ms: int = 60_000) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.nodes = NodeTable()
        self.scheduler = CapacityScheduler(
            QueueTree(),
            self.nodes,
            self.clock,
            SchedulerConfig(
                maximum_allocation=limits.maximum_allocation,
                node_locality_delay_ms=0,
                rack_locality_delay_ms=0,
                max_am_share=1.0,
            ),
        )
        self.launches: list[tuple[Application, RMContainer]] = []
        self.launch_result: Any = None  # None: succeed; an Exception: fail
        self.service = result_of(
            ClusterScheduling.recover(
                self.clock,
                MemoryStateStore(),
                limits,
                self.scheduler,
                self._launch,
                SchedulingTimers(am_expiry_ms=am_expiry_ms),
            )
        )
        self.table: ApplicationTable = self.service.table
        self.service.start()
        for node_id in (N1, N2):
            record = self.nodes.register(node_id, f"{node_id.host}:8042", Resource(8192, 8), 0)
            self.service.node_registered(record)

    def _launch(self, app: Application, container: RMContainer) -> defer.Deferred:
        self.launches.append((app, container))
        if isinstance(self.launch_result, Exception):
            return defer.fail(self.launch_result)
        return defer.succeed(None)

    def settle(self) -> None:
        """Let scheduled passes (callLater(0)) run."""
        self.clock.advance(0)

    def report(self, node_id: NodeId, container: RMContainer, state: ContainerState, exit_status: int = 0) -> None:
        self.service.containers_reported(
            self.nodes.get(node_id), (ContainerReport(container.container_id, state, exit_status, "test"),)
        )

    def running_app(self) -> tuple[Application, RMContainer]:
        """An application whose AM was launched, reported RUNNING and registered."""
        app = submitted(self.table)
        self.settle()
        _, am = self.launches[-1]
        self.report(am.node_id, am, ContainerState.RUNNING)
        attempt = app.current_attempt
        assert attempt is not None
        result_of(self.service.register(attempt.attempt_id, "driver", 7077, ""))
        return app, am


def test_an_accepted_application_gets_its_am_launched_on_a_node() -> None:
    """Submission -> AM container placed -> launched: attempt LAUNCHED, app still ACCEPTED."""
    cluster = Cluster()
    app = submitted(cluster.table)
    cluster.settle()
    ((launched_app, container),) = cluster.launches
    assert launched_app is app and container.is_am and container.resource == app.am_resource
    attempt = app.current_attempt
    assert attempt is not None
    assert attempt.state is AttemptState.LAUNCHED and attempt.am_container_id == container.container_id
    assert app.reported_state is AppState.ACCEPTED and "waiting for the AM to register" in app.diagnostics


def test_executors_are_allocated_reported_and_completed_through_allocate() -> None:
    """Asks -> containers with the ask's priority; a finished executor comes back once in completed."""
    cluster = Cluster()
    app, _ = cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(2048, 1), num_containers=2)
    result = cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1)
    assert len(result.allocated) == 2 and {c.priority for c in result.allocated} == {0}
    assert result.num_cluster_nodes == 2
    executor = result.allocated[0]
    cluster.report(executor.node_id, executor, ContainerState.RUNNING)
    cluster.report(executor.node_id, executor, ContainerState.COMPLETE, exit_status=1)
    again = cluster.service.allocate(attempt_id, [], [], [], [], 0.5)
    assert [c.container_id for c in again.completed] == [executor.container_id]
    assert again.completed[0].exit_status == 1
    assert cluster.service.allocate(attempt_id, [], [], [], [], 0.5).completed == []


def test_an_am_that_exits_without_unregistering_gets_a_second_attempt_on_a_new_container() -> None:
    """The AM container's end fails the attempt; attempt 2 is scheduled and launched."""
    cluster = Cluster()
    app, am = cluster.running_app()
    cluster.report(am.node_id, am, ContainerState.COMPLETE, exit_status=1)
    cluster.settle()
    assert len(app.attempts) == 2 and app.attempts[0].state is AttemptState.FAILED
    assert len(cluster.launches) == 2
    assert cluster.launches[1][1].attempt_id == app.attempts[1].attempt_id


def test_a_lost_node_takes_its_containers_and_does_not_count_the_am_against_the_app() -> None:
    """Node LOST: executors complete with -100 for the AM; an AM on it is retried without using up attempts."""
    cluster = Cluster(limits=SchedulerLimits(max_app_attempts=1))
    app, am = cluster.running_app()
    cluster.service.node_lost(cluster.nodes.expire(am.node_id))
    cluster.settle()
    assert app.attempts[0].state is AttemptState.FAILED and app.attempts[0].exit_status == -100
    assert app.state is AppState.ACCEPTED and len(app.attempts) == 2
    other = N2 if am.node_id == N1 else N1
    assert cluster.launches[-1][1].node_id == other


def test_killing_a_running_app_kills_its_containers_on_their_nodes() -> None:
    """KILL: the AM and executors are queued for their nodes' next heartbeat; the app ends KILLED."""
    cluster = Cluster()
    app, am = cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    ask = ResourceAsk(priority=0, resource_name="*", capability=Resource(1024, 1), num_containers=1)
    (executor,) = cluster.service.allocate(attempt_id, [ask], [], [], [], 0.1).allocated
    assert result_of(cluster.table.kill(app.app_id)) is False
    cluster.settle()
    assert app.state is AppState.KILLED and app.final_status is FinalStatus.KILLED
    to_kill = set()
    for node_id in (N1, N2):
        containers = cluster.service.cleanup_for(cluster.nodes.get(node_id)).containers_to_cleanup
        to_kill.update(containers)
    assert to_kill == {am.container_id, executor.container_id}


def test_a_finished_application_is_cleaned_up_on_the_nodes_that_ran_it() -> None:
    """Unregister -> FINISHING -> AM container ends -> FINISHED, and its nodes are told to clean up."""
    cluster = Cluster()
    app, am = cluster.running_app()
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    assert result_of(cluster.service.unregister(attempt_id, FinalStatus.SUCCEEDED, "", "")) is True
    assert app.state is AppState.FINISHING
    cluster.report(am.node_id, am, ContainerState.COMPLETE, exit_status=0)
    assert app.state is AppState.FINISHED and app.final_status is FinalStatus.SUCCEEDED
    apps = cluster.service.cleanup_for(cluster.nodes.get(am.node_id)).applications_to_cleanup
    assert apps == (app.app_id,)


def test_only_a_node_told_to_clean_up_an_application_may_aggregate_its_logs() -> None:
    """A node aggregates an application's logs only after the RM told it to clean the application
    up (so it ran some of its containers); another node is refused; the node may try again."""
    cluster = Cluster()
    app, am = cluster.running_app()
    other = N2 if am.node_id == N1 else N1
    assert not cluster.service.may_aggregate(app.app_id, am.node_id)  # still running: nothing to aggregate
    attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
    assert result_of(cluster.service.unregister(attempt_id, FinalStatus.SUCCEEDED, "", "")) is True
    cluster.report(am.node_id, am, ContainerState.COMPLETE, exit_status=0)
    assert not cluster.service.may_aggregate(app.app_id, am.node_id)  # not yet told
    cluster.service.cleanup_for(cluster.nodes.get(am.node_id))
    cluster.service.cleanup_for(cluster.nodes.get(other))
    assert not cluster.service.may_aggregate(app.app_id, other)  # ran none of its containers
    assert cluster.service.may_aggregate(app.app_id, am.node_id)
    assert cluster.service.may_aggregate(app.app_id, am.node_id)  # a retry after a failed try


def test_pending_log_aggregations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes that never aggregate (no logs, aggregation off) do not grow the RM: beyond the bound
    the oldest permissions are forgotten."""
    monkeypatch.setattr(node_cleanup, "MAX_PENDING_AGGREGATIONS", 2)
    cluster = Cluster()
    ended = []
    for _ in range(3):
        app, am = cluster.running_app()
        attempt_id = app.current_attempt.attempt_id  # type: ignore[union-attr]
        result_of(cluster.service.unregister(attempt_id, FinalStatus.SUCCEEDED, "", ""))
        cluster.report(am.node_id, am, ContainerState.COMPLETE, exit_status=0)
        cluster.service.cleanup_for(cluster.nodes.get(am.node_id))
        ended.append((app.app_id, am.node_id))
    assert [cluster.service.may_aggregate(*pair) for pair in ended] == [False, True, True]


def test_an_am_bigger_than_every_node_fails_the_application_at_once() -> None:
    """An AM that no node can ever hold fails with the scheduler's reason instead of waiting."""
    cluster = Cluster(limits=SchedulerLimits(maximum_allocation=Resource(16384, 16)))
    app = submitted(cluster.table, am_resource=Resource(12288, 1))
    cluster.settle()
    assert app.state is AppState.FAILED and "can never run" in app.diagnostics
    assert cluster.launches == []


def test_a_failed_launch_fails_the_attempt_with_the_reason() -> None:
    """If the node refuses the AM container, the attempt fails naming why; the next one is tried."""
    cluster = Cluster(limits=SchedulerLimits(max_app_attempts=1))
    cluster.launch_result = OSError("node said no")
    app = submitted(cluster.table)
    cluster.settle()
    assert app.state is AppState.FAILED and "node said no" in app.diagnostics


def test_a_silent_am_expires_and_its_attempt_fails() -> None:
    """No heartbeat for am_expiry_ms: the attempt fails (and a new one starts)."""
    cluster = Cluster(am_expiry_ms=30_000)
    app, _ = cluster.running_app()
    cluster.clock.advance(31)
    cluster.clock.advance(11)  # the monitor looks every expiry/3
    cluster.settle()
    assert app.attempts[0].state is AttemptState.FAILED and "timed out" in app.attempts[0].diagnostics
    assert len(app.attempts) == 2


def test_waiting_applications_say_why_in_their_diagnostics() -> None:
    """With the cluster full, an accepted application's diagnostics name what it waits for."""
    cluster = Cluster()
    big = submitted(cluster.table, am_resource=Resource(8192, 4))
    cluster.settle()
    other = submitted(cluster.table, am_resource=Resource(8192, 4))
    cluster.settle()
    third = submitted(cluster.table, am_resource=Resource(8192, 4))
    cluster.settle()
    assert big.current_attempt.state is AttemptState.LAUNCHED  # type: ignore[union-attr]
    assert other.current_attempt.state is AttemptState.LAUNCHED  # type: ignore[union-attr]
    assert third.reported_state is AppState.ACCEPTED
    assert third.diagnostics.startswith("Waiting for the AM container:")


def test_an_unhealthy_node_takes_no_containers_and_loses_those_it_had_until_it_is_healthy() -> None:
    """As YARN: an UNHEALTHY node leaves the scheduler (its containers end ABORTED, so Spark asks
    again without counting a failure) and AMs go to the healthy node; healthy again, it is used."""
    cluster = Cluster()
    app, am = cluster.running_app()
    sick = am.node_id
    healthy = N2 if sick == N1 else N1
    cluster.nodes.report(sick, 0, healthy=False, health_report="waiting for the runtime image")
    cluster.service.node_health_changed(cluster.nodes.get(sick))
    cluster.settle()
    first, retry = app.attempts
    assert first.state is AttemptState.FAILED
    assert "unhealthy node: waiting for the runtime image" in first.diagnostics
    to_kill = cluster.service.cleanup_for(cluster.nodes.get(sick)).containers_to_cleanup
    assert to_kill == (am.container_id,)  # the node still runs the old AM: it must stop it
    second = submitted(cluster.table)
    cluster.settle()
    assert retry.am_node == str(healthy)
    assert [c.node_id for a, c in cluster.launches if a is second] == [healthy]
    cluster.nodes.report(sick, 0, healthy=True)
    cluster.service.node_health_changed(cluster.nodes.get(sick))
    assert sick in cluster.scheduler.nodes.by_id
