"""The RM's NodeTracker core: registration, YARN's response-id heartbeats, expiry and key binding.

Driven with ``twisted.internet.task.Clock``; no sockets.
"""

from __future__ import annotations

import dataclasses


import pytest
from twisted.internet.task import Clock

from cortex_rm.allocator.node_cleanup import NodeOrders
from cortex_rm.allocator.node_tracker import MIN_HEARTBEAT_INTERVAL_MS, NodeTracker
from cortex_rm.allocator.nodes import NodeRecord, NodeState, NodeTable
from cortex_rm.internal.tracker_server import ExpiryMonitor
from cortex_rm.yarn.container_status import ContainerState
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, ContainerId, NodeId
from cortex_rm.yarn.resource_tracker import (
    MAX_RESPONSE_ID,
    ContainerReport,
    NodeAction,
    NodeRefused,
    NodeRegistration,
    NodeStatusReport,
    next_response_id,
)
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey

EXPIRY_MS = 10_000
NODE = NodeId("10.0.0.1", 45454)
OTHER = NodeId("10.0.0.2", 45454)
KEY = "a" * 64
IMPOSTOR_KEY = "b" * 64


def registration(node_id: NodeId = NODE, interval_ms: int = 1000, memory_mb: int = 4096) -> NodeRegistration:
    return NodeRegistration(node_id, f"{node_id.host}:8042", "/rack1", Resource(memory_mb, 4), interval_ms)


def status(response_id: int, node_id: NodeId = NODE, healthy: bool = True, report: str = "") -> NodeStatusReport:
    return NodeStatusReport(node_id, response_id, healthy, report)


class RecordingListener:
    def __init__(self) -> None:
        self.registered: list[NodeId] = []
        self.reported: list[tuple[NodeId, tuple[ContainerReport, ...]]] = []
        self.lost: list[NodeId] = []
        self.health: list[tuple[NodeId, NodeState]] = []
        self.cleanup: dict[NodeId, NodeOrders] = {}
        self.resized: list[tuple[NodeId, Resource]] = []

    def node_registered(self, node: NodeRecord) -> None:
        self.registered.append(node.node_id)

    def containers_reported(self, node: NodeRecord, containers: tuple[ContainerReport, ...]) -> None:
        self.reported.append((node.node_id, containers))

    def node_lost(self, node: NodeRecord) -> None:
        self.lost.append(node.node_id)

    def node_health_changed(self, node: NodeRecord) -> None:
        self.health.append((node.node_id, node.state))

    def cleanup_for(self, node: NodeRecord) -> NodeOrders:
        return self.cleanup.pop(node.node_id, NodeOrders())

    def node_resized(self, node: NodeRecord) -> None:
        self.resized.append((node.node_id, node.capability))


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(1_000_000)  # a plausible "now", in seconds
    return c


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def tracker(clock: Clock, listener: RecordingListener) -> NodeTracker:
    return NodeTracker(NodeTable(), clock, nm_expiry_ms=EXPIRY_MS, rm_identifier=42, listener=listener)


def advance_ms(clock: Clock, ms: int) -> None:
    clock.advance(ms / 1000)


# -- registration ----------------------------------------------------------------------


def test_registration_makes_the_node_running_with_its_capacity(tracker: NodeTracker) -> None:
    """A registered node is RUNNING in the NodeTable with the capacity, rack and web address it sent."""
    answer = tracker.register(registration(), KEY)
    node = tracker.nodes.get(NODE)
    assert node.state is NodeState.RUNNING
    assert node.capability == Resource(4096, 4)
    assert (node.rack, node.http_address) == ("/rack1", "10.0.0.1:8042")
    assert answer.heartbeat_interval_ms == 1000
    assert answer.rm_identifier == 42
    assert tracker.bound_fingerprint(NODE) == KEY


def test_registration_hands_out_the_container_token_master_key(clock: Clock) -> None:
    """Every registration answer carries the key the RM signs ContainerTokens with."""
    key = MasterKey(5, b"k" * 20)
    tracker = NodeTracker(NodeTable(), clock, nm_expiry_ms=EXPIRY_MS, rm_identifier=1, container_token_master_key=key)
    assert tracker.register(registration(), KEY).container_token_master_key == key
    assert tracker.register(registration(OTHER), KEY).container_token_master_key == key


@pytest.mark.parametrize(
    ("requested", "granted"),
    [(1000, 1000), (EXPIRY_MS, EXPIRY_MS // 3), (1, MIN_HEARTBEAT_INTERVAL_MS), (3333, 3333), (3334, 3333)],
)
def test_granted_interval_is_clamped_so_three_heartbeats_fit_in_the_expiry(
    tracker: NodeTracker, requested: int, granted: int
) -> None:
    """The RM grants the requested interval within [minimum, expiry / 3]."""
    assert tracker.register(registration(interval_ms=requested), KEY).heartbeat_interval_ms == granted
    assert tracker.heartbeat(status(0), KEY).next_heartbeat_interval_ms == granted


def test_reregistration_of_a_running_node_refreshes_capacity(tracker: NodeTracker) -> None:
    """Registering again (same key) keeps the node RUNNING with the new capacity and restarts response ids."""
    tracker.register(registration(), KEY)
    tracker.heartbeat(status(0), KEY)
    tracker.register(registration(memory_mb=2048), KEY)
    node = tracker.nodes.get(NODE)
    assert node.state is NodeState.RUNNING and node.capability.memory_mb == 2048
    assert tracker.heartbeat(status(0), KEY).response_id == 1


# -- heartbeats ------------------------------------------------------------------------


def test_heartbeats_count_response_ids_up(tracker: NodeTracker) -> None:
    """Each fresh heartbeat is answered NORMAL with the next response id."""
    tracker.register(registration(), KEY)
    answers = []
    rid = 0
    for _ in range(3):
        answer = tracker.heartbeat(status(rid), KEY)
        answers.append(answer)
        rid = answer.response_id
    assert [a.response_id for a in answers] == [1, 2, 3]
    assert all(a.action is NodeAction.NORMAL for a in answers)


def test_duplicate_heartbeat_gets_the_same_answer_again(tracker: NodeTracker) -> None:
    """A node that missed the last answer resends the old id and receives that very answer."""
    tracker.register(registration(), KEY)
    first = tracker.heartbeat(status(0), KEY)
    assert tracker.heartbeat(status(0), KEY) == first
    assert tracker.heartbeat(status(first.response_id), KEY).response_id == 2


def test_out_of_step_heartbeat_is_told_to_resync(tracker: NodeTracker) -> None:
    """A response id that is neither the last nor the one before: RESYNC."""
    tracker.register(registration(), KEY)
    tracker.heartbeat(status(0), KEY)
    answer = tracker.heartbeat(status(7), KEY)
    assert answer.action is NodeAction.RESYNC
    assert "out of step" in answer.diagnostics


def test_heartbeat_from_an_unknown_node_is_told_to_resync(tracker: NodeTracker) -> None:
    """A node this RM never saw (the RM restarted) is told to register again."""
    answer = tracker.heartbeat(status(12), KEY)
    assert answer.action is NodeAction.RESYNC
    assert len(tracker.nodes) == 0


def test_rm_restart_resyncs_the_node_which_registers_again(clock: Clock) -> None:
    """After an RM restart (a fresh NodeTable) the node's heartbeat gets RESYNC, and re-registration works."""
    before = NodeTracker(NodeTable(), clock, nm_expiry_ms=EXPIRY_MS, rm_identifier=1)
    before.register(registration(), KEY)
    rid = before.heartbeat(status(0), KEY).response_id
    after = NodeTracker(NodeTable(), clock, nm_expiry_ms=EXPIRY_MS, rm_identifier=2)
    assert after.heartbeat(status(rid), KEY).action is NodeAction.RESYNC
    assert after.register(registration(), KEY).rm_identifier == 2
    assert after.heartbeat(status(0), KEY).action is NodeAction.NORMAL
    assert after.nodes.get(NODE).state is NodeState.RUNNING


def test_unhealthy_report_moves_the_node_to_unhealthy_and_back(tracker: NodeTracker, listener: RecordingListener) -> None:
    """The health in a heartbeat drives RUNNING <-> UNHEALTHY, keeping the report text; the
    listener hears of each change, not of each heartbeat."""
    tracker.register(registration(), KEY)
    rid = tracker.heartbeat(status(0, healthy=False, report="disk full"), KEY).response_id
    rid = tracker.heartbeat(status(rid, healthy=False, report="disk full"), KEY).response_id
    node = tracker.nodes.get(NODE)
    assert (node.state, node.health_report) == (NodeState.UNHEALTHY, "disk full")
    tracker.heartbeat(status(rid), KEY)
    assert node.state is NodeState.RUNNING
    assert listener.health == [(NODE, NodeState.UNHEALTHY), (NODE, NodeState.RUNNING)]


def test_container_statuses_go_to_the_listener_on_fresh_heartbeats_only(
    tracker: NodeTracker, listener: RecordingListener
) -> None:
    """Container statuses of the registration and of a fresh heartbeat reach the listener; a duplicate's do not."""
    cid = ContainerId(ApplicationAttemptId(ApplicationId(1, 1), 1), 1)
    reports = (ContainerReport(cid, ContainerState.RUNNING),)
    tracker.register(registration(), KEY)
    tracker.heartbeat(NodeStatusReport(NODE, 0, containers=reports), KEY)
    tracker.heartbeat(NodeStatusReport(NODE, 0, containers=reports), KEY)  # duplicate
    assert listener.reported == [(NODE, ()), (NODE, reports)]
    tracker.register(dataclasses.replace(registration(), containers=reports), KEY)
    assert listener.reported[-1] == (NODE, reports)


def test_response_ids_wrap_like_yarns() -> None:
    """After the largest int32 the response id wraps to 0."""
    assert next_response_id(0) == 1
    assert next_response_id(MAX_RESPONSE_ID) == 0


# -- expiry ----------------------------------------------------------------------------


def test_silent_node_is_lost_one_millisecond_past_the_expiry(
    tracker: NodeTracker, clock: Clock, listener: RecordingListener
) -> None:
    """Silent for exactly nm_expiry_ms: still RUNNING; one ms more: LOST, returned and told to the listener."""
    tracker.register(registration(), KEY)
    start = tracker.now_ms()
    assert tracker.expire_silent_nodes(start + EXPIRY_MS) == []
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING
    lost = tracker.expire_silent_nodes(start + EXPIRY_MS + 1)
    assert [n.node_id for n in lost] == [NODE]
    assert tracker.nodes.get(NODE).state is NodeState.LOST
    assert listener.lost == [NODE]
    assert tracker.expire_silent_nodes(start + 10 * EXPIRY_MS) == []  # LOST once


def test_heartbeats_keep_the_node_alive(tracker: NodeTracker, clock: Clock) -> None:
    """A node heartbeating every second is never expired, however long it runs."""
    tracker.register(registration(), KEY)
    rid = 0
    for _ in range(60):
        advance_ms(clock, 1000)
        rid = tracker.heartbeat(status(rid), KEY).response_id
        assert tracker.expire_silent_nodes() == []
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING


def test_only_the_silent_node_is_lost(tracker: NodeTracker, clock: Clock) -> None:
    """Of two nodes, the one that stops reporting becomes LOST; the other stays RUNNING."""
    tracker.register(registration(NODE), KEY)
    tracker.register(registration(OTHER), IMPOSTOR_KEY)
    rid = 0
    for _ in range(11):
        advance_ms(clock, 1000)
        rid = tracker.heartbeat(status(rid, OTHER), IMPOSTOR_KEY).response_id
    assert [n.node_id for n in tracker.expire_silent_nodes()] == [NODE]
    assert tracker.nodes.get(OTHER).state is NodeState.RUNNING


def test_lost_node_heartbeat_resyncs_and_rejoin_makes_it_running(tracker: NodeTracker, clock: Clock) -> None:
    """A LOST node that reports again is told RESYNC; its re-registration makes it RUNNING."""
    tracker.register(registration(), KEY)
    advance_ms(clock, EXPIRY_MS + 1)
    tracker.expire_silent_nodes()
    answer = tracker.heartbeat(status(0), KEY)
    assert answer.action is NodeAction.RESYNC
    assert tracker.nodes.get(NODE).state is NodeState.LOST
    tracker.register(registration(), KEY)
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING
    assert tracker.heartbeat(status(0), KEY).action is NodeAction.NORMAL


def test_expiry_monitor_checks_every_third_of_the_expiry(tracker: NodeTracker, clock: Clock) -> None:
    """The LoopingCall runs on the injected clock; a silent node is LOST at the first check past the expiry."""
    monitor = ExpiryMonitor(tracker, clock)
    assert monitor.interval_ms == EXPIRY_MS // 3
    monitor.start()
    try:
        tracker.register(registration(), KEY)
        advance_ms(clock, 3 * (EXPIRY_MS // 3))  # 9999 ms: three checks, none past the expiry
        assert tracker.nodes.get(NODE).state is NodeState.RUNNING
        advance_ms(clock, EXPIRY_MS // 3)  # the fourth check, at 13332 ms
        assert tracker.nodes.get(NODE).state is NodeState.LOST
    finally:
        monitor.stop()


# -- binding NodeIds to keys -----------------------------------------------------------


def test_impostor_cannot_register_a_bound_node_id(tracker: NodeTracker) -> None:
    """Another key registering a NodeId bound to the first is refused; the node keeps its record."""
    tracker.register(registration(), KEY)
    with pytest.raises(NodeRefused, match="registered with another key"):
        tracker.register(registration(memory_mb=1), IMPOSTOR_KEY)
    assert tracker.nodes.get(NODE).capability.memory_mb == 4096
    assert tracker.bound_fingerprint(NODE) == KEY


def test_impostor_cannot_heartbeat_for_a_bound_node_id(tracker: NodeTracker, clock: Clock) -> None:
    """An impostor's heartbeat is refused and does not count as a sign of life."""
    tracker.register(registration(), KEY)
    seen = tracker.last_seen_ms(NODE)
    advance_ms(clock, 5000)
    with pytest.raises(NodeRefused):
        tracker.heartbeat(status(0), IMPOSTOR_KEY)
    assert tracker.last_seen_ms(NODE) == seen


def test_binding_survives_loss(tracker: NodeTracker, clock: Clock) -> None:
    """A LOST node's NodeId stays bound: an impostor cannot take it over while the real node is away."""
    tracker.register(registration(), KEY)
    advance_ms(clock, EXPIRY_MS + 1)
    tracker.expire_silent_nodes()
    with pytest.raises(NodeRefused):
        tracker.register(registration(), IMPOSTOR_KEY)
    tracker.register(registration(), KEY)
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING


def test_the_listener_hears_registrations_and_its_cleanup_rides_the_next_answer(clock: Clock) -> None:
    """A registration is announced; containers and apps to clean up go out in the next heartbeat answer."""
    listener = RecordingListener()
    tracker = NodeTracker(NodeTable(), clock, nm_expiry_ms=10_000, rm_identifier=1, listener=listener)
    tracker.register(registration(NODE), "fp1")
    assert listener.registered == [NODE]
    app = ApplicationId(1, 1)
    container = ContainerId(ApplicationAttemptId(app, 1), 2)
    listener.cleanup[NODE] = NodeOrders((container,), (app,))
    answer = tracker.heartbeat(status(0), "fp1")
    assert answer.containers_to_cleanup == (container,) and answer.applications_to_cleanup == (app,)
    assert tracker.heartbeat(status(answer.response_id), "fp1").containers_to_cleanup == ()


def test_completed_containers_to_forget_ride_the_answer_and_its_retransmission(clock: Clock) -> None:
    """An RM built to name removable completions says so at registration; the removals the
    listener gives for a fresh heartbeat are in its answer, in the same answer sent again to a
    resent heartbeat (the node may not have got it), and not in the answer after that."""
    listener = RecordingListener()
    tracker = NodeTracker(
        NodeTable(), clock, nm_expiry_ms=10_000, rm_identifier=1, listener=listener, removes_completed_containers=True
    )
    assert tracker.register(registration(NODE), "fp1").removes_completed_containers
    done = ContainerId(ApplicationAttemptId(ApplicationId(1, 1), 1), 3)
    listener.cleanup[NODE] = NodeOrders(containers_to_remove=(done,))
    answer = tracker.heartbeat(status(0), "fp1")
    assert answer.containers_to_remove == (done,)
    assert tracker.heartbeat(status(0), "fp1") == answer  # resent: answered again, removals included
    assert tracker.heartbeat(status(answer.response_id), "fp1").containers_to_remove == ()
    older = NodeTracker(NodeTable(), clock, nm_expiry_ms=10_000, rm_identifier=1)
    assert not older.register(registration(NODE), "fp1").removes_completed_containers


def test_a_node_whose_ring_member_the_ring_declares_dead_is_lost_at_once(
    tracker: NodeTracker, listener: RecordingListener, clock: Clock
) -> None:
    """The ring's verdict does not wait for the expiry: the nodes registered by that
    member's key (silent for two intervals) are LOST now, once; others are untouched."""
    tracker.register(registration(NODE), KEY, ring_id=7)
    tracker.register(registration(OTHER), IMPOSTOR_KEY, ring_id=8)
    advance_ms(clock, 2000)  # two 1 s heartbeat intervals without a report
    lost = tracker.ring_member_died(7)
    assert [n.node_id for n in lost] == [NODE]
    assert tracker.nodes.get(NODE).state is NodeState.LOST
    assert tracker.nodes.get(OTHER).state is NodeState.RUNNING
    assert listener.lost == [NODE]
    assert tracker.ring_member_died(7) == []  # already LOST
    assert tracker.ring_member_died(99) == []  # not a NodeManager of ours


def test_a_ring_death_of_a_node_that_still_reports_is_ignored(tracker: NodeTracker, clock: Clock) -> None:
    """Gossip is not signed: a death announced for a node that heartbeated a moment ago
    (over its own TLS connection) does not make it LOST; the expiry still would."""
    tracker.register(registration(NODE), KEY, ring_id=7)
    advance_ms(clock, 500)
    assert tracker.ring_member_died(7) == []
    assert tracker.nodes.get(NODE).state is NodeState.RUNNING


def test_a_node_that_registers_unhealthy_never_takes_a_container_before_it_is_healthy(
    tracker: NodeTracker, listener: RecordingListener
) -> None:
    """The health in a registration (YARN's nodeStatus) applies at once: the scheduler hears of
    the node and, in the same step, that it is UNHEALTHY; a healthy heartbeat brings it back."""
    from dataclasses import replace

    tracker.register(replace(registration(), healthy=False, health_report="fetching the runtime image"), KEY)
    node = tracker.nodes.get(NODE)
    assert (node.state, node.health_report) == (NodeState.UNHEALTHY, "fetching the runtime image")
    assert listener.registered == [NODE] and listener.health == [(NODE, NodeState.UNHEALTHY)]
    tracker.heartbeat(status(0), KEY)
    assert node.state is NodeState.RUNNING and listener.health[-1] == (NODE, NodeState.RUNNING)


def test_a_heartbeat_with_a_new_capability_resizes_the_node_once(tracker: NodeTracker, listener: RecordingListener) -> None:
    """The node's caps changed (SIGHUP): its record takes the heartbeat's capability and the listener
    hears of it once; heartbeats repeating it, or without one, change nothing; no RESYNC."""
    tracker.register(registration(memory_mb=4096), KEY)
    answer = tracker.heartbeat(dataclasses.replace(status(0), capability=Resource(2048, 2)), KEY)
    assert answer.action is NodeAction.NORMAL
    assert tracker.nodes.get(NODE).capability == Resource(2048, 2)
    tracker.heartbeat(dataclasses.replace(status(answer.response_id), capability=Resource(2048, 2)), KEY)
    tracker.heartbeat(status(next_response_id(answer.response_id)), KEY)
    assert listener.resized == [(NODE, Resource(2048, 2))] and tracker.nodes.get(NODE).capability == Resource(2048, 2)


def test_a_heartbeat_outside_the_schedule_withholds_the_node_until_it_offers_again(
    tracker: NodeTracker, listener: RecordingListener
) -> None:
    """offering False: the record says so and the listener hears of it; true again: once more; a new
    registration starts offering (the node says otherwise in its next heartbeat)."""
    tracker.register(registration(), KEY)
    answer = tracker.heartbeat(dataclasses.replace(status(0), offering=False), KEY)
    assert tracker.nodes.get(NODE).offering is False
    answer = tracker.heartbeat(dataclasses.replace(status(answer.response_id), offering=False), KEY)
    tracker.heartbeat(status(answer.response_id), KEY)
    assert tracker.nodes.get(NODE).offering is True
    assert listener.resized == [(NODE, Resource(4096, 4)), (NODE, Resource(4096, 4))]
    answer = tracker.heartbeat(dataclasses.replace(status(next_response_id(answer.response_id)), offering=False), KEY)
    unhealthy = tracker.heartbeat(dataclasses.replace(status(answer.response_id, healthy=False), offering=False), KEY)
    tracker.heartbeat(dataclasses.replace(status(unhealthy.response_id), offering=False), KEY)  # healthy again
    assert len(listener.resized) == 5  # told at each health change too: a node healthy again is re-added offering
    tracker.register(registration(), KEY)
    assert tracker.nodes.get(NODE).offering is True
