"""The RM journal's compaction and snapshots (``ha/journal.py``, ``ha/journal_log.py``, ``ha/journal_snapshots.py``)
on the simulated network (``tests/support/journal_net.py``): each node discards what it applied but a tail, a
node behind the leader's base is sent its snapshot in chunks, an install torn by a crash leaves a node that
asks for another; the random schedules of ``test_ha_journal.py`` with all this keep their invariants, and in
the end every node applied what the leader did, every acknowledged entry included."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rm.ha import journal
from cortex_rm.ha.journal import Append, Appended, JournalNode, JournalState, Snapshot
from tests.support.journal_net import Net, run_schedule

A, B, C = 0xA, 0xB, 0xC


def check_healed(net: Net) -> None:
    """After ``heal``: every node applied what the leader did, and nothing acknowledged is lost."""
    net.torn_installs = 0.0  # (no crash while healing)
    leader = net.heal()
    final = net.applied[leader]
    for i in net.ids:
        assert not net.states[i].stale and net.applied[i] == final, f"{i:x} did not apply what the leader did"
    for seq, data in net.acked.items():
        assert dict(final).get(seq) == data, f"acknowledged entry {seq} was lost or changed"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), members=st.sampled_from([1, 2, 3, 4, 5]), tail=st.sampled_from([0, 1, 3, 8]),
       lease_s=st.sampled_from([0.0, 1.0]))  # fmt: skip
def test_random_schedules_with_compaction_and_snapshots_keep_every_acknowledged_entry(
    seed: int, members: int, tail: int, lease_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node discards what it applied but a short tail, so a node down or cut off for a while needs a
    snapshot (in chunks of 40 bytes: several per install), and some crash between an install's two steps;
    with kills, restarts, loss and campaigns at any moment the invariants hold (``Net.observe``: one
    sequence, one leader per epoch, with leases one holding it at once) and in the end every node applied
    what the leader did, every acknowledged entry included."""
    monkeypatch.setattr(journal, "SNAPSHOT_CHUNK_BYTES", 40)  # (the same for every input: reset needs none)
    check_healed(run_schedule(seed, members, 400, lease_s=lease_s, tail=tail, torn_installs=0.2, heartbeat_s=0.4))


def test_snapshot_installs_do_happen_in_the_random_schedules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property above is not vacuous: over a few long schedules, snapshots are installed (whole, and
    torn by a crash then installed again), entries are acknowledged, and every log stays short."""
    monkeypatch.setattr(journal, "SNAPSHOT_CHUNK_BYTES", 40)
    installs = acked = longest = 0
    for seed in range(6):
        net = run_schedule(seed, 3, 3000, lease_s=1.0, tail=2, torn_installs=0.2, heartbeat_s=0.4)
        check_healed(net)
        installs, acked = installs + net.installs, acked + len(net.acked)
        longest = max(longest, *(len(s.log) for s in net.states.values()))
    assert installs >= 5 and acked > 100
    assert longest < 100  # (what is not yet committed or applied stays, at most)


def test_a_follower_down_while_the_others_compact_is_caught_up_by_a_snapshot_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "SNAPSHOT_CHUNK_BYTES", 16)
    net = Net([A, B, C], tail=2)
    net.campaign(A)
    net.settle()
    net.crash(C)
    for i in range(20):
        net.propose(A, b"e%d" % i)
        net.settle()
    net.now += 1
    net.tick(A)
    net.settle()
    assert net.states[A].base_seq > 10 and len(net.states[A].log) <= 3  # (A and B discarded all but the tail)
    net.restart(C)
    chunks = 0
    net.now += 1
    net.tick(A)
    while net.queue:
        chunks += isinstance(net.queue[0][2], Snapshot)
        net.deliver()
    assert net.data(C) == net.data(A) == [b"e%d" % i for i in range(20)]
    assert chunks > 5 and net.installs == 1 and net.states[C].base_seq >= net.states[A].base_seq - 2
    net.propose(A, b"after")  # and Appends go on after the snapshot
    net.settle()
    net.now += 1
    net.tick(A)
    net.settle()
    assert net.data(C)[-1] == b"after"


def test_a_node_torn_by_a_crash_mid_install_asks_for_a_snapshot_again_and_applies_nothing_before() -> None:
    net = Net([A, B, C], tail=0, torn_installs=1.0)
    net.campaign(A)
    net.settle()
    net.crash(C)
    for i in range(5):
        net.propose(A, b"e%d" % i)
    net.settle()
    net.restart(C)
    net.now += 1
    net.tick(A)
    net.settle()
    assert C in net.down and net.states[C].stale  # crashed with half the snapshot in its store
    net.torn_installs = 0.0
    net.restart(C)
    assert net.nodes[C].to_apply() == [] and net.nodes[C].campaign(net.now) == []  # stale: it cannot act
    net.now += 1
    net.tick(A)
    net.settle()
    assert not net.states[C].stale and net.data(C) == net.data(A) and net.installs == 1


def test_compaction_keeps_the_tail_and_never_discards_what_is_not_applied() -> None:
    state = JournalState(log=[journal.Entry((1, A), s, b"x") for s in range(1, 11)], committed=8, applied=6)
    assert state.compact(2) == 4 and state.base_epoch == (1, A) and [e.seq for e in state.log] == list(range(5, 11))
    assert state.epoch_at(4) == (1, A) and state.epoch_at(3) == (0, 0) and state.last_seq == 10
    assert state.compact(10) == 4  # (nothing more to discard)
    state.applied = 10
    assert state.compact(0) == 8  # (not beyond what is committed)
    with pytest.raises(ValueError, match="discarded"):
        state.entries_after(3)


def test_an_append_reaching_below_a_followers_base_matches_at_the_base() -> None:
    """What a base covers is committed, so an Append from before it matches there: the follower takes the
    entries after its base and answers how far the leader's log now matches."""
    state = JournalState(promised=(2, A), log=[journal.Entry((2, A), 6, b"f")], committed=5, applied=5,
                         base_seq=5, base_epoch=(1, A))  # fmt: skip
    node = JournalNode(B, frozenset({A, B, C}), state)
    entries = tuple(journal.Entry((1, A) if s <= 5 else (2, A), s, b"e%d" % s) for s in range(4, 8))
    assert node.receive(A, Append((2, A), 3, (1, A), entries, 7), 0) == [(A, Appended((2, A), True, 7))]
    assert [e.seq for e in node.state.log] == [6, 7] and node.state.committed == 7
    assert [e.data for e in node.to_apply()] == [b"f", b"e7"]


def test_a_leader_keeps_the_entries_after_a_snapshot_it_sends_but_not_for_a_follower_gone_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journal, "SNAPSHOT_CHUNK_BYTES", 16)
    net = Net([A, B, C], tail=0)
    net.campaign(A)
    net.settle()
    net.crash(C)
    for i in range(20):
        net.propose(A, b"e%d" % i)
    net.settle()
    net.restart(C)
    net.now += 1
    net.tick(A)
    while not (net.queue[0][0] == C and isinstance(net.queue[0][2], Snapshot) and net.queue[0][2].offset > 0):
        net.deliver()  # (until C acknowledged the first chunk: the leader sends it the second)
    net.crash(C)  # (what it is sent now is lost; it was heard a moment ago)
    held = net.states[A].base_seq
    for i in range(5):  # the leader keeps what C needs after the snapshot
        net.propose(A, b"f%d" % i)
        net.settle()
    assert net.states[A].base_seq == held and len(net.states[A].log) >= 5
    for i in range(40):  # C silent for many heartbeats: nothing is held back for it any more
        net.now += 0.5
        net.tick(A)
        net.propose(A, b"g%d" % i)
        net.settle()
    assert net.states[A].base_seq > held + 30 and len(net.states[A].log) <= 2
