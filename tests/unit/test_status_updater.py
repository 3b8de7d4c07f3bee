"""The node's NodeStatusUpdater core: register, heartbeat, resync, back off; and its driver on a Clock.

The core is fed events and checked for the actions it returns.  The driver is
checked against a real ``NodeTracker`` core through a fake ``TrackerClient``
(no sockets), with time from ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock

from cortex_rm.allocator.node_tracker import IgnoringListener, NodeTracker
from cortex_rm.allocator.nodes import NodeRecord, NodeState, NodeTable
from cortex_rm.container.status_updater import (
    Backoff,
    CleanupApplications,
    CleanupContainers,
    Connect,
    ContainersAcknowledged,
    Disconnect,
    NodeStatusUpdater,
    ScheduleHeartbeat,
    ScheduleRetry,
    SendHeartbeat,
    SendRegistration,
    UpdaterState,
)
from cortex_rm.internal.errors import TrackerUnavailable
from cortex_rm.internal.identity import KnownResourceManagers, NodeIdentity
from cortex_rm.internal.tls import MutualTLS
from cortex_rm.roles import status_updater_service as su
from cortex_rm.roles.status_updater_service import NodeStatusUpdaterService
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.errors import IllegalTransition
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import (
    ContainerReport,
    HeartbeatAnswer,
    NodeAction,
    NodeHealth,
    NodeRefused,
    NodeRegistration,
    NodeStatusReport,
    RegistrationAnswer,
)
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey

NODE = NodeId("10.0.0.1", 45454)
REG = NodeRegistration(NODE, "10.0.0.1:8042", "/default-rack", Resource(4096, 4), 1000)
NO_JITTER = Backoff(initial_ms=500, max_ms=30_000, multiplier=2.0, jitter=0.2)
RM_KEY = "c" * 64
NODE_KEY = "d" * 64


def registered_updater() -> NodeStatusUpdater:
    u = NodeStatusUpdater(REG, NO_JITTER)
    u.start()
    u.connected()
    u.registered_with(RegistrationAnswer(800, rm_identifier=7))
    return u


# -- the core --------------------------------------------------------------------------


def test_start_connects_then_registers_then_schedules_the_granted_interval() -> None:
    """start -> Connect; connected -> SendRegistration; registered -> heartbeat after the RM's interval."""
    u = NodeStatusUpdater(REG, NO_JITTER)
    assert u.start() == [Connect()]
    assert u.connected() == [SendRegistration(REG)]
    assert u.state is UpdaterState.REGISTERING
    assert u.registered_with(RegistrationAnswer(800, rm_identifier=7)) == [ScheduleHeartbeat(800)]
    assert u.state is UpdaterState.REPORTING


def test_heartbeats_carry_the_last_response_id_and_health() -> None:
    """Each heartbeat sends the id of the last answer, the node's current health and its capability."""
    u = registered_updater()
    health = NodeHealth(healthy=False, health_report="disk full")
    expected = NodeStatusReport(NODE, 0, False, "disk full", capability=REG.capability)
    assert u.heartbeat_due(health) == [SendHeartbeat(expected)]
    assert u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 900)) == [ScheduleHeartbeat(900)]
    (send,) = u.heartbeat_due(NodeHealth())
    assert isinstance(send, SendHeartbeat) and send.status.response_id == 1


def test_cleanup_request_is_passed_on_before_the_next_heartbeat() -> None:
    """Containers the RM wants cleaned up become a CleanupContainers action."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    cid = ContainerId(ApplicationAttemptId(ApplicationId(1, 1), 1), 2)
    actions = u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800, containers_to_cleanup=(cid,)))
    assert actions == [CleanupContainers((cid,)), ScheduleHeartbeat(800)]


def completed(seq: int) -> ContainerReport:
    cid = ContainerId(ApplicationAttemptId(ApplicationId(1, 1), 1), seq)
    return ContainerReport(cid, ContainerState.COMPLETE, 0)


def running(seq: int) -> ContainerReport:
    cid = ContainerId(ApplicationAttemptId(ApplicationId(1, 1), 1), seq)
    return ContainerReport(cid, ContainerState.RUNNING)


def test_answer_acknowledges_the_completed_containers_of_the_heartbeat() -> None:
    """A NORMAL answer acknowledges the completed (not the running) containers the heartbeat carried."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth(containers=(completed(2), running(3))))
    actions = u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800))
    assert actions == [ContainersAcknowledged((completed(2).container_id,)), ScheduleHeartbeat(800)]
    u.heartbeat_due(NodeHealth(containers=(running(3),)))
    assert u.answered(HeartbeatAnswer(2, NodeAction.NORMAL, 800)) == [ScheduleHeartbeat(800)]


def test_resent_heartbeat_acknowledges_only_what_the_first_one_carried() -> None:
    """After a broken connection the heartbeat is resent with the same response id; the RM may have
    processed the first one only (and answers the resend with the stored answer), so a container that
    completed in between is not acknowledged until a later answer."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth(containers=(completed(2),)))
    u.failed("the connection closed")
    u.retry_due()
    (send,) = u.connected(NodeHealth(containers=(completed(2), completed(4))))
    assert isinstance(send, SendHeartbeat) and send.status.response_id == 0
    actions = u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800))
    assert actions[0] == ContainersAcknowledged((completed(2).container_id,))
    u.heartbeat_due(NodeHealth(containers=(completed(4),)))
    assert u.answered(HeartbeatAnswer(2, NodeAction.NORMAL, 800))[0] == ContainersAcknowledged(
        (completed(4).container_id,)
    )


def test_resync_acknowledges_nothing() -> None:
    """A RESYNC answer acknowledges no container: the RM did not process the heartbeat; the registration
    that follows lists the node's containers (NMContainerStatuses), so a restarted RM recovers them."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth(containers=(completed(2),)))
    registration = replace(REG, containers=(completed(2),))
    assert u.answered(HeartbeatAnswer(0, NodeAction.RESYNC, 800)) == [SendRegistration(registration)]
    # the registration's answer acknowledges the completed ones it listed (the RM recorded them)
    assert u.registered_with(RegistrationAnswer(800, rm_identifier=8)) == [
        ContainersAcknowledged((completed(2).container_id,)), ScheduleHeartbeat(800),
    ]  # fmt: skip
    u.heartbeat_due(NodeHealth())
    assert u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800)) == [ScheduleHeartbeat(800)]


def test_finished_applications_are_passed_on() -> None:
    """Applications the RM says finished become a CleanupApplications action."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    app = ApplicationId(1, 7)
    actions = u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800, applications_to_cleanup=(app,)))
    assert actions == [CleanupApplications((app,)), ScheduleHeartbeat(800)]


def test_resync_answer_makes_the_node_register_again() -> None:
    """RESYNC: register again at once; the next registration restarts response ids at 0."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800))
    u.heartbeat_due(NodeHealth())
    assert u.answered(HeartbeatAnswer(0, NodeAction.RESYNC, 800, diagnostics="RM restarted")) == [
        SendRegistration(REG)
    ]
    assert u.state is UpdaterState.REGISTERING and not u.registered
    u.registered_with(RegistrationAnswer(800, rm_identifier=8))
    assert u.last_response_id == 0 and u.rm_identifier == 8


def test_shutdown_answer_stops_reporting() -> None:
    """SHUTDOWN: disconnect and send nothing more; a late failure changes nothing."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    assert u.answered(HeartbeatAnswer(1, NodeAction.SHUTDOWN, 800)) == [Disconnect()]
    assert u.state is UpdaterState.SHUT_DOWN
    assert u.failed("connection closed") == []


def test_backoff_schedule_doubles_up_to_the_cap() -> None:
    """Consecutive connection failures wait 0.5, 1, 2, 4 ... s, capped at 30 s."""
    u = NodeStatusUpdater(REG, NO_JITTER)
    u.start()
    delays = []
    for _ in range(9):
        actions = u.failed("connection refused")
        assert actions[0] == Disconnect()
        retry = actions[1]
        assert isinstance(retry, ScheduleRetry) and retry.reason == "connection refused"
        delays.append(retry.delay_ms)
        assert u.retry_due() == [Connect()]
    assert delays == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]


def test_success_resets_the_backoff() -> None:
    """After a registration succeeds, the next failure waits the initial delay again."""
    u = NodeStatusUpdater(REG, NO_JITTER)
    u.start()
    for _ in range(4):
        u.failed("down")
        u.retry_due()
    u.connected()
    u.registered_with(RegistrationAnswer(1000, 1))
    (_, retry) = u.failed("the connection closed")
    assert isinstance(retry, ScheduleRetry) and retry.delay_ms == 500


def test_jitter_shortens_delays_by_at_most_its_fraction() -> None:
    """With jitter 0.2 a delay lies in (0.8 * base, base]; the random source is injected."""
    b = Backoff(initial_ms=1000, max_ms=8000, jitter=0.2)
    assert b.delay_ms(1, 0.0) == 1000
    assert b.delay_ms(1, 0.999) == 800
    assert b.delay_ms(4, 0.5) == 7200
    assert b.delay_ms(1000, 0.0) == 8000  # no overflow for long outages


def test_reconnect_after_registration_heartbeats_with_the_last_response_id() -> None:
    """A registered node that lost its connection resumes with a heartbeat, not a registration."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800))
    u.failed("the connection closed")
    u.retry_due()
    (send,) = u.connected(NodeHealth())
    assert isinstance(send, SendHeartbeat) and send.status.response_id == 1


def test_refusal_waits_the_longest_delay_and_registers_afresh() -> None:
    """NodeRefused (or a pin mismatch) backs off max_ms and forgets the registration."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    (_, retry) = u.refused("nodeHeartbeat refused: registered with another key")
    assert isinstance(retry, ScheduleRetry) and retry.delay_ms == 30_000
    u.retry_due()
    assert u.connected() == [SendRegistration(REG)]


def test_stop_disconnects_and_ignores_everything_after() -> None:
    """After stop, late answers and failures produce no actions."""
    u = registered_updater()
    u.heartbeat_due(NodeHealth())
    assert u.stop() == [Disconnect()]
    assert u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800)) == []
    assert u.failed("late") == []
    assert u.stop() == []


def test_unexpected_event_is_an_error() -> None:
    """An event the state does not accept (an answer while merely connecting) raises."""
    u = NodeStatusUpdater(REG, NO_JITTER)
    u.start()
    with pytest.raises(IllegalTransition):
        u.answered(HeartbeatAnswer(1, NodeAction.NORMAL, 800))


# -- the driver, against the RM's core, on a Clock -------------------------------------


class FakeClient:
    """A TrackerClient whose calls go straight to a NodeTracker core (or fail, when the RM is 'down')."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network
        self.peer_fingerprint = network.rm_key
        self.lost: defer.Deferred[Any] = defer.Deferred()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        if not self.lost.called:
            self.lost.callback(ConnectionAborted())

    def _call(self, fn: Any) -> defer.Deferred[Any]:
        if self.aborted or self.network.tracker is None:
            return defer.fail(TrackerUnavailable("connection lost"))
        try:
            return defer.succeed(fn(self.network.tracker))
        except NodeRefused as e:
            return defer.fail(e)

    def register(self, reg: NodeRegistration) -> defer.Deferred[Any]:
        return self._call(lambda t: t.register(reg, self.network.node_key))

    def heartbeat(self, status: NodeStatusReport) -> defer.Deferred[Any]:
        return self._call(lambda t: t.heartbeat(status, self.network.node_key))


class FakeNetwork:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tracker: NodeTracker | None = None
        self.rm_key = RM_KEY
        self.node_key = NODE_KEY
        self.connects = 0
        self.clients: list[FakeClient] = []

    def start_rm(self, rm_identifier: int = 1) -> NodeTracker:
        self.tracker = NodeTracker(NodeTable(), self.clock, nm_expiry_ms=3000, rm_identifier=rm_identifier)
        return self.tracker

    def connect(self, reactor: Any, host: str, port: int, tls: Any, timeout_s: float) -> defer.Deferred[Any]:
        self.connects += 1
        if self.tracker is None:
            return defer.fail(TrackerUnavailable(f"cannot connect to the tracker at {host}:{port}: refused"))
        client = FakeClient(self)
        self.clients.append(client)
        return defer.succeed(client)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def network(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    net = FakeNetwork(clock)
    monkeypatch.setattr(su.TrackerClient, "connect", net.connect)
    return net


@pytest.fixture(scope="module")
def tls() -> MutualTLS:
    return MutualTLS(NodeIdentity.generate())


def make_service(clock: Clock, tls: MutualTLS, tmp_path: Path, interval_ms: int = 500) -> NodeStatusUpdaterService:
    reg = NodeRegistration(NODE, "10.0.0.1:8042", "/default-rack", Resource(4096, 4), interval_ms)
    updater = NodeStatusUpdater(reg, Backoff(initial_ms=500, max_ms=4000, jitter=0.0))
    return NodeStatusUpdaterService(
        clock, updater, HostPort.parse("10.0.0.9:8031"), tls, KnownResourceManagers(tmp_path / "known.json")
    )


def test_driver_waits_for_the_rm_then_registers_and_heartbeats(
    clock: Clock, network: FakeNetwork, tls: MutualTLS, tmp_path: Path
) -> None:
    """With the RM down the driver retries on the back-off schedule; once it is up the node is RUNNING."""
    service = make_service(clock, tls, tmp_path)
    service.start()
    assert service.state is UpdaterState.BACKING_OFF
    clock.advance(0.5)  # retry 1
    clock.advance(1.0)  # retry 2
    assert network.connects == 3
    tracker = network.start_rm()
    clock.advance(2.0)  # retry 3 reaches it
    assert service.state is UpdaterState.REPORTING
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING
    for _ in range(10):
        clock.advance(0.5)
    assert tracker.last_seen_ms(NODE) == int(clock.seconds() * 1000)
    assert service.updater.last_response_id == 10
    assert KnownResourceManagers(tmp_path / "known.json").pinned("10.0.0.9:8031") == RM_KEY


def test_driver_passes_on_the_registration_and_acknowledgements(
    clock: Clock, network: FakeNetwork, tls: MutualTLS, tmp_path: Path
) -> None:
    """on_registered sees the RM's answer (its container-token key); on_acknowledged the completed
    containers the RM has recorded; reports come from the health callback."""
    tracker = network.start_rm()
    tracker.container_token_master_key = MasterKey(3, b"k" * 20)
    reg = NodeRegistration(NODE, "10.0.0.1:8042", "/default-rack", Resource(4096, 4), 500)
    registered: list[RegistrationAnswer] = []
    acknowledged: list[tuple[ContainerId, ...]] = []
    reported = [completed(2)]
    service = NodeStatusUpdaterService(
        clock,
        NodeStatusUpdater(reg, Backoff(jitter=0.0)),
        HostPort.parse("10.0.0.9:8031"),
        tls,
        KnownResourceManagers(tmp_path / "known.json"),
        health=lambda: NodeHealth(containers=tuple(reported)),
        on_acknowledged=acknowledged.append,
        on_registered=registered.append,
    )
    service.start()
    assert [a.container_token_master_key for a in registered] == [MasterKey(3, b"k" * 20)]
    assert acknowledged == [(completed(2).container_id,)]  # the registration listed it: recorded
    reported[0] = completed(4)
    clock.advance(0.5)
    assert acknowledged == [(completed(2).container_id,), (completed(4).container_id,)]


def test_driver_reregisters_after_an_rm_restart(
    clock: Clock, network: FakeNetwork, tls: MutualTLS, tmp_path: Path
) -> None:
    """The RM restarts (new, empty NodeTable): the node's next heartbeat is RESYNCed and it registers again,
    listing the containers it runs, which the new RM's listener gets (work-preserving restart)."""
    runs = ContainerReport(completed(3).container_id, ContainerState.RUNNING, resource=Resource(1024, 1), priority=1)
    network.start_rm(rm_identifier=1)
    service = make_service(clock, tls, tmp_path)
    service.health = lambda: NodeHealth(containers=(runs,))
    service.start()
    clock.advance(0.5)
    restarted = network.start_rm(rm_identifier=2)
    heard: list[tuple[ContainerReport, ...]] = []

    class Recording(IgnoringListener):
        def containers_reported(self, node: NodeRecord, containers: tuple[ContainerReport, ...]) -> None:
            heard.append(containers)

    restarted.listener = Recording()
    clock.advance(0.5)  # heartbeat -> RESYNC -> registerNode, all on the same connection
    assert restarted.nodes.get(NODE).state is NodeState.RUNNING
    assert service.updater.rm_identifier == 2
    assert heard[0] == (runs,)  # the registration's list, through the codec
    clock.advance(0.5)
    assert service.updater.last_response_id == 1


def test_driver_reconnects_when_the_connection_breaks(
    clock: Clock, network: FakeNetwork, tls: MutualTLS, tmp_path: Path
) -> None:
    """A connection closed between heartbeats is noticed at once and replaced after the first back-off."""
    tracker = network.start_rm()
    service = make_service(clock, tls, tmp_path)
    service.start()
    network.clients[-1].lost.callback(ConnectionDone())  # the RM side closed it
    assert service.state is UpdaterState.BACKING_OFF
    clock.advance(0.5)
    assert service.state is UpdaterState.HEARTBEATING or service.state is UpdaterState.REPORTING
    assert len(network.clients) == 2
    clock.advance(0.5)
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING


def test_driver_refuses_an_rm_with_another_key_than_pinned(
    clock: Clock, network: FakeNetwork, tls: MutualTLS, tmp_path: Path
) -> None:
    """An RM showing a different key than pinned gets nothing: no registration, a long back-off."""
    tracker = network.start_rm()
    KnownResourceManagers(tmp_path / "known.json").pin("10.0.0.9:8031", "e" * 64)
    service = make_service(clock, tls, tmp_path)
    service.start()
    assert service.state is UpdaterState.BACKING_OFF
    assert len(tracker.nodes) == 0
    assert network.clients[-1].aborted


def test_driver_stop_cancels_timers_and_closes_the_connection(
    clock: Clock, network: FakeNetwork, tls: MutualTLS, tmp_path: Path
) -> None:
    """After stop no timer is left on the clock and the connection is closed."""
    network.start_rm()
    service = make_service(clock, tls, tmp_path)
    service.start()
    d = service.stop()
    assert d.called
    assert clock.getDelayedCalls() == []
    assert network.clients[-1].aborted
    assert service.state is UpdaterState.STOPPED


def test_a_registration_carries_the_health_the_node_has_then() -> None:
    """connected(health) registers with that health (YARN's nodeStatus), and a RESYNC registers
    again with the health of the last heartbeat."""
    import dataclasses

    u = NodeStatusUpdater(REG)
    u.start()
    sick = NodeHealth(healthy=False, health_report="fetching the runtime image")
    assert u.connected(sick) == [SendRegistration(dataclasses.replace(REG, healthy=False, health_report=sick.health_report))]
    u.registered_with(RegistrationAnswer(1000, 1))
    u.heartbeat_due(NodeHealth())
    assert u.answered(HeartbeatAnswer(0, NodeAction.RESYNC, 800)) == [SendRegistration(REG)]
