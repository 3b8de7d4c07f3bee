"""Locality in the allocation pass: node-local first, delayed relaxation to rack then anywhere, blacklists."""

from __future__ import annotations

from cortex_rm.allocator.asks import ANY, ResourceAsk
from cortex_rm.allocator.containers import Locality
from cortex_rm.allocator.scheduler_config import SchedulerConfig
from tests.support.scheduler_sim import GB, SimCluster, ask


def _racked() -> SimCluster:
    """h1 (1 GB) and h2 (2 GB) in /r1, h3 (8 GB) in /r2; default delays 1000 + 1000 ms."""
    sim = SimCluster()
    sim.add_node("h1", GB, 1, rack="/r1")
    sim.add_node("h2", 2 * GB, 2, rack="/r1")
    sim.add_node("h3", 8 * GB, 8, rack="/r2")
    return sim


def _local_ask(n: int, host: str = "h1", rack: str = "/r1", relax: bool = True) -> list[ResourceAsk]:
    """What AMRMClient sends for n containers preferring ``host``: host, its rack, and "*"."""
    return [ask(n, where=host), ask(n, where=rack), ask(n, where=ANY, relax=relax)]


def test_node_local_ask_lands_on_its_host_even_if_others_have_more_room() -> None:
    """A container asked on h1 goes to h1 (NODE_LOCAL), not to the emptier h3, and takes its entries."""
    sim = _racked()
    app = sim.submit(am=None)
    sim.ask(app, *_local_ask(1))
    (c,) = sim.schedule()
    assert (c.node_id.host, c.locality) == ("h1", Locality.NODE_LOCAL)
    assert sim.scheduler.pending_containers() == 0


def test_ask_without_places_goes_anywhere_at_once() -> None:
    """Only "*": off-switch on the node with most free memory, no waiting."""
    sim = _racked()
    app = sim.submit(am=None)
    sim.ask(app, ask(1))
    (c,) = sim.schedule()
    assert (c.node_id.host, c.locality) == ("h3", Locality.OFF_SWITCH)


def test_node_local_ask_relaxes_to_its_rack_then_anywhere_after_the_delays() -> None:
    """With h1 full: nothing before 1 s, then h2 in the same rack, then (1 s later) h3 anywhere."""
    sim = _racked()
    app = sim.submit(am=None)
    sim.ask(app, *_local_ask(1))
    sim.schedule()  # h1 is now full
    sim.ask(app, *_local_ask(3))
    assert sim.schedule() == []
    reason = sim.scheduler.waiting_reason(app)
    assert reason is not None and reason.startswith("Waiting for a container of <memory:1024, vCores:1> on a requested")
    sim.advance_ms(999)
    assert sim.schedule() == []
    sim.advance_ms(1)
    rack_local = sim.schedule()
    assert [(c.node_id.host, c.locality) for c in rack_local] == [("h2", Locality.RACK_LOCAL)] * 2
    sim.advance_ms(999)
    assert sim.schedule() == []
    sim.advance_ms(1)
    (anywhere,) = sim.schedule()
    assert (anywhere.node_id.host, anywhere.locality) == ("h3", Locality.OFF_SWITCH)


def test_no_delay_scheduling_when_the_delays_are_zero() -> None:
    """With both delays 0, a full preferred host is passed over within the same pass."""
    sim = SimCluster(config=SchedulerConfig(node_locality_delay_ms=0, rack_locality_delay_ms=0))
    sim.add_node("h1", GB, 1, rack="/r1")
    sim.add_node("h3", 8 * GB, 8, rack="/r2")
    app = sim.submit(am=None)
    sim.ask(app, *_local_ask(3))
    placed = sim.schedule()
    assert [(c.node_id.host, c.locality) for c in placed] == [
        ("h1", Locality.NODE_LOCAL),
        ("h3", Locality.OFF_SWITCH),
        ("h3", Locality.OFF_SWITCH),
    ]


def test_strict_locality_never_leaves_the_requested_places() -> None:
    """relax_locality=false on "*": the ask waits for h1/h2 (/r1) however long, and says so."""
    sim = _racked()
    app = sim.submit(am=None)
    sim.ask(app, *_local_ask(4, relax=False))
    sim.advance_ms(60_000)
    sim.schedule()
    sim.advance_ms(60_000)
    sim.schedule()
    held = sim.scheduler.attempt_containers(app)
    assert sorted(c.node_id.host for c in held) == ["h1", "h2", "h2"]  # all /r1 has room for
    reason = sim.scheduler.waiting_reason(app)
    assert reason == (
        "No requested host or rack (/r1, h1) has <memory:1024, vCores:1> free, "
        "and the request does not relax locality"
    )


def test_strict_rack_entry_admits_only_its_named_hosts() -> None:
    """A rack entry with relax_locality=false is not used as a rack, nor may off-switch land in it."""
    sim = SimCluster(config=SchedulerConfig(node_locality_delay_ms=0, rack_locality_delay_ms=0))
    sim.add_node("h1", GB, 1, rack="/r1")
    sim.add_node("h2", 8 * GB, 8, rack="/r1")
    sim.add_node("h3", 2 * GB, 2, rack="/r2")
    app = sim.submit(am=None)
    sim.ask(app, ask(4, where="h1"), ask(4, where="/r1", relax=False), ask(4))
    assert [c.node_id.host for c in sim.schedule()] == ["h1", "h3", "h3"]


def test_blacklisted_nodes_get_no_containers_until_removed_from_the_list() -> None:
    """Containers avoid blacklisted hosts even when those have the most room; removal lifts it."""
    sim = SimCluster()
    sim.add_node("big", 8 * GB, 8)
    sim.add_node("small", 2 * GB, 2)
    app = sim.submit(am=None)
    sim.scheduler.update_requests(app, [ask(3)], blacklist_add=["big"])
    assert [c.node_id.host for c in sim.schedule()] == ["small", "small"]
    assert sim.scheduler.waiting_reason(app) == (
        "Every node with <memory:1024, vCores:1> free is blacklisted by the application (blacklist: big)"
    )
    sim.scheduler.update_requests(app, blacklist_remove=["big"])
    assert [c.node_id.host for c in sim.schedule()] == ["big"]


def test_blacklisted_host_is_skipped_even_when_asked_for_by_name() -> None:
    """A node-local ask for a blacklisted host is served elsewhere once relaxed."""
    sim = SimCluster(config=SchedulerConfig(node_locality_delay_ms=0, rack_locality_delay_ms=0))
    sim.add_node("h1", 8 * GB, 8, rack="/r1")
    sim.add_node("h2", 8 * GB, 8, rack="/r1")
    app = sim.submit(am=None)
    sim.scheduler.update_requests(app, _local_ask(2), blacklist_add=["h1"])
    assert [(c.node_id.host, c.locality) for c in sim.schedule()] == [("h2", Locality.RACK_LOCAL)] * 2


def test_blacklisted_rack_excludes_all_its_nodes() -> None:
    """A rack name in the blacklist keeps every node of that rack out."""
    sim = _racked()
    app = sim.submit(am=None)
    sim.scheduler.update_requests(app, [ask(3)], blacklist_add=["/r2"])
    assert {c.node_id.host for c in sim.schedule()} == {"h1", "h2"}
