"""The capacity scheduler's core scenarios: AM first, FIFO, releases, asks, node loss, container ends."""

from __future__ import annotations

import pytest

from cortex_rm.allocator.asks import ANY
from cortex_rm.allocator.containers import InvalidContainerRelease, RMContainerState
from cortex_rm.allocator.errors import InvalidSubmission, RefusedOperation, UnknownAttempt
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.yarn.container_status import ContainerExitStatus
from cortex_rm.yarn.ids import ApplicationAttemptId, ContainerId
from cortex_rm.yarn.resources import ZERO, Resource
from cortex_rm.allocator.node_labels import STATIC, VOLATILE
from tests.support.scheduler_sim import GB, SimCluster, ask

ROOMY_AMS = SchedulerConfig(max_am_share=1.0)


def test_am_container_is_served_before_any_other_ask() -> None:
    """An AM waiting for its container gets it before an earlier application's executors."""
    sim = SimCluster()
    sim.add_node("h1", 4 * GB, 4)
    early = sim.submit(am=None)  # unmanaged AM, submitted first
    sim.ask(early, ask(4))
    late = sim.submit()
    first = sim.schedule()
    assert first[0].is_am and first[0].attempt_id == late
    assert str(first[0].container_id).endswith("_01_000001")
    assert [c.attempt_id for c in first[1:]] == [early] * 3
    assert sim.scheduler.waiting_reason(early) is not None


def test_am_containers_go_fifo_by_application_priority_then_submission() -> None:
    """Across queues, pending AMs are placed by higher application priority, then earlier submission."""
    sim = SimCluster(config=ROOMY_AMS)
    sim.add_node("h1", 2 * GB, 2)
    plain = sim.submit()
    urgent = sim.submit(priority=5)
    later = sim.submit()
    placed = sim.schedule()
    assert [c.attempt_id for c in placed] == [urgent, plain]
    assert sim.scheduler.waiting_reason(later) == (
        "Queue root.default is at its maximum capacity (100% = <memory:2048, vCores:2>); "
        "waiting for running containers to finish"
    )


def test_am_launcher_pulls_the_am_container_so_the_am_never_sees_it() -> None:
    """pull_allocated hands the AM container over once (ACQUIRED); the AM's later pulls exclude it."""
    sim = SimCluster()
    sim.add_node("h1")
    attempt = sim.submit()
    am = sim.start_am(attempt)
    assert am.state is RMContainerState.RUNNING and am.acquired
    assert sim.scheduler.pull_allocated(attempt) == []


def test_second_am_in_a_queue_waits_for_the_am_resource_limit() -> None:
    """With max_am_share 0.1, a queue runs one AM on a small cluster; the next waits, saying why."""
    sim = SimCluster()
    sim.add_node("h1", 8 * GB, 8)
    first, second = sim.submit(), sim.submit()
    assert [c.attempt_id for c in sim.schedule()] == [first]
    reason = sim.scheduler.waiting_reason(second)
    assert reason is not None and reason.startswith("Queue's AM resource limit exceeded: ")
    assert "root.default hold <memory:1024, vCores:1>" in reason
    sim.scheduler.remove_attempt(first)
    assert [c.attempt_id for c in sim.schedule()] == [second]


def test_fifo_within_a_queue_serves_the_first_application_fully_first() -> None:
    """Two apps in one queue: the earlier gets all it asks before the later gets the rest."""
    sim = SimCluster(config=ROOMY_AMS)
    sim.add_node("h1", 10 * GB, 10)
    a, b = sim.running_app(), sim.running_app()
    sim.ask(a, ask(6))
    sim.ask(b, ask(6))
    placed = sim.schedule()
    assert [c.attempt_id for c in placed] == [a] * 6 + [b] * 2


def test_higher_application_priority_jumps_the_fifo() -> None:
    """Within a queue, a later app with higher priority is served first; update_app_priority reorders."""
    sim = SimCluster(config=ROOMY_AMS)
    sim.add_node("h1", 6 * GB, 6)
    a, b = sim.running_app(), sim.running_app(priority=3)
    sim.ask(a, ask(4))
    sim.ask(b, ask(4))
    assert [c.attempt_id for c in sim.schedule()] == [b] * 4
    sim.scheduler.update_app_priority(a, 9)
    for c in sim.acquire_and_launch(b)[:2]:
        sim.scheduler.container_finished(c.container_id, 0)
    assert [c.attempt_id for c in sim.schedule()] == [a] * 2


def test_second_attempt_keeps_its_applications_place_in_the_fifo() -> None:
    """FIFO follows application ids: a retried earlier application goes before a later one."""
    sim = SimCluster()
    sim.add_node("h1", 4 * GB, 4)
    first, later = sim.submit(am=None), sim.submit(am=None)
    sim.scheduler.remove_attempt(first)
    retry = ApplicationAttemptId(first.app_id, 2)
    sim.scheduler.add_attempt(retry, "default", "alice")
    sim.ask(later, ask(4))
    sim.ask(retry, ask(4))
    assert [c.attempt_id for c in sim.schedule()] == [retry] * 4
    assert str(sim.scheduler.attempt_containers(retry)[0].container_id).endswith("_02_000001")


def test_asks_of_lower_priority_value_are_served_first() -> None:
    """Within an attempt, priority 0 (Spark's default profile) goes before priority 1."""
    sim = SimCluster()
    sim.add_node("h1", 4 * GB, 4)
    app = sim.running_app()
    sim.ask(app, ask(3, priority=1), ask(2, priority=0))
    assert [c.priority for c in sim.schedule()] == [0, 0, 1]


def test_allocated_containers_are_pulled_once_with_the_ask_priority_and_normalized_size() -> None:
    """An 896 MiB ask becomes a 1024 MiB container with the ask's priority; a second pull is empty."""
    sim = SimCluster()
    sim.add_node("h1")
    app = sim.running_app()
    sim.ask(app, ask(2, memory_mb=896, priority=0, allocation_request_id=4))
    placed = sim.schedule()
    pulled = sim.scheduler.pull_allocated(app)
    assert pulled == placed and all(c.state is RMContainerState.ACQUIRED for c in pulled)
    assert {(c.resource, c.requested, c.priority, c.allocation_request_id) for c in pulled} == {
        (Resource(GB, 1), Resource(896, 1), 0, 4)
    }
    assert sim.scheduler.pull_allocated(app) == []


def test_resending_a_key_with_zero_cancels_it() -> None:
    """An ask that could not be served yet is cancelled by its key with 0: nothing comes later."""
    sim = SimCluster()
    sim.add_node("h1", 2 * GB, 2)
    app = sim.running_app()
    sim.ask(app, ask(5))
    assert len(sim.schedule()) == 1
    sim.ask(app, ask(0))
    assert sim.scheduler.waiting_reason(app) is None
    sim.scheduler.remove_attempt(app)
    assert sim.schedule() == []


def test_resending_a_count_replaces_it() -> None:
    """Absolute counts: asking 3 twice leaves 3 outstanding, then 1 replaces them."""
    sim = SimCluster()
    sim.add_node("h1", 16 * GB, 16)
    app = sim.running_app()
    sim.ask(app, ask(3))
    sim.ask(app, ask(3))
    sim.ask(app, ask(1))
    assert len(sim.schedule()) == 1
    assert sim.scheduler.pending_containers() == 0


def test_released_containers_end_aborted_are_returned_and_reported_once() -> None:
    """A release frees the node, returns the container for killing and appears once in the completed list."""
    sim = SimCluster()
    node = sim.add_node("h1", 4 * GB, 4)
    app = sim.running_app()
    sim.ask(app, ask(2))
    sim.schedule()
    one, two = sim.acquire_and_launch(app)
    released = sim.scheduler.update_requests(app, releases=[one.container_id])
    assert released == [one] and one.state is RMContainerState.RELEASED
    assert one.exit_status == ContainerExitStatus.ABORTED and one.diagnostics == "Container released by application"
    assert sim.table.get(node).used == Resource(2 * GB, 2)
    assert sim.scheduler.update_requests(app, releases=[one.container_id]) == []  # already ended: no error
    assert sim.scheduler.container_finished(one.container_id, 143) is None  # the node's late report
    assert sim.scheduler.pull_completed(app) == [one]
    assert sim.scheduler.pull_completed(app) == []


def test_release_of_another_attempts_container_or_the_am_is_refused() -> None:
    """An AM may release only its own non-AM containers; the refusal changes nothing."""
    sim = SimCluster(config=ROOMY_AMS)
    sim.add_node("h1")
    a, b = sim.running_app(), sim.running_app()
    sim.ask(b, ask(1))
    (theirs,) = sim.schedule()
    with pytest.raises(InvalidContainerRelease, match="does not belong to"):
        sim.scheduler.update_requests(a, [ask(3)], releases=[theirs.container_id])
    am = sim.scheduler.attempt_containers(a)[0]
    with pytest.raises(InvalidContainerRelease, match="runs the AM"):
        sim.scheduler.update_requests(a, releases=[am.container_id])
    assert theirs.is_live and sim.scheduler.outstanding(a) == ZERO


def test_lost_node_completes_its_containers_with_aborted_exactly_once() -> None:
    """node_removed ends every container there KILLED/-100; the AM sees each once; late reports are ignored."""
    sim = SimCluster()
    sim.add_node("h1", 2 * GB, 2)
    lost_node = sim.add_node("h2", 4 * GB, 4)
    app = sim.running_app()  # its AM lands on h2 (most free memory)
    sim.ask(app, ask(4))
    sim.schedule()
    got = sim.acquire_and_launch(app)
    on_h2 = [c for c in got if c.node_id == lost_node]
    lost = sim.scheduler.node_removed(lost_node)
    am = [c for c in lost if c.is_am]
    assert len(am) == 1 and {c.container_id for c in lost} == {c.container_id for c in on_h2} | {am[0].container_id}
    assert all(c.state is RMContainerState.KILLED and c.exit_status == -100 for c in lost)
    completed = sim.scheduler.pull_completed(app)
    assert sorted(c.container_id for c in completed) == sorted(c.container_id for c in on_h2)  # not the AM's own
    for c in lost:
        assert sim.scheduler.container_finished(c.container_id, 0) is None
        assert sim.scheduler.container_launched(c.container_id) is None
    assert sim.scheduler.pull_completed(app) == []
    assert sim.scheduler.node_removed(lost_node) == []


def test_container_never_handed_to_the_am_is_asked_for_again_when_its_node_is_lost() -> None:
    """An ALLOCATED container lost before the AM pulled it is not reported; its ask is served elsewhere."""
    sim = SimCluster()
    h1 = sim.add_node("h1", 2 * GB, 2)
    app = sim.running_app()
    sim.ask(app, ask(1))
    (placed,) = sim.schedule()
    assert placed.node_id == h1
    sim.add_node("h2", 2 * GB, 2)
    sim.scheduler.node_removed(h1)
    assert sim.scheduler.pull_completed(app) == []
    replacement = sim.schedule()
    assert len(replacement) == 1 and replacement[0].node_id != placed.node_id


def test_am_container_lost_before_launch_is_placed_again() -> None:
    """An AM container whose node vanished before the launcher took it is allocated anew elsewhere."""
    sim = SimCluster()
    h1 = sim.add_node("h1", 4 * GB, 4)
    app = sim.submit()
    (am,) = sim.schedule()
    assert am.node_id == h1
    sim.add_node("h2", 2 * GB, 2)
    assert sim.scheduler.node_removed(h1) == [am]
    (again,) = sim.schedule()
    assert again.is_am and again.attempt_id == app and again.node_id.host == "h2"
    assert again.container_id.id == am.container_id.id + 1


def test_finished_container_is_reported_once_with_its_exit_status() -> None:
    """container_finished completes it with the node's status; repeats and later RUNNING reports do nothing."""
    sim = SimCluster()
    node = sim.add_node("h1")
    app = sim.running_app()
    sim.ask(app, ask(1))
    sim.schedule()
    (c,) = sim.acquire_and_launch(app)
    assert sim.scheduler.container_finished(c.container_id, 143, "Container killed on request. Exit code is 143") is c
    assert (c.state, c.exit_status) == (RMContainerState.COMPLETED, 143)
    assert sim.scheduler.container_finished(c.container_id, 0) is None
    assert sim.scheduler.pull_completed(app) == [c]
    assert sim.scheduler.pull_completed(app) == []
    assert sim.table.get(node).num_containers == 1  # the AM


def test_finished_am_container_is_returned_for_the_attempt_not_reported_to_it() -> None:
    """The AM's own container's end is the caller's business (attempt failed), not the AM's completed list."""
    sim = SimCluster()
    sim.add_node("h1")
    app = sim.submit()
    am = sim.start_am(app)
    ended = sim.scheduler.container_finished(am.container_id, 1, "AM exited")
    assert ended is am and ended.is_am
    assert sim.scheduler.pull_completed(app) == []


def test_removed_attempt_returns_its_containers_killed_and_frees_everything() -> None:
    """remove_attempt kills all its live containers with the given status; nodes and queue are empty after."""
    sim = SimCluster()
    node = sim.add_node("h1")
    app = sim.running_app()
    sim.ask(app, ask(3))
    sim.schedule()
    sim.acquire_and_launch(app)
    killed = sim.scheduler.remove_attempt(app, ContainerExitStatus.KILLED_AFTER_APP_COMPLETION)
    assert len(killed) == 4 and all(c.exit_status == -107 and c.state is RMContainerState.KILLED for c in killed)
    assert sim.table.get(node).used == ZERO and sim.table.get(node).num_containers == 0
    assert sim.scheduler.queue_used("root") == ZERO and sim.scheduler.live_containers() == []
    with pytest.raises(UnknownAttempt):
        sim.scheduler.pull_completed(app)


def test_unlaunched_containers_expire() -> None:
    """A container acquired but never reported RUNNING within the expiry ends EXPIRED and is reported."""
    sim = SimCluster(config=SchedulerConfig(container_launch_expiry_ms=10_000))
    sim.add_node("h1")
    app = sim.running_app()
    sim.ask(app, ask(2))
    sim.schedule()
    idle, started = sim.scheduler.pull_allocated(app)
    sim.scheduler.container_launched(started.container_id)
    assert sim.scheduler.expire_unlaunched(sim.now_ms + 9_999) == []
    assert sim.scheduler.expire_unlaunched(sim.now_ms + 10_000) == [idle]
    assert idle.state is RMContainerState.EXPIRED and idle.exit_status == ContainerExitStatus.ABORTED
    assert sim.scheduler.pull_completed(app) == [idle]


def test_node_table_follows_every_allocation_and_completion() -> None:
    """NodeRecord.used and num_containers match the live containers on the node at each step."""
    sim = SimCluster()
    node = sim.add_node("h1", 8 * GB, 8)
    app = sim.running_app()
    record = sim.table.get(node)
    assert (record.used, record.num_containers) == (Resource(GB, 1), 1)
    sim.ask(app, ask(2, memory_mb=2 * GB, vcores=2))
    sim.schedule()
    assert (record.used, record.num_containers) == (Resource(5 * GB, 5), 3)
    c, _ = sim.acquire_and_launch(app)
    sim.scheduler.container_finished(c.container_id, 0)
    assert (record.used, record.num_containers) == (Resource(3 * GB, 3), 2)


def test_node_that_registers_again_loses_its_containers() -> None:
    """node_added for a node already scheduled ends its old containers (ABORTED) and starts it empty."""
    sim = SimCluster()
    node = sim.add_node("h1")
    app = sim.running_app()
    sim.ask(app, ask(1))
    sim.schedule()
    (c,) = sim.acquire_and_launch(app)
    gone = sim.scheduler.node_added(node, Resource(16 * GB, 16))
    assert {x.container_id for x in gone} == {c.container_id} | {x.container_id for x in gone if x.is_am}
    assert sim.table.get(node).used == ZERO and sim.scheduler.nodes.total == Resource(16 * GB, 16)
    assert sim.scheduler.pull_completed(app) == [c]


def test_ams_go_to_static_nodes_and_executors_anywhere() -> None:
    """With a static node that can hold it, an AM waits for it rather than take a volatile node;
    unlabelled executor asks then go to any node (both labels are non-exclusive)."""
    sim = SimCluster()
    sim.add_node("volatile", 16 * GB, 16, label=VOLATILE)
    sim.add_node("static", 2 * GB, 2, label=STATIC)
    first = sim.submit()
    (am,) = sim.schedule()
    assert am.node_id.host == "static"
    sim.scheduler.pull_allocated(first)
    second = sim.submit(am=Resource(2 * GB, 1))
    assert sim.schedule() == []  # the static node is full; the volatile one is not used for AMs
    sim.ask(first, ask(1))
    assert [c.node_id.host for c in sim.schedule()] == ["volatile"]
    assert sim.scheduler.has_attempt(second)


def test_container_ids_carry_the_epoch_and_count_per_attempt() -> None:
    """Container ids are epoch << 40 | sequence, the AM's being sequence 1."""
    sim = SimCluster(config=SchedulerConfig(epoch=3))
    sim.add_node("h1")
    app = sim.running_app()
    sim.ask(app, ask(1))
    (c,) = sim.schedule()
    assert c.container_id == ContainerId(app, (3 << 40) | 2)
    assert str(c.container_id).startswith("container_e03_")


def test_a_pass_stops_after_its_container_budget() -> None:
    """max_containers_per_pass bounds one pass; the next pass continues."""
    sim = SimCluster(config=SchedulerConfig(max_containers_per_pass=3))
    sim.add_node("h1", 16 * GB, 16)
    app = sim.running_app()
    sim.ask(app, ask(5))
    assert len(sim.schedule()) == 3
    assert len(sim.schedule()) == 2


def test_attempt_errors_name_the_problem() -> None:
    """Adding twice, a bad queue, or calls for an unknown attempt raise the allocator's errors."""
    sim = SimCluster()
    app = sim.submit()
    with pytest.raises(RefusedOperation, match="already added"):
        sim.scheduler.add_attempt(app, "default", "alice")
    with pytest.raises(InvalidSubmission, match="non-existent queue"):
        sim.submit(queue="nope")
    sim.scheduler.remove_attempt(app)
    with pytest.raises(UnknownAttempt):
        sim.scheduler.update_requests(app, [ask(1, where=ANY)])
