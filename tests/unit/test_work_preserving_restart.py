"""Work-preserving RM restart on a Clock: one state store, RMs started on it one after another.

Each ``RM`` (``tests/support/restartable_rm.py``) is wired as the RM role wires it -- the node tracker, the scheduling
service (recovered from the store) and ApplicationMasterProtocol's handlers -- and
the tests play the nodes (registrations and heartbeats with their container lists)
and the AM (its calls with its AMRMToken), as YARN's NodeManagers and AMRMClient do
after an RM restart.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cortex_rm.allocator.app_states import AppState, AttemptState
from cortex_rm.allocator.state_store import MemoryStateStore
from cortex_rm.allocator.work_recovery import AM_LOST_WITH_NODE
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import ContainerReport, NodeStatusReport
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn_api import records
from cortex_rm.yarn_api.errors import APPLICATION_MASTER_NOT_REGISTERED, RemoteError
from cortex_rm.yarn_api.proto import yarn_protos_pb2 as yp
from cortex_rm.yarn_api.proto import yarn_service_protos_pb2 as ys
from tests.support.restartable_rm import AM_EXPIRY_MS, KEY, RM, completed, container_ids, running
from tests.support.rm_core import result_of, submitted

N1, N2, N3 = NodeId("10.0.0.1", 45454), NodeId("10.0.0.2", 45454), NodeId("10.0.0.3", 45454)


class Cluster:
    """A store, a clock, and an application whose AM runs and holds two executors (on N1..N3)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStateStore()
        self.rm = RM(self.store, self.clock)
        for node_id in (N1, N2, N3):
            self.rm.register(node_id)
        self.app = submitted(self.rm.scheduling.table)
        self.clock.advance(0)
        (self.am,) = self.rm.launches
        self.attempt_id = self.am.attempt_id
        self.rm.heartbeat(self.am.node_id, running(self.am))
        self.rm.register_am(self.attempt_id)
        response = self.rm.allocate(self.attempt_id, 0, executors=2)
        self.executors = [self.rm.scheduling.scheduler.container(c) for c in container_ids(response)]
        for executor in self.executors:
            assert executor is not None
            self.rm.heartbeat(executor.node_id, running(executor))

    def restart(self, after_s: float = 5) -> RM:
        """The RM dies (nothing of it is stopped cleanly but its timers) and a new one starts on the store."""
        self.rm.scheduling.stop()
        self.clock.advance(after_s)
        self.rm = RM(self.store, self.clock)
        self.app = self.rm.scheduling.table.get(self.app.app_id)
        return self.rm

    def nm_view(self, node_id: NodeId) -> list[ContainerReport]:
        """What ``node_id`` still runs of the application."""
        return [running(c) for c in [self.am, *self.executors] if c is not None and c.node_id == node_id]


def test_a_restart_keeps_the_attempt_and_the_am_resyncs_by_registering_again() -> None:
    """After a restart the attempt goes on (LAUNCHED, application ACCEPTED); the AM's allocate gets
    ApplicationMasterNotRegisteredException, its registration is accepted, and the application runs
    again with its one attempt: no AM was started, none was counted as failed."""
    cluster = Cluster()
    rm = cluster.restart()
    app = cluster.app
    assert [a.state for a in app.attempts] == [AttemptState.LAUNCHED]
    assert app.state is AppState.ACCEPTED and "register" in app.diagnostics
    with pytest.raises(RemoteError) as raised:
        rm.allocate(cluster.attempt_id, 7)
    assert raised.value.java_class == APPLICATION_MASTER_NOT_REGISTERED
    rm.register_am(cluster.attempt_id)
    assert (app.state, app.attempts[0].state) == (AppState.RUNNING, AttemptState.RUNNING)
    rm.allocate(cluster.attempt_id, 0)  # AMRMClient's response ids start again at 0
    assert rm.launches == [] and len(app.attempts) == 1 and app.counted_failures == 0


def test_an_am_that_finishes_before_registering_again_is_told_to_register_first() -> None:
    """finishApplicationMaster from a recovered attempt that has not registered with this RM is answered
    ApplicationMasterNotRegisteredException too (AMRMClient then registers and finishes again); after
    that the application finishes with its one attempt."""
    cluster = Cluster()
    rm = cluster.restart()
    finish = ys.FinishApplicationMasterRequestProto(final_application_status=yp.APP_SUCCEEDED)
    with pytest.raises(RemoteError) as raised:
        rm.call(cluster.attempt_id, "finishApplicationMaster", finish)
    assert raised.value.java_class == APPLICATION_MASTER_NOT_REGISTERED
    rm.register(cluster.am.node_id, *cluster.nm_view(cluster.am.node_id))
    rm.register_am(cluster.attempt_id)
    assert rm.call(cluster.attempt_id, "finishApplicationMaster", finish).isUnregistered
    rm.heartbeat(cluster.am.node_id, completed(cluster.am, 0))  # the AM's container exits
    app = cluster.app
    assert (app.state, len(app.attempts), app.attempts[0].state) == (AppState.FINISHED, 1, AttemptState.FINISHED)


def test_nodes_registering_again_bring_their_running_containers_back_into_the_accounting() -> None:
    """The containers the nodes list are counted in (node usage, the attempt), the AM's container is its
    AM container again, a container that ended meanwhile reaches the AM's completed list, and new
    containers carry the new epoch, so no id repeats one of the first RM's."""
    cluster = Cluster()
    rm = cluster.restart()
    first, second = cluster.executors
    assert first is not None and second is not None
    for node_id in (N1, N2, N3):
        views = [r for r in cluster.nm_view(node_id) if r.container_id != second.container_id]
        if second.node_id == node_id:
            views.append(completed(second, 143))
        rm.register(node_id, *views)
    used = sum((n.used for n in rm.nodes), Resource())
    assert used == cluster.am.resource + first.resource
    assert {c.container_id for c in rm.scheduling.containers_of(cluster.attempt_id)} == {
        cluster.am.container_id, first.container_id,
    }  # fmt: skip
    recovered_am = rm.scheduling.scheduler.container(cluster.am.container_id)
    assert recovered_am is not None and recovered_am.is_am
    rm.register_am(cluster.attempt_id)
    response = rm.allocate(cluster.attempt_id, 0, executors=1)
    statuses = response.completed_container_statuses
    done = [(records.container_id_from_proto(s.container_id), s.exit_status) for s in statuses]
    assert done == [(second.container_id, 143)]
    (new,) = container_ids(response)
    assert new.epoch == 1 and str(new).startswith("container_e01_")
    assert new not in {cluster.am.container_id, first.container_id, second.container_id}


def test_a_recovered_container_released_by_the_am_ends_and_its_node_kills_it() -> None:
    """Releases and completions work on recovered containers as on any other."""
    cluster = Cluster()
    rm = cluster.restart()
    for node_id in (N1, N2, N3):
        rm.register(node_id, *cluster.nm_view(node_id))
    rm.register_am(cluster.attempt_id)
    executor = cluster.executors[0]
    assert executor is not None
    rm.allocate(cluster.attempt_id, 0, release=(executor.container_id,))
    assert executor.container_id in rm.heartbeat(executor.node_id, *cluster.nm_view(executor.node_id))
    assert rm.scheduling.scheduler.container(executor.container_id) is None


def test_a_release_before_the_node_is_back_is_applied_when_it_registers() -> None:
    """An AM that resyncs before the node of one of its containers registers may release that container:
    when the node lists it, it is not counted in but killed (YARN's pendingRelease)."""
    cluster = Cluster()
    rm = cluster.restart()
    rm.register_am(cluster.attempt_id)
    executor = cluster.executors[0]
    assert executor is not None
    rm.allocate(cluster.attempt_id, 0, release=(executor.container_id,))
    rm.register(executor.node_id, *cluster.nm_view(executor.node_id))
    assert rm.scheduling.scheduler.container(executor.container_id) is None
    assert executor.container_id in rm.heartbeat(executor.node_id)


def test_containers_of_unknown_or_ended_applications_are_killed_and_ended_ones_cleaned_up() -> None:
    """A node lists containers nobody goes on with: those of an application the RM never knew, and those of
    an application that ended while the RM was down: both are killed; the ended one is cleaned up."""
    cluster = Cluster()
    rm1 = cluster.rm
    result_of(rm1.scheduling.table.kill(cluster.app.app_id))
    rm = cluster.restart()
    assert cluster.app.state.is_terminal
    app_id = cluster.app.app_id
    stranger = ContainerId(ApplicationAttemptId(ApplicationId(app_id.cluster_timestamp, app_id.id + 98), 1), 2)
    views = [*cluster.nm_view(N1), ContainerReport(stranger, ContainerState.RUNNING, resource=Resource(1024, 1))]
    rm.register(N1, *views)
    answer = rm.tracker.heartbeat(NodeStatusReport(N1, 0), KEY)
    assert set(answer.containers_to_cleanup) == {v.container_id for v in views}
    assert cluster.app.app_id in answer.applications_to_cleanup
    assert rm.nodes.get(N1).used == Resource()


def test_an_am_whose_node_comes_back_without_it_ends_its_attempt_without_counting_it() -> None:
    """The AM's node registers again without the AM container (its NodeManager lost it): the attempt is
    over, ABORTED -- the node's doing, not the AM's -- and the next attempt starts."""
    cluster = Cluster()
    rm = cluster.restart()
    rm.register(cluster.am.node_id)
    app = cluster.app
    assert app.attempts[0].state is AttemptState.FAILED
    assert (app.attempts[0].exit_status, AM_LOST_WITH_NODE in app.attempts[0].diagnostics) == (
        ContainerExitStatus.ABORTED, True,
    )  # fmt: skip
    assert app.counted_failures == 0 and len(app.attempts) == 2 and len(rm.launches) == 1


def test_an_am_that_ended_while_the_rm_was_down_fails_its_attempt_with_its_exit_status() -> None:
    """The AM's node lists the AM container as completed (exit 1): the attempt failed, and it counts."""
    cluster = Cluster()
    rm = cluster.restart()
    rm.register(cluster.am.node_id, completed(cluster.am, 1))
    app = cluster.app
    assert (app.attempts[0].state, app.attempts[0].exit_status, app.counted_failures) == (AttemptState.FAILED, 1, 1)
    assert len(app.attempts) == 2


def test_a_recovered_am_that_never_registers_again_expires_and_counts() -> None:
    """Its node is back and runs it, but the AM stays silent past the AM expiry: the attempt fails as
    any silent AM's does (counted)."""
    cluster = Cluster()
    rm = cluster.restart()
    for node_id in (N1, N2, N3):
        rm.register(node_id, *cluster.nm_view(node_id))
    for _ in range(int(AM_EXPIRY_MS / 1000) + 25):
        cluster.clock.advance(1)
        for node_id in (N1, N2, N3):
            rm.heartbeat(node_id, *cluster.nm_view(node_id))
    app = cluster.app
    assert app.attempts[0].state is AttemptState.FAILED and "timed out" in app.attempts[0].diagnostics
    assert app.counted_failures == 1 and len(app.attempts) == 2


def test_an_am_whose_node_never_comes_back_is_lost_with_it_at_expiry_without_counting() -> None:
    """The AM's node never registers with the new RM: at AM expiry the attempt ends ABORTED (lost with
    its node, not counted) and the next attempt gets an AM container on a node that is there."""
    cluster = Cluster()
    rm = cluster.restart()
    others = [n for n in (N1, N2, N3) if n != cluster.am.node_id]
    for node_id in others:
        rm.register(node_id, *cluster.nm_view(node_id))
    for _ in range(int(AM_EXPIRY_MS / 1000) + 25):
        cluster.clock.advance(1)
        for node_id in others:
            rm.heartbeat(node_id, *cluster.nm_view(node_id))
    app = cluster.app
    first = app.attempts[0]
    assert (first.state, first.exit_status) == (AttemptState.FAILED, ContainerExitStatus.ABORTED)
    assert "did not come back" in first.diagnostics
    assert app.counted_failures == 0 and len(app.attempts) == 2
    assert [c.node_id in others for c in rm.launches] == [True]


def test_a_node_lost_and_back_with_the_same_rm_recovers_nothing() -> None:
    """Recovery is for a node's first registration with an RM: when it registers again after it was lost,
    the containers this RM ended are killed, not counted in again."""
    cluster = Cluster()
    rm = cluster.restart()
    executor = cluster.executors[0]
    assert executor is not None
    node_id = executor.node_id
    rm.register(node_id, *cluster.nm_view(node_id))
    assert rm.scheduling.scheduler.container(executor.container_id) is not None
    cluster.clock.advance(61)  # silent past the expiry: LOST, and its containers with it
    rm.tracker.expire_silent_nodes(int(cluster.clock.seconds() * 1000))
    assert rm.scheduling.scheduler.container(executor.container_id) is None
    rm.register(node_id, *cluster.nm_view(node_id))
    assert rm.scheduling.scheduler.container(executor.container_id) is None
    assert executor.container_id in rm.heartbeat(node_id, *cluster.nm_view(node_id))


def test_a_node_whose_nodemanager_restarted_with_recovery_keeps_the_containers_it_lists() -> None:
    """A node registers again while this RM holds containers on it (its NodeManager restarted and took
    them back: YARN's reconnect with running applications): those it lists RUNNING stay (no attempt
    fails), one it reports complete reaches the AM with its exit status, one it does not list ends
    ABORTED; a node that lists nothing (a NodeManager without recovery) loses all of them."""
    cluster = Cluster()
    rm = cluster.rm
    first, second = cluster.executors
    assert first is not None and second is not None
    am_node = cluster.am.node_id
    views = {n: cluster.nm_view(n) for n in (N1, N2, N3)}
    for node_id, view in views.items():
        listed = [r for r in view if r.container_id != second.container_id]
        if node_id == first.node_id:
            listed = [r if r.container_id != first.container_id else completed(first, 154) for r in listed]
        rm.register(node_id, *listed)
    assert rm.scheduling.scheduler.container(cluster.am.container_id) is not None
    assert cluster.app.attempts[0].state is AttemptState.RUNNING and len(cluster.app.attempts) == 1
    response = rm.allocate(cluster.attempt_id, 1)
    statuses = response.completed_container_statuses
    done = {records.container_id_from_proto(s.container_id): s.exit_status for s in statuses}
    assert done == {first.container_id: 154, second.container_id: ContainerExitStatus.ABORTED}
    rm.register(am_node)  # again, listing nothing: its AM container is gone, and the attempt with it
    assert rm.scheduling.scheduler.container(cluster.am.container_id) is None
    assert cluster.app.attempts[0].state is not AttemptState.RUNNING


def test_every_start_takes_a_new_epoch_for_its_container_ids() -> None:
    """The epoch rises with every start (stored before the RM places anything)."""
    cluster = Cluster()
    assert cluster.am.container_id.epoch == 0
    for expected in (1, 2, 3):
        rm = cluster.restart()
        assert rm.scheduling.scheduler.containers.epoch == expected
    assert result_of(cluster.store.load()).epoch == 4


def test_a_node_cannot_end_another_nodes_containers() -> None:
    """A node that lists another node's AM container as completed (at its registration after a restart) or an
    executor of another node in a heartbeat ends neither: only the node a container runs on reports it."""
    cluster = Cluster()
    liar = next(n for n in (N1, N2, N3) if n != cluster.am.node_id)
    rm = cluster.restart()
    rm.register(liar, *cluster.nm_view(liar), completed(cluster.am, 1))
    for node_id in (N1, N2, N3):
        if node_id != liar:
            rm.register(node_id, *cluster.nm_view(node_id))
    app = cluster.app
    assert len(app.attempts) == 1 and not app.attempts[0].state.is_terminal and app.counted_failures == 0
    executor = next(e for e in cluster.executors if e is not None and e.node_id != liar)
    rm.heartbeat(liar, completed(executor, 137))
    held = rm.scheduling.scheduler.container(executor.container_id)
    assert held is not None and held.node_id == executor.node_id  # still running, on its own node
