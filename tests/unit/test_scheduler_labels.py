"""Node labels in the scheduler: where AMs go by node class, labelled asks, AM blacklists.

A simulated cluster (``SimCluster``) on a fake clock; nodes carry ``static``,
``volatile`` or no label, as the ledger left them.
"""

from __future__ import annotations

from dataclasses import replace

from cortex_rm.allocator.node_labels import STATIC, VOLATILE, AMNodeClass
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from cortex_rm.yarn.ids import ApplicationAttemptId, ApplicationId, NodeId
from cortex_rm.yarn.resources import Resource
from tests.support.scheduler_sim import CLUSTER_TS, GB, SimCluster, ask

AM_SHARE = SchedulerConfig(max_am_share=1.0, node_locality_delay_ms=0, rack_locality_delay_ms=0)


def _am_host(sim: SimCluster, attempt: ApplicationAttemptId) -> str | None:
    """Run a pass; the host its AM container went to (None: it waits)."""
    for container in sim.schedule():
        if container.is_am and container.attempt_id == attempt:
            sim.scheduler.pull_allocated(attempt)
            return container.node_id.host
    return None


def _submit(sim: SimCluster, *, am: Resource = Resource(GB, 1), label: str = "",
            blacklist: frozenset[NodeId] = frozenset()) -> ApplicationAttemptId:
    """An application's attempt with an AM label expression and an AM blacklist."""
    sim._apps += 1
    attempt = ApplicationAttemptId(ApplicationId(CLUSTER_TS, sim._apps), 1)
    sim.scheduler.add_attempt(attempt, "default", "alice", 0, am, am_label=label, am_blacklist=blacklist)
    return attempt


def test_an_am_prefers_a_small_static_node_to_a_large_volatile_one() -> None:
    """SPREAD would pick the emptiest node; the AM still goes to the static one."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("v", 32 * GB, 32, label=VOLATILE)
    sim.add_node("s", 2 * GB, 2, label=STATIC)
    assert _am_host(sim, _submit(sim)) == "s"


def test_on_a_cluster_of_volatile_nodes_only_ams_still_run() -> None:
    """A fresh cluster (nobody static yet): the AM falls back to a volatile node at once."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("v1", 8 * GB, 8, label=VOLATILE)
    assert _am_host(sim, _submit(sim)) == "v1"


def test_an_am_larger_than_every_static_node_goes_to_a_volatile_one() -> None:
    """No static node could ever hold 4 GiB: the fallback applies; a 1 GiB AM still waits for static."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("s", 2 * GB, 2, label=STATIC)
    sim.add_node("v", 8 * GB, 8, label=VOLATILE)
    assert _am_host(sim, _submit(sim, am=Resource(4 * GB, 1))) == "v"
    assert _am_host(sim, _submit(sim, am=Resource(2 * GB, 1))) == "s"
    waiting = _submit(sim, am=Resource(GB, 1))
    assert _am_host(sim, waiting) is None
    reason = sim.scheduler.waiting_reason(waiting)
    assert reason is not None and reason.startswith("No static node has <memory:1024, vCores:1> free")


def test_an_am_does_not_wait_for_a_static_node_that_is_leaving() -> None:
    """The only static node is DECOMMISSIONING (graceful leave): it will never hold the AM, so the
    AM goes to a volatile node at once instead of waiting until the node is gone; a blacklist on
    top takes the same road."""
    sim = SimCluster(config=AM_SHARE)
    leaving = sim.add_node("s", 8 * GB, 8, label=STATIC)
    sim.add_node("v", 8 * GB, 8, label=VOLATILE)
    assert sim.scheduler.nodes.drain(leaving)
    assert _am_host(sim, _submit(sim)) == "v"
    other = sim.add_node("s2", 2 * GB, 2, label=STATIC)
    assert _am_host(sim, _submit(sim, am=Resource(4 * GB, 1), blacklist=frozenset({other}))) == "v"


def test_am_node_class_any_takes_a_volatile_node_when_static_ones_are_full() -> None:
    """``am_node_class = "any"``: static first while one has room, then any node."""
    sim = SimCluster(config=replace(AM_SHARE, am_node_class=AMNodeClass.ANY))
    sim.add_node("s", GB, 1, label=STATIC)
    sim.add_node("v", 8 * GB, 8, label=VOLATILE)
    assert _am_host(sim, _submit(sim)) == "s"
    assert _am_host(sim, _submit(sim)) == "v"


def test_an_am_label_expression_wins_over_the_node_classes() -> None:
    """An AM asking for ``volatile`` gets a volatile node; one asking for ``static`` waits for one, saying so."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("v", 8 * GB, 8, label=VOLATILE)
    sim.add_node("s", 8 * GB, 8, label=STATIC)
    assert _am_host(sim, _submit(sim, label=VOLATILE)) == "v"
    sim.scheduler.set_node_label(NodeId("s", 45454), VOLATILE)
    wants_static = _submit(sim, label=STATIC)
    assert _am_host(sim, wants_static) is None
    assert sim.scheduler.waiting_reason(wants_static) == (
        "No node labelled static is schedulable (the AM's node label expression); waiting for one"
    )
    sim.scheduler.set_node_label(NodeId("s", 45454), STATIC)
    assert _am_host(sim, wants_static) == "s"


def test_labelled_executor_asks_land_on_their_label_and_unlabelled_ones_anywhere() -> None:
    """``static`` asks only static nodes, ``volatile`` only volatile ones, "" both."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("s", 4 * GB, 4, label=STATIC)
    sim.add_node("v", 4 * GB, 4, label=VOLATILE)
    app = sim.submit(am=None)
    sim.ask(app, replace(ask(3, priority=1), node_label=STATIC), replace(ask(2, priority=2), node_label=VOLATILE))
    placed = sim.schedule()
    assert sorted((c.priority, c.node_id.host) for c in placed) == [(1, "s")] * 3 + [(2, "v")] * 2
    sim.ask(app, replace(ask(4, priority=3), node_label=""))
    assert {c.node_id.host for c in sim.schedule()} == {"s", "v"}


def test_a_labelled_ask_that_names_hosts_stays_on_its_label() -> None:
    """Locality may pick among the label's nodes only: a host of the other label is never used."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("s", 4 * GB, 4, label=STATIC)
    sim.add_node("v", 4 * GB, 4, label=VOLATILE)
    app = sim.submit(am=None)
    sim.ask(app, replace(ask(2), node_label=STATIC), ask(2, where="v"), ask(2, where="/default-rack"))
    assert [c.node_id.host for c in sim.schedule()] == ["s", "s"]


def test_a_labelled_ask_with_no_such_node_says_why_it_waits() -> None:
    """No volatile node: the ask waits, and the reason names the label."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("s", 4 * GB, 4, label=STATIC)
    app = sim.submit(am=None)
    sim.ask(app, replace(ask(1), node_label=VOLATILE))
    assert sim.schedule() == []
    assert sim.scheduler.waiting_reason(app) == (
        "No node labelled volatile is schedulable (the request's node label expression); waiting for one"
    )


def test_relabelling_moves_a_node_between_partitions_and_keeps_its_containers() -> None:
    """A node that becomes static takes static asks; what it ran before stays."""
    sim = SimCluster(config=AM_SHARE)
    node = sim.add_node("n", 8 * GB, 8, label=VOLATILE)
    app = sim.submit(am=None)
    sim.ask(app, ask(1, priority=1))
    (before,) = sim.schedule()
    sim.ask(app, replace(ask(1, priority=2), node_label=STATIC))
    assert sim.schedule() == []
    sim.scheduler.set_node_label(node, STATIC)
    (after,) = sim.schedule()
    assert after.node_id == node and sim.scheduler.container(before.container_id) is before
    assert len(sim.scheduler.nodes.partition(STATIC)) == 1 and not sim.scheduler.nodes.partition(VOLATILE)


def test_an_am_avoids_the_nodes_of_its_blacklist_even_a_static_one() -> None:
    """The only static node failed an earlier AM: the AM goes elsewhere (a volatile node, since
    no static node it may use could hold it) and says which nodes it avoids when it waits."""
    sim = SimCluster(config=AM_SHARE)
    for host in ("s", "v1", "v2", "v3"):
        sim.add_node(host, 2 * GB, 2, label=STATIC if host == "s" else VOLATILE)
    s = NodeId("s", 45454)
    assert _am_host(sim, _submit(sim, blacklist=frozenset({s}))) in {"v1", "v2", "v3"}
    big = _submit(sim, am=Resource(2 * GB, 2), blacklist=frozenset({NodeId("v1", 45454), NodeId("v2", 45454)}))
    assert _am_host(sim, big) == "s"  # a static node it may use could hold it: static only


def test_the_blacklist_is_ignored_once_it_covers_the_threshold_of_the_nodes() -> None:
    """Two nodes, one blacklisted: 1 >= 0.8 * 2 is false, so it is avoided; with the threshold at
    0.5 it is ignored (YARN's yarn.am.blacklisting.disable-failure-threshold); with blacklisting
    off it never applies."""
    def cluster(config: SchedulerConfig) -> SimCluster:
        sim = SimCluster(config=config)
        sim.add_node("a", 8 * GB, 8, label=STATIC)
        sim.add_node("b", GB, 1, label=STATIC)
        return sim

    bad = frozenset({NodeId("a", 45454)})
    sim = cluster(AM_SHARE)
    assert _am_host(sim, _submit(sim, blacklist=bad)) == "b"
    sim = cluster(replace(AM_SHARE, am_blacklist_disable_threshold=0.5))
    assert _am_host(sim, _submit(sim, blacklist=bad)) == "a"
    sim = cluster(replace(AM_SHARE, am_blacklisting=False))
    assert _am_host(sim, _submit(sim, blacklist=bad)) == "a"


def test_a_blacklisted_am_that_cannot_fit_elsewhere_waits_and_says_so() -> None:
    """The blacklist keeps the AM off the one node with room: the reason lists the avoided node."""
    sim = SimCluster(config=AM_SHARE)
    for host in ("a", "b", "c"):
        sim.add_node(host, 2 * GB, 2, label=STATIC)
    for host in ("b", "c"):  # fill b and c (node-local asks)
        sim.ask(sim.submit(am=None), ask(1, memory_mb=2 * GB, where=host), ask(1, memory_mb=2 * GB))
    assert sorted(c.node_id.host for c in sim.schedule()) == ["b", "c"]
    app = _submit(sim, blacklist=frozenset({NodeId("a", 45454)}))
    assert _am_host(sim, app) is None
    reason = sim.scheduler.waiting_reason(app)
    assert reason is not None and reason.startswith("No static node has <memory:1024, vCores:1> free")
    assert reason.endswith("the nodes where its earlier AMs failed are avoided (a:45454)")


# -- an AM's bounded wait for a static node (am_static_wait_ms) and the static space held for it


def _static_full_of_executors(config: SchedulerConfig) -> tuple[SimCluster, ApplicationAttemptId]:
    """A 2 GiB static node and an 8 GiB volatile one; an application without an AM (its AM runs
    elsewhere) fills the static node with two unlabelled 1 GiB executors."""
    sim = SimCluster(config=config)
    sim.add_node("s", 2 * GB, 2, label=STATIC)
    sim.add_node("v", 8 * GB, 8, label=VOLATILE)
    executors = sim.submit(am=None)
    sim.ask(executors, ask(2, where="s"), ask(2))
    assert sim.hosts_of(sim.schedule()) == ["s", "s"]
    return sim, executors


def test_an_am_waits_for_a_full_static_node_then_goes_to_a_volatile_one_after_the_wait() -> None:
    """Static nodes full of executors: the AM waits am_static_wait_ms from the first pass that found no
    room (saying how long it has waited), then takes the volatile node."""
    sim, _ = _static_full_of_executors(replace(AM_SHARE, am_static_wait_ms=30_000))
    sim.advance_ms(5_000)
    am = _submit(sim)
    assert _am_host(sim, am) is None
    sim.advance_ms(29_000)
    assert _am_host(sim, am) is None
    reason = sim.scheduler.waiting_reason(am)
    assert reason is not None and reason.endswith(
        "to any node once they have waited 30 s for one (am_static_wait_s; waited 29 s)"
    )
    sim.advance_ms(1_000)
    assert _am_host(sim, am) == "v"


def test_with_the_wait_at_zero_an_am_waits_for_a_static_node_for_ever() -> None:
    """am_static_wait_ms = 0: an hour later the AM still waits, and says it waits for a static node;
    when an executor ends, the AM takes its place on the static node."""
    sim, executors = _static_full_of_executors(replace(AM_SHARE, am_static_wait_ms=0))
    am = _submit(sim)
    for _ in range(4):
        sim.advance_ms(900_000)
        assert _am_host(sim, am) is None
    reason = sim.scheduler.waiting_reason(am)
    assert reason is not None and reason.endswith(
        "to any node only when no static node could ever hold them (am_static_wait_s = 0)"
    )
    finished = sim.acquire_and_launch(executors)[0]
    sim.scheduler.container_finished(finished.container_id, 0, "done")
    assert _am_host(sim, am) == "s"


def test_an_am_takes_a_static_node_with_room_at_once_even_past_the_wait() -> None:
    """With room on a static node the AM goes there in the first pass; one that has waited past
    am_static_wait_ms still prefers a static node that has room by then to the volatile one."""
    sim = SimCluster(config=replace(AM_SHARE, am_static_wait_ms=10_000))
    sim.add_node("v", 8 * GB, 8, label=VOLATILE)
    s = sim.add_node("s", 2 * GB, 2, label=STATIC)
    assert _am_host(sim, _submit(sim)) == "s"
    late = _submit(sim, am=Resource(2 * GB, 1))
    assert _am_host(sim, late) is None
    sim.advance_ms(10_000)
    (first,) = [c for c in sim.scheduler.node_containers(s)]
    sim.scheduler.container_finished(first.container_id, 0, "done")
    assert _am_host(sim, late) == "s"


def test_while_an_am_waits_unlabelled_asks_keep_off_static_nodes() -> None:
    """A static slot that frees up while an AM waits is not taken by the next unlabelled executor (which
    waits, saying why, while the volatile node has memory but no cores); an ask labelled static may still
    take static space; the AM gets the static node once it has room for it."""
    sim = SimCluster(config=AM_SHARE)
    sim.add_node("s", 2 * GB, 4, label=STATIC)
    sim.add_node("v", 16 * GB, 8, label=VOLATILE)
    executors = sim.submit(am=None)
    sim.ask(executors, ask(2, where="s"), ask(2))
    assert sim.hosts_of(sim.schedule()) == ["s", "s"]
    am = _submit(sim, am=Resource(2 * GB, 1))
    assert _am_host(sim, am) is None
    filler = sim.submit(am=None)
    sim.ask(filler, ask(8))
    assert sim.hosts_of(sim.schedule()) == ["v"] * 8  # v: 8 GiB but no cores left
    one, two = sim.acquire_and_launch(executors)
    sim.scheduler.container_finished(one.container_id, 0, "done")
    sim.ask(executors, ask(1))
    assert sim.schedule() == []  # s has 1 GiB and 3 cores free, held for the 2 GiB AM
    assert sim.scheduler.static_held
    assert sim.scheduler.waiting_reason(executors) == (
        "Only static nodes have <memory:1024, vCores:1> free, and they are kept for ApplicationMasters waiting "
        'for one (am_node_class = "static"; a request labelled static may still use them)'
    )
    sim.ask(executors, replace(ask(1), node_label=STATIC))
    assert sim.hosts_of(sim.schedule()) == ["s"]
    (labelled,) = sim.acquire_and_launch(executors)
    for done in (two, labelled):
        sim.scheduler.container_finished(done.container_id, 0, "done")
    assert _am_host(sim, am) == "s"
