"""A node's graceful leave: the sans-IO core's phases on given times, the driver on a ``Clock`` with the
real ContainerManager (``FakeRuntime``) and the real status updater core, and the wire fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rm.container.graceful_leave import GracefulLeave, KillContainers, LeavePhase
from cortex_rm.container.nm_container import NMContainerState
from cortex_rm.container.status_updater import Disconnect, NodeStatusUpdater, SendHeartbeat, SendRegistration
from cortex_rm.internal import tracker_codec
from cortex_rm.internal.errors import MalformedMessage
from cortex_rm.roles.graceful_leave import LeaveDriver
from cortex_rm.yarn.container_status import ContainerExitStatus, ContainerState
from cortex_rm.yarn.resource_tracker import (
    HeartbeatAnswer,
    NodeAction,
    NodeHealth,
    NodeLeave,
    NodeRegistration,
    NodeStatusReport,
)
from cortex_rm.yarn.resources import Resource
from tests.support.nm_requests import NODE, cid
from tests.unit.test_container_manager import Node
from tests.unit.test_status_updater import NO_JITTER, REG, registered_updater

# -- the core ------------------------------------------------------------------------------


def test_containers_that_finish_within_the_grace_are_not_killed() -> None:
    """DECOMMISSIONING while containers run; DRAINED when none is left; LEFT on the RM's word."""
    leave = GracefulLeave(100.0, grace_s=60)
    assert leave.check(100.0, live=2, rm_reachable=True) == []
    assert (leave.phase, leave.report) == (LeavePhase.DRAINING, NodeLeave.DECOMMISSIONING)
    assert "waiting for 2 containers to finish (grace ends in 60 s)" in leave.doing(100.0)
    assert leave.check(130.0, live=0, rm_reachable=True) == []
    assert (leave.phase, leave.report) == (LeavePhase.DRAINED, NodeLeave.DRAINED)
    leave.confirmed(131.0)
    assert leave.left and "DECOMMISSIONED" in leave.outcome


def test_containers_still_running_when_the_grace_passes_are_killed_once() -> None:
    leave = GracefulLeave(100.0, grace_s=60)
    assert leave.check(159.9, live=1, rm_reachable=True) == []
    (kill,) = leave.check(160.0, live=1, rm_reachable=True)
    assert isinstance(kill, KillContainers) and "grace of 60 s passed" in kill.reason
    assert leave.phase is LeavePhase.KILLING and leave.report is NodeLeave.DECOMMISSIONING
    assert leave.check(161.0, live=1, rm_reachable=True) == []
    leave.check(162.0, live=0, rm_reachable=True)
    assert leave.phase is LeavePhase.DRAINED


def test_a_grace_of_zero_kills_at_the_first_check() -> None:
    leave = GracefulLeave(100.0, grace_s=0)
    assert len(leave.check(100.0, live=3, rm_reachable=True)) == 1


def test_containers_that_do_not_end_when_killed_are_waited_for_at_most_kill_wait() -> None:
    leave = GracefulLeave(0.0, grace_s=10, kill_wait_s=30)
    leave.check(10.0, live=1, rm_reachable=True)
    leave.check(39.9, live=1, rm_reachable=True)
    assert leave.phase is LeavePhase.KILLING
    leave.check(40.0, live=1, rm_reachable=True)
    assert leave.phase is LeavePhase.DRAINED


def test_a_drained_node_waits_for_the_rm_at_most_confirm_wait() -> None:
    leave = GracefulLeave(0.0, grace_s=10, confirm_wait_s=150)
    leave.check(1.0, live=0, rm_reachable=True)
    leave.check(150.9, live=0, rm_reachable=True)
    assert leave.phase is LeavePhase.DRAINED
    leave.check(151.0, live=0, rm_reachable=True)
    assert leave.left and "without the ResourceManager's word" in leave.outcome


def test_a_drained_node_no_rm_ever_registered_leaves_at_once() -> None:
    leave = GracefulLeave(0.0, grace_s=10)
    leave.check(1.0, live=0, rm_reachable=False, rm_known=False)
    assert leave.left and "no RM registered the node" in leave.outcome


def test_a_drained_node_cut_off_from_the_rm_waits_for_it_at_most_confirm_wait() -> None:
    """A failover, a RESYNC or a reset while the RM copies its blocks: the node does not leave at the
    next tick; the time out of reach counts against the confirm wait."""
    leave = GracefulLeave(0.0, grace_s=10, confirm_wait_s=150)
    leave.check(1.0, live=0, rm_reachable=True)
    leave.check(1.25, live=0, rm_reachable=False)
    leave.check(150.9, live=0, rm_reachable=False)
    assert leave.phase is LeavePhase.DRAINED
    leave.check(151.0, live=0, rm_reachable=False)
    assert leave.left and "after 150 s (it is unreachable)" in leave.outcome


def test_a_drained_node_hears_the_rms_word_after_an_outage() -> None:
    leave = GracefulLeave(0.0, grace_s=10, confirm_wait_s=150)
    leave.check(1.0, live=0, rm_reachable=True)
    leave.check(2.0, live=0, rm_reachable=False)
    leave.check(30.0, live=0, rm_reachable=True)
    leave.confirmed(31.0)
    assert leave.left and "DECOMMISSIONED" in leave.outcome


def test_cutting_the_leave_short_kills_what_is_left_and_leaves() -> None:
    leave = GracefulLeave(0.0, grace_s=60)
    leave.check(1.0, live=2, rm_reachable=True)
    (kill,) = leave.cut_short(2.0)
    assert leave.left and "at once" in kill.reason
    assert leave.cut_short(3.0) == [] and leave.check(4.0, live=2, rm_reachable=True) == []


# -- the status updater core ------------------------------------------------------------


def test_heartbeats_say_what_the_leave_says_and_the_rms_decommissioned_is_kept() -> None:
    updater = registered_updater()
    updater.leave = NodeLeave.DRAINED
    (beat,) = updater.heartbeat_due(NodeHealth())
    assert isinstance(beat, SendHeartbeat) and beat.status.leave is NodeLeave.DRAINED
    answer = HeartbeatAnswer(1, NodeAction.SHUTDOWN, 800, decommissioned=True)
    assert updater.answered(answer) == [Disconnect()]
    assert updater.decommissioned


def test_a_plain_shutdown_is_not_a_decommission() -> None:
    updater = registered_updater()
    updater.heartbeat_due(NodeHealth())
    updater.answered(HeartbeatAnswer(1, NodeAction.SHUTDOWN, 800))
    assert not updater.decommissioned


# -- the wire ---------------------------------------------------------------------------


@pytest.mark.parametrize("leave", [None, NodeLeave.DECOMMISSIONING, NodeLeave.DRAINED])
def test_the_leave_travels_in_the_node_status(leave: NodeLeave | None) -> None:
    status = NodeStatusReport(NODE, 4, leave=leave)
    assert tracker_codec.status_from_thrift(tracker_codec.status_to_thrift(status)) == status


@pytest.mark.parametrize("decommissioned", [False, True])
def test_decommissioned_travels_in_the_heartbeat_answer(decommissioned: bool) -> None:
    answer = HeartbeatAnswer(5, NodeAction.SHUTDOWN, 1000, decommissioned=decommissioned)
    assert tracker_codec.heartbeat_answer_from_thrift(tracker_codec.heartbeat_answer_to_thrift(answer)) == answer


@pytest.mark.parametrize("leave", [None, NodeLeave.DECOMMISSIONING, NodeLeave.DRAINED])
def test_the_leave_travels_in_the_registration(leave: NodeLeave | None) -> None:
    registration = NodeRegistration(NODE, "10.0.0.1:8042", "/r", Resource(4096, 4), 1000, leave=leave)
    assert tracker_codec.registration_from_thrift(tracker_codec.registration_to_thrift(registration)) == registration


def test_an_unknown_leave_value_in_a_registration_is_malformed() -> None:
    t = tracker_codec.registration_to_thrift(NodeRegistration(NODE, "10.0.0.1:8042", "/r", Resource(4096, 4), 1000))
    t.leave = 99
    with pytest.raises(MalformedMessage, match="registration.leave"):
        tracker_codec.registration_from_thrift(t)


def test_a_node_that_registers_again_mid_leave_says_so_in_its_registration() -> None:
    """A RESYNC (or an RM failover) while leaving: the registration carries the leave."""
    updater = registered_updater()
    updater.leave = NodeLeave.DRAINED
    updater.heartbeat_due(NodeHealth())
    (register,) = updater.answered(HeartbeatAnswer(0, NodeAction.RESYNC, 800))
    assert isinstance(register, SendRegistration) and register.registration.leave is NodeLeave.DRAINED


def test_an_unknown_leave_value_is_malformed() -> None:
    t = tracker_codec.status_to_thrift(NodeStatusReport(NODE, 0))
    t.leave = 99
    with pytest.raises(MalformedMessage, match="status.leave"):
        tracker_codec.status_from_thrift(t)


# -- the driver ---------------------------------------------------------------------------


def test_the_driver_kills_after_the_grace_with_killed_by_rm_and_waits_for_the_rms_word(tmp_path: Path) -> None:
    """A container outlives the grace: killed, reported -106; the heartbeats say DECOMMISSIONING, then
    DRAINED; the leave ends when the RM's answer says DECOMMISSIONED."""
    node = Node(tmp_path)
    node.start(1)
    node.start(2)
    node.clock.advance(0)
    updater = registered_updater()
    said: list[str] = []
    driver = LeaveDriver(node.clock, node.cm, updater, grace_s=10, poll_s=0.5, progress=said.append)
    done = driver.run()
    assert updater.leave is NodeLeave.DECOMMISSIONING
    node.runtime.finish(str(cid(1)), 0)  # one finishes within the grace
    node.clock.advance(9.5)
    assert node.state(2) is NMContainerState.RUNNING and not done.called
    node.clock.advance(0.5)  # the grace passed
    node.clock.advance(1.0)  # (FakeRuntime: SIGTERM ends it)
    for _ in range(4):
        node.clock.advance(0.5)
    assert node.state(2) is NMContainerState.DONE
    assert (node.report(1).exit_status, node.report(2).exit_status) == (0, ContainerExitStatus.KILLED_BY_RESOURCEMANAGER)
    assert node.report(2).state is ContainerState.COMPLETE
    assert updater.leave is NodeLeave.DRAINED and not done.called
    assert any("waiting for the ResourceManager" in s for s in said)
    updater.heartbeat_due(NodeHealth())
    updater.answered(HeartbeatAnswer(1, NodeAction.SHUTDOWN, 800, decommissioned=True))
    node.clock.advance(0.5)
    assert done.called and driver.core.left


def test_the_driver_cut_short_kills_at_once(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.start(1)
    node.clock.advance(0)
    driver = LeaveDriver(node.clock, node.cm, None, grace_s=60, poll_s=0.5)
    done = driver.run()
    driver.cut_short()
    assert done.called
    assert node.cm.containers[cid(1)].kill_status == ContainerExitStatus.KILLED_BY_RESOURCEMANAGER


def test_a_node_no_rm_ever_registered_kills_its_containers_at_once() -> None:
    """No AM would learn of the leave: no grace (as a plain stop)."""
    leave = GracefulLeave(0.0, grace_s=60)
    assert len(leave.check(0.0, live=2, rm_reachable=False, rm_known=False)) == 1
    assert leave.phase is LeavePhase.KILLING


def test_a_node_whose_updater_reconnects_at_sigterm_keeps_its_grace() -> None:
    leave = GracefulLeave(0.0, grace_s=60)
    assert leave.check(0.0, live=2, rm_reachable=False, rm_known=True) == []
    assert leave.phase is LeavePhase.DRAINING and leave.grace_s == 60


def test_the_driver_of_a_drained_node_whose_updater_reconnects_waits_for_the_rm(tmp_path: Path) -> None:
    """The real status updater core, registered once, then cut off (a reset): the leave keeps waiting
    for the RM's DECOMMISSIONED (the driver reads "registered once" from the updater)."""
    node = Node(tmp_path)
    updater = registered_updater()
    updater.failed("connection reset")
    driver = LeaveDriver(node.clock, node.cm, updater, grace_s=10, poll_s=0.25)
    done = driver.run()
    for _ in range(8):
        node.clock.advance(0.25)
    assert driver.core.phase is LeavePhase.DRAINED and not done.called
    unregistered = NodeStatusUpdater(REG, NO_JITTER)
    unregistered.start()  # (connecting: no RM ever answered its registration)
    never = LeaveDriver(node.clock, node.cm, unregistered, grace_s=10)
    never.run()
    assert never.core.left and "no RM registered" in never.core.outcome


def test_a_node_cut_off_later_keeps_its_grace() -> None:
    leave = GracefulLeave(0.0, grace_s=60)
    leave.check(0.0, live=2, rm_reachable=True)
    assert leave.check(1.0, live=2, rm_reachable=False) == [] and leave.phase is LeavePhase.DRAINING


# -- cortex-rm node leave -------------------------------------------------------------------


def test_node_leave_finds_a_local_clusters_node_and_refuses_what_it_cannot_find(tmp_path: Path) -> None:
    import json

    from cortex_rm.node_leave_cli import LeaveError, daemon_pid, state_dir_of

    (tmp_path / "cluster.json").write_text(json.dumps([{"name": "node2", "directory": str(tmp_path / "node2")}]))
    assert state_dir_of(None, tmp_path, "node2") == tmp_path / "node2"
    with pytest.raises(LeaveError, match="--node \\(node2\\)"):
        state_dir_of(None, tmp_path, None)
    assert state_dir_of(None, tmp_path / "node2", None) == tmp_path / "node2"  # a node's state dir
    with pytest.raises(LeaveError, match="no daemon runs"):
        daemon_pid(tmp_path / "node2")


def test_node_leave_signals_the_daemon_says_what_it_waits_for_and_returns_once_it_exited(tmp_path: Path) -> None:
    """A stand-in daemon (a real process) that notes the SIGTERM and exits when its stdin closes.  No
    wall-clock timing: ``leave``'s injected ``sleep`` plays the daemon's side, one step per poll (two
    progress lines, then the exit, which it waits for and reaps), on a fake clock."""
    import subprocess
    import sys

    from cortex_rm.node import PID_FILE
    from cortex_rm.node_leave_cli import leave

    script = (
        "import signal, sys\n"
        "from cortex_rm.container.ofd_locks import take\n"
        f"lock = take(__import__('pathlib').Path({str(tmp_path / 'lock')!r}))\n"  # (a daemon holds its state dir's)
        "signal.signal(signal.SIGTERM, lambda *_: print('SIGTERM', flush=True))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "ready\n"  # (blocks until its handler is in place)
        (tmp_path / PID_FILE).write_text(str(child.pid))
        progress = tmp_path / "leave-progress"
        steps = [
            lambda: progress.write_text("DECOMMISSIONING: waiting for 1 containers to finish (grace ends in 3 s)\n"),
            lambda: progress.write_text("DECOMMISSIONING: waiting for 1 containers to finish (grace ends in 2 s)\n"),
            lambda: progress.write_text("DRAINED: waiting for the ResourceManager\n"),
            lambda: (child.stdin.close(), child.wait(timeout=60)),  # type: ignore[union-attr]
        ]
        now = [0.0]

        def sleep(seconds: float) -> None:
            now[0] += seconds
            steps.pop(0)()

        said: list[str] = []
        assert leave(tmp_path, 30, said.append, poll_s=0.5, clock=lambda: now[0], sleep=sleep)
        assert child.stdout.read() == "SIGTERM\n"
    finally:
        child.kill()
        child.wait()
    assert said == [
        f"asked the daemon (pid {child.pid}) to leave gracefully",
        "[  0.5 s] DECOMMISSIONING: waiting for 1 containers to finish (grace ends in 3 s)",
        "[  1.5 s] DRAINED: waiting for the ResourceManager",
        "the daemon has left (2.0 s)",
    ]
