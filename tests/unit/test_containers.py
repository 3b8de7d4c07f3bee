"""The RMContainer lifecycle (YARN's RMContainerState) and ContainerExitStatus constants."""

from __future__ import annotations

import pytest

from cortex_rm.allocator.containers import CONTAINER_TRANSITIONS, RMContainer, RMContainerEvent, RMContainerState
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.errors import IllegalTransition
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resources import Resource

S, E = RMContainerState, RMContainerEvent
ATTEMPT = ApplicationAttemptId(ApplicationId(1_700_000_000_000, 7), 1)


def _container(state: RMContainerState = S.NEW) -> RMContainer:
    c = RMContainer(ContainerId(ATTEMPT, 2), NodeId("nm1", 45454), Resource(1024, 1), priority=0)
    c.state = state
    return c


def test_exit_status_constants_are_yarns() -> None:
    """The named exit statuses carry YARN's ContainerExitStatus values (what Spark interprets)."""
    assert (ContainerExitStatus.SUCCESS, ContainerExitStatus.INVALID, ContainerExitStatus.ABORTED) == (0, -1000, -100)
    assert [
        ContainerExitStatus.DISKS_FAILED,
        ContainerExitStatus.PREEMPTED,
        ContainerExitStatus.KILLED_EXCEEDED_VMEM,
        ContainerExitStatus.KILLED_EXCEEDED_PMEM,
        ContainerExitStatus.KILLED_BY_APPMASTER,
        ContainerExitStatus.KILLED_BY_RESOURCEMANAGER,
        ContainerExitStatus.KILLED_AFTER_APP_COMPLETION,
    ] == [-101, -102, -103, -104, -105, -106, -107]


def test_normal_life_is_allocated_acquired_running_completed() -> None:
    """START, ACQUIRED, LAUNCHED, FINISHED walk the happy path and stamp each time."""
    c = _container()
    for event, state, now in [(E.START, S.ALLOCATED, 10), (E.ACQUIRED, S.ACQUIRED, 20), (E.LAUNCHED, S.RUNNING, 30)]:
        assert c.handle(event, now)
        assert c.state is state
    assert c.finish(E.FINISHED, 143, "killed by SIGTERM", 40)
    assert (c.state, c.exit_status, c.diagnostics) == (S.COMPLETED, 143, "killed by SIGTERM")
    assert (c.creation_time_ms, c.acquired_time_ms, c.launch_time_ms, c.finish_time_ms) == (10, 20, 30, 40)
    assert c.acquired and not c.is_live


@pytest.mark.parametrize(
    ("event", "final"),
    [(E.FINISHED, S.COMPLETED), (E.RELEASED, S.RELEASED), (E.KILL, S.KILLED)],
)
@pytest.mark.parametrize("live", [S.ALLOCATED, S.ACQUIRED, S.RUNNING])
def test_every_live_state_can_end_each_way(live: RMContainerState, event: RMContainerEvent, final: RMContainerState) -> None:
    """A live container ends by finishing, being released or being killed, from any live state."""
    c = _container(live)
    assert c.finish(event, ContainerExitStatus.ABORTED, "why", 5)
    assert c.state is final and c.state.is_final


def test_only_a_container_not_yet_running_can_expire() -> None:
    """EXPIRE ends an ALLOCATED or ACQUIRED container; a RUNNING one cannot expire."""
    for state in (S.ALLOCATED, S.ACQUIRED):
        c = _container(state)
        assert c.finish(E.EXPIRE, ContainerExitStatus.ABORTED, "unused", 1)
        assert c.state is S.EXPIRED
    with pytest.raises(IllegalTransition, match="EXPIRE is not valid in state RUNNING"):
        _container(S.RUNNING).handle(E.EXPIRE, 1)


@pytest.mark.parametrize("final", [S.COMPLETED, S.RELEASED, S.KILLED, S.EXPIRED])
def test_a_final_container_ignores_late_news_so_it_completes_once(final: RMContainerState) -> None:
    """After the end, reports of running/finishing/releasing/killing change nothing (completed exactly once)."""
    c = _container(final)
    c.exit_status = -100
    for event in (E.LAUNCHED, E.FINISHED, E.RELEASED, E.KILL, E.EXPIRE):
        assert not c.finish(event, 0, "late", 99)
    assert (c.state, c.exit_status) == (final, -100)


def test_repeated_running_reports_are_ignored() -> None:
    """Nodes report RUNNING on every heartbeat: LAUNCHED in RUNNING is declared ignorable."""
    c = _container(S.RUNNING)
    c.launch_time_ms = 5
    assert not c.handle(E.LAUNCHED, 50)
    assert c.launch_time_ms == 5


def test_a_node_cannot_launch_a_container_never_handed_out() -> None:
    """LAUNCHED for an ALLOCATED container (no AM has it yet) is ignored, not obeyed."""
    c = _container(S.ALLOCATED)
    assert not c.handle(E.LAUNCHED, 1)
    assert c.state is S.ALLOCATED


def test_undeclared_events_raise() -> None:
    """Anything the table does not list is a bug: a NEW container cannot be acquired, a running one not re-acquired."""
    with pytest.raises(IllegalTransition):
        _container(S.NEW).handle(E.ACQUIRED, 1)
    with pytest.raises(IllegalTransition):
        _container(S.RUNNING).handle(E.ACQUIRED, 1)
    assert not CONTAINER_TRANSITIONS.accepts(S.COMPLETED, E.FINISHED)


def test_container_knows_its_attempt_and_shows_its_id() -> None:
    """The attempt comes from the container id; repr names id, node, resource and state."""
    c = _container(S.ALLOCATED)
    assert c.attempt_id == ATTEMPT
    assert "container_1700000000000_0007_01_000002 on nm1:45454" in repr(c)
