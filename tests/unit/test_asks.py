"""An attempt's outstanding requests (AppSchedulingInfo): absolute counts, decrements, recovery, blacklist."""

from __future__ import annotations

import pytest

from cortex_rm.allocator.asks import ANY, AppSchedulingInfo, InvalidResourceRequest, RequestKey, ResourceAsk
from cortex_rm.allocator.containers import Locality
from cortex_rm.yarn.resources import Resource

EXEC = Resource(896, 1)
KEY = RequestKey(0, EXEC)


def _ask(where: str, n: int, priority: int = 0, relax: bool = True, capability: Resource = EXEC) -> ResourceAsk:
    return ResourceAsk(priority, where, capability, n, relax)


def _info(*asks: ResourceAsk) -> AppSchedulingInfo:
    info = AppSchedulingInfo()
    info.update(asks)
    return info


def test_counts_are_absolute_not_added() -> None:
    """Sending the same key twice replaces its count (Spark sends totals, not deltas)."""
    info = _info(_ask(ANY, 3))
    info.update([_ask(ANY, 3)])
    assert info.count(KEY) == 3 and info.outstanding_containers == 3
    info.update([_ask(ANY, 5)])
    assert info.outstanding_containers == 5


def test_zero_cancels_a_key_and_its_places() -> None:
    """Re-sending every entry of a key with 0 removes it; nothing is outstanding any more."""
    info = _info(_ask(ANY, 2), _ask("h1", 2), _ask("/r1", 2))
    info.update([_ask(ANY, 0), _ask("h1", 0), _ask("/r1", 0)])
    assert not info.has_outstanding and info.pending() == [] and info.get(KEY) is None


def test_cancelling_an_unknown_key_is_a_no_op() -> None:
    """A 0 for a key never asked for changes nothing."""
    info = _info(_ask(ANY, 0))
    assert info.get(KEY) is None


def test_host_and_rack_entries_are_places_not_extra_containers() -> None:
    """Only "*" says how many are wanted; hosts and racks (names starting with /) are preferences."""
    info = _info(_ask(ANY, 2), _ask("h1", 1), _ask("h2", 1), _ask("/r1", 2))
    (request,) = info.pending()
    assert request.total == 2 and info.outstanding_containers == 2
    assert request.hosts == {"h1": 1, "h2": 1} and request.racks == {"/r1": 2}


def test_keys_are_served_by_priority_then_request_id_then_size() -> None:
    """pending() lists keys with outstanding containers, lower priority value first."""
    info = _info(_ask(ANY, 1, priority=2), _ask(ANY, 1, priority=0, capability=Resource(2048, 1)), _ask(ANY, 1, priority=0))
    assert [(r.key.priority, r.key.capability.memory_mb) for r in info.pending()] == [(0, 896), (0, 2048), (2, 896)]
    assert info.outstanding_resource() == Resource(896 * 2 + 2048, 3)


def test_node_local_allocation_decrements_host_rack_and_any() -> None:
    """As YARN: a node-local container takes one from its host, its rack and "*"."""
    info = _info(_ask(ANY, 2), _ask("h1", 1), _ask("h2", 1), _ask("/r1", 2))
    (request,) = info.pending()
    record = info.allocate(request, Locality.NODE_LOCAL, "h1", "/r1")
    assert (request.total, request.hosts, request.racks) == (1, {"h2": 1}, {"/r1": 1})
    assert (record.host, record.rack) == ("h1", "/r1")


def test_rack_local_allocation_leaves_hosts_alone() -> None:
    """A rack-local container takes from its rack and "*" only."""
    info = _info(_ask(ANY, 2), _ask("h1", 2), _ask("/r1", 2))
    (request,) = info.pending()
    info.allocate(request, Locality.RACK_LOCAL, "h9", "/r1")
    assert (request.total, request.hosts, request.racks) == (1, {"h1": 2}, {"/r1": 1})


def test_off_switch_allocation_takes_only_from_any() -> None:
    """An off-switch container takes from "*" only; the last one leaves nothing outstanding."""
    info = _info(_ask(ANY, 1), _ask("h1", 1), _ask("/r1", 1))
    (request,) = info.pending()
    info.allocate(request, Locality.OFF_SWITCH, "h9", "/r9")
    assert (request.total, request.hosts, request.racks) == (0, {"h1": 1}, {"/r1": 1})
    assert not info.has_outstanding and info.pending() == []


def test_recover_puts_back_exactly_what_an_allocation_took() -> None:
    """A container that vanished before its AM saw it gives its ask back, places included."""
    info = _info(_ask(ANY, 1), _ask("h1", 1), _ask("/r1", 1))
    (request,) = info.pending()
    record = info.allocate(request, Locality.NODE_LOCAL, "h1", "/r1")
    assert info.recover(record)
    assert (request.total, request.hosts, request.racks) == (1, {"h1": 1}, {"/r1": 1})
    assert info.outstanding_containers == 1


def test_recover_defers_to_a_newer_absolute_count() -> None:
    """If the AM re-sent the key after the allocation, its count already says what it wants: no recovery."""
    info = _info(_ask(ANY, 2))
    (request,) = info.pending()
    record = info.allocate(request, Locality.OFF_SWITCH, "h1", "/r1")
    info.update([_ask(ANY, 2)])
    assert not info.recover(record)
    assert info.count(KEY) == 2


def test_relax_locality_flags_are_kept_per_entry() -> None:
    """"*" with relax=false forbids off-switch; a rack entry with relax=false is strict."""
    info = _info(_ask(ANY, 1, relax=False), _ask("h1", 1), _ask("/r1", 1, relax=False))
    (request,) = info.pending()
    assert not request.relax_locality and request.strict_racks == {"/r1"}
    info.update([_ask("/r1", 1, relax=True)])
    assert request.strict_racks == set()


def test_blacklist_additions_and_removals() -> None:
    """Blacklisted hosts or racks exclude a node; a removal lifts it."""
    info = AppSchedulingInfo()
    info.update_blacklist(["h1", "/r2"])
    assert info.is_blacklisted("h1", "/r1") and info.is_blacklisted("h5", "/r2")
    assert not info.is_blacklisted("h2", "/r1")
    info.update_blacklist(removals=["h1"])
    assert info.blacklist == frozenset({"/r2"})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_ask(ANY, -1), "negative number of containers"),
        (_ask(ANY, 1, capability=Resource(-5, 1)), "negative capability"),
        (_ask("", 1), "empty resource name"),
    ],
)
def test_malformed_asks_are_refused_before_anything_changes(bad: ResourceAsk, message: str) -> None:
    """A bad ask in a batch raises InvalidResourceRequest and leaves the table as it was."""
    info = _info(_ask(ANY, 1))
    with pytest.raises(InvalidResourceRequest, match=message):
        info.update([_ask(ANY, 7), bad])
    assert info.count(KEY) == 1
