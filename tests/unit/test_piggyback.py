"""The piggyback channel: keyed replacement, retransmit bounds, byte budgets, gossip sections."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import ILogObserver, globalLogPublisher

from cortex_rm.dht.peer import Peer
from cortex_rm.dht.piggyback import BroadcastQueue, GossipSections
from cortex_rm.dht.swim_messages import GossipItem, MemberStatus, MemberUpdate, Piggyback

A, B = Peer(1, "a:1"), Peer(2, "b:1")


def size_of(item: Piggyback) -> int:
    """A fixed size per item: 10 bytes."""
    return 10


def test_newer_update_about_the_same_member_replaces_the_older() -> None:
    """Two updates about A leave one queued item, the newer, with no transmissions."""
    queue = BroadcastQueue(retransmit_limit=3)
    queue.put(MemberUpdate(A, MemberStatus.SUSPECT, 1, B))
    queue.take(100, size_of)
    queue.put(MemberUpdate(A, MemberStatus.ALIVE, 2))
    assert queue.queued() == [MemberUpdate(A, MemberStatus.ALIVE, 2)]
    assert queue.transmits(MemberUpdate(A, MemberStatus.ALIVE, 2)) == 0


def test_section_items_are_keyed_by_section_and_key() -> None:
    """Items of different keys or sections coexist; the same (section, key) replaces."""
    queue = BroadcastQueue()
    queue.put(GossipItem("cap", "n1", b"1"))
    queue.put(GossipItem("cap", "n2", b"1"))
    queue.put(GossipItem("load", "n1", b"1"))
    queue.put(GossipItem("cap", "n1", b"2"))
    assert len(queue) == 3
    assert GossipItem("cap", "n1", b"2") in queue.queued()


def test_fewest_sent_first_then_newest() -> None:
    """take prefers items sent least, and among those the newest."""
    queue = BroadcastQueue(retransmit_limit=10)
    queue.put(GossipItem("s", "old", b""))
    assert queue.take(10, size_of) == [GossipItem("s", "old", b"")]
    queue.put(GossipItem("s", "a", b""))
    queue.put(GossipItem("s", "b", b""))
    assert queue.take(20, size_of) == [GossipItem("s", "b", b""), GossipItem("s", "a", b"")]
    # All sent once now: the newest goes first again.
    assert queue.take(30, size_of) == [GossipItem("s", "b", b""), GossipItem("s", "a", b""), GossipItem("s", "old", b"")]


def test_items_that_do_not_fit_are_skipped_for_smaller_ones() -> None:
    """A large item beyond the budget stays queued; a smaller one behind it is taken."""
    queue = BroadcastQueue()
    queue.put(GossipItem("s", "small", b"x"))
    queue.put(GossipItem("s", "big", b"x" * 100))
    taken = queue.take(50, lambda item: len(item.payload) if isinstance(item, GossipItem) else 0)
    assert taken == [GossipItem("s", "small", b"x")]
    assert queue.transmits(GossipItem("s", "big", b"")) == 0


def test_full_queue_drops_the_most_sent_item() -> None:
    """At max_items, a new key evicts the item sent most often."""
    queue = BroadcastQueue(max_items=2, retransmit_limit=10)
    worn, fresh, new = (MemberUpdate(Peer(i, f"m{i}:1"), MemberStatus.ALIVE, 0) for i in range(3))
    queue.put(worn)
    queue.take(10, size_of)
    queue.put(fresh)
    queue.put(new)
    assert set(queue.queued()) == {fresh, new}


def test_full_section_share_drops_the_most_sent_section_item() -> None:
    """At max_section_items, a new section key evicts the section item sent most often."""
    queue = BroadcastQueue(max_items=4, retransmit_limit=10)
    queue.put(GossipItem("s", "worn", b""))
    queue.take(10, size_of)
    queue.put(GossipItem("s", "fresh", b""))
    queue.put(GossipItem("s", "new", b""))
    assert {item.key for item in queue.queued() if isinstance(item, GossipItem)} == {"fresh", "new"}


def test_flood_of_gossip_section_items_never_evicts_member_updates() -> None:
    """Section items fill at most their share of the queue and evict only each other; membership
    updates mid-spread (sent more often than the flood) all stay queued."""
    queue = BroadcastQueue(max_items=8, retransmit_limit=100)
    updates = [MemberUpdate(Peer(i, f"m{i}:1"), MemberStatus.SUSPECT, 0, A) for i in range(6)]
    for update in updates:
        queue.put(update)
    queue.take(1000, size_of)  # each sent once: the flood's items are sent fewer times
    for i in range(500):
        queue.put(GossipItem("flood", str(i), b"x"))
    queued = queue.queued()
    assert set(updates) <= set(queued)
    assert len(queued) == 8 and len([item for item in queued if isinstance(item, GossipItem)]) == 2
    # A membership update still finds room, by pushing a section item out.
    late = MemberUpdate(Peer(99, "m99:1"), MemberStatus.DEAD, 0)
    queue.put(late)
    assert late in queue.queued() and set(updates) <= set(queue.queued())


def test_section_items_wait_when_the_queue_is_all_membership_news() -> None:
    """With every slot held by membership updates, a new section item is dropped, not them."""
    queue = BroadcastQueue(max_items=2)
    updates = [MemberUpdate(Peer(i, f"m{i}:1"), MemberStatus.ALIVE, 0) for i in range(2)]
    for update in updates:
        queue.put(update)
    queue.put(GossipItem("s", "k", b""))
    assert set(queue.queued()) == set(updates)


def test_section_share_must_fit_the_queue() -> None:
    """``max_section_items`` lies in [1, max_items]."""
    with pytest.raises(ValueError):
        BroadcastQueue(max_items=4, max_section_items=5)
    with pytest.raises(ValueError):
        BroadcastQueue(max_items=4, max_section_items=0)


@given(
    st.integers(min_value=1, max_value=8),
    st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=40),
    st.lists(st.integers(min_value=0, max_value=60), max_size=60),
)
def test_each_item_is_sent_at_most_retransmit_limit_times(limit: int, keys: list[int], budgets: list[int]) -> None:
    """Whatever the budgets, no version of an item is taken more than the limit, and no take exceeds its budget."""
    queue = BroadcastQueue(retransmit_limit=limit)
    for key in keys:
        queue.put(GossipItem("s", str(key), b""))
    sent: dict[str, int] = {}
    for budget in budgets:
        taken = queue.take(budget, size_of)
        assert sum(size_of(item) for item in taken) <= budget
        assert len({id(item) for item in taken}) == len(taken)
        for item in taken:
            assert isinstance(item, GossipItem)
            sent[item.key] = sent.get(item.key, 0) + 1
    assert all(count <= limit for count in sent.values())


def test_sections_deliver_and_regossip_only_what_is_new() -> None:
    """on_receive sees each item; items it calls new are queued again, old ones are not."""
    queue = BroadcastQueue()
    sections = GossipSections(queue)
    seen: dict[str, bytes] = {}

    def on_receive(item: GossipItem) -> bool:
        new = seen.get(item.key) != item.payload
        seen[item.key] = item.payload
        return new

    sections.register("cap", on_receive)
    assert sections.receive(GossipItem("cap", "n1", b"4cpu"))
    assert queue.queued() == [GossipItem("cap", "n1", b"4cpu")]
    queue.take(100, size_of)
    queue.take(100, size_of)
    queue.take(100, size_of)
    queue.take(100, size_of)
    assert len(queue) == 0
    assert not sections.receive(GossipItem("cap", "n1", b"4cpu"))
    assert len(queue) == 0


def test_publish_queues_an_item_of_a_registered_section_only() -> None:
    """publish puts the item in the queue; an unregistered section is an error, a second register too."""
    queue = BroadcastQueue()
    sections = GossipSections(queue)
    sections.register("cap", lambda item: True)
    assert sections.publish("cap", "n1", b"x") == GossipItem("cap", "n1", b"x")
    assert queue.queued() == [GossipItem("cap", "n1", b"x")]
    with pytest.raises(KeyError):
        sections.publish("nope", "k", b"")
    with pytest.raises(ValueError):
        sections.register("cap", lambda item: True)


def test_unknown_section_is_ignored_and_logged_once() -> None:
    """Items of a section nobody registered are dropped, not re-gossiped, and logged once per section."""
    events: list[dict[str, object]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        queue = BroadcastQueue()
        sections = GossipSections(queue)
        assert not sections.receive(GossipItem("future", "k1", b""))
        assert not sections.receive(GossipItem("future", "k2", b""))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(queue) == 0
    assert [e.get("section") for e in events if e.get("section") == "future"] == ["future"]


@pytest.mark.expect_logged_errors('section broken failed on an item')
def test_a_section_that_raises_loses_only_its_item() -> None:
    """A bug in one section's receiver is logged and the item dropped; the receive
    returns normally, so the rest of the envelope (its Ack, its rumours) is handled."""
    queue = BroadcastQueue()
    sections = GossipSections(queue)

    def broken(item: GossipItem) -> bool:
        raise RuntimeError("section bug")

    sections.register("broken", broken)
    seen: list[dict] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    try:
        assert sections.receive(GossipItem("broken", "k", b"v")) is False
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(queue) == 0
    assert any(e.get("log_failure") is not None for e in seen)
