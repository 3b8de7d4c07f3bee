"""The RM's replicated journal (``ha/journal.py``): scripted cases, then thousands of random schedules on a
simulated network that loses, reorders and repeats messages and crashes nodes (each keeps only what it
persisted), checking after every step that no two leaders share an epoch, that every node applies the
same sequence, and that every entry a leader saw committed (what the RM acknowledges) is applied by
every node in the end (the network: ``tests/support/journal_net.py``; with compaction and snapshots:
``test_ha_journal_compaction.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex_rm.ha import journal
from cortex_rm.ha.journal import Append, Appended, JournalNode, Message, NotLeader, Prepare, Promise, Refused
from tests.support.journal_net import Net, run_schedule

A, B, C, D, E = 0xA, 0xB, 0xC, 0xD, 0xE


def test_a_single_member_commits_at_once() -> None:
    net = Net([A])
    net.campaign(A)
    assert net.nodes[A].is_leader
    net.propose(A, b"x")
    assert net.data(A) == [b"x"] and net.acked == {2: b"x"}  # (1: the leader's no-op)


def test_three_members_commit_with_a_majority_and_followers_apply_on_the_next_append() -> None:
    net = Net([A, B, C])
    net.campaign(A)
    net.settle()
    assert net.nodes[A].is_leader and net.nodes[B].leader == A
    net.crash(C)
    net.propose(A, b"one")
    net.settle()
    assert net.data(A) == [b"one"]  # A and B hold it: a majority
    net.now += 1
    net.tick(A)
    net.settle()
    assert net.data(B) == [b"one"] and net.data(C) == []
    net.restart(C)
    net.now += 1
    net.tick(A)
    net.settle()
    assert net.data(C) == [b"one"]  # caught up


def test_a_minority_cannot_commit_and_a_new_majority_keeps_what_was_acknowledged() -> None:
    net = Net([A, B, C, D, E])
    net.campaign(A)
    net.settle()
    net.crash(D)
    net.crash(E)
    acked = net.propose(A, b"acked")  # held by A, B and C: a majority
    net.settle()
    assert net.nodes[A].state.committed == acked
    net.crash(C)
    net.propose(A, b"never")  # A and B: a minority
    net.settle()
    assert net.nodes[A].state.committed == acked
    net.crash(A)
    net.crash(B)
    for i in (C, D, E):
        net.restart(i)
    net.campaign(D)  # D never saw "acked": C does not grant it, so D has 2 of 5
    net.settle()
    assert not net.nodes[D].is_leader
    net.campaign(C)
    net.settle()
    assert net.nodes[C].is_leader and net.nodes[C].epoch > net.nodes[A].epoch
    net.now += 1
    net.tick(C)
    net.settle()
    assert net.data(D) == net.data(E) == [b"acked"]
    net.restart(A)
    net.restart(B)
    net.now += 1
    net.tick(C)
    net.settle()
    assert net.data(A) == net.data(B) == [b"acked"]  # A's "never" was dropped from its log
    assert b"never" not in [e.data for e in net.nodes[A].state.log]


def test_an_older_epoch_is_refused_everywhere_once_a_newer_is_promised() -> None:
    net = Net([A, B, C])
    net.campaign(A)
    net.settle()
    net.campaign(B)
    net.settle()
    assert net.nodes[B].is_leader and not net.nodes[A].is_leader
    old = Append((1, A), 0, (0, 0), (), 0)
    assert net.nodes[C].receive(A, old, 0) == [(A, Refused(net.nodes[B].epoch))]
    assert net.nodes[C].receive(A, Prepare((1, A), 0, (0, 0)), 0) == [(A, Refused(net.nodes[B].epoch))]
    assert net.nodes[C].receive(A, Prepare(net.nodes[B].epoch, 9, (9, A)), 0) == [(A, Refused(net.nodes[B].epoch))]
    with pytest.raises(NotLeader) as refused:
        net.nodes[A].propose(b"late")
    assert refused.value.leader == B


def test_a_forged_or_non_members_message_is_ignored_or_refused() -> None:
    node = JournalNode(A, frozenset({A, B, C}))
    assert node.receive(0xF, Prepare((9, 0xF), 0, (0, 0)), 0) == []  # not a member
    assert node.receive(B, Append((9, C), 0, (0, 0), (), 0), 0) == [(B, Refused((0, 0)))]  # C's epoch, sent by B
    assert node.receive(B, Promise((1, B), True), 0) == [] and node.receive(B, Appended((1, B), True, 3), 0) == []
    assert node.state.promised == (0, 0)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), members=st.sampled_from([1, 2, 3, 4, 5]))
def test_random_schedules_keep_every_acknowledged_entry_and_one_sequence(seed: int, members: int) -> None:
    net = run_schedule(seed, members, 400)
    leader = net.heal()
    final = net.applied[leader]
    for i in net.ids:
        assert net.applied[i] == final, "a node did not apply what the leader did"
    for seq, data in net.acked.items():
        assert dict(final).get(seq) == data, f"acknowledged entry {seq} was lost or changed"


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), members=st.sampled_from([2, 3, 4, 5]))
def test_with_leases_random_schedules_never_have_two_leaders_holding_a_lease_at_once(seed: int, members: int) -> None:
    """Kills, restarts, lost, repeated and reordered messages, campaigns at any moment: whenever a leader holds its
    lease (what lets its RM act), no other does (``Net.observe`` checks after every step), and nothing
    acknowledged is lost."""
    net = run_schedule(seed, members, 400, lease_s=1.0)
    final = dict(net.applied[net.heal()])
    for seq, data in net.acked.items():
        assert final.get(seq) == data


def test_many_acknowledged_entries_survive_in_a_long_schedule() -> None:
    """One long run, to show the schedules do commit things (the property above is not vacuous)."""
    net = run_schedule(7, 5, 6000)
    net.heal()
    assert len(net.acked) > 20


def test_a_campaigner_whose_log_is_behind_is_not_granted_and_one_that_is_up_to_date_leads() -> None:
    net = Net([A, B, C])
    net.campaign(A)
    net.settle()
    net.crash(C)
    for i in range(3):
        net.propose(A, b"e%d" % i)
    net.settle()
    net.crash(A)  # B holds the 3 entries; C none
    net.restart(C)
    net.campaign(C)
    net.settle()
    assert not net.nodes[C].is_leader and net.nodes[B].state.promised == net.nodes[C].epoch  # promised, not granted
    net.campaign(B)
    net.settle()
    assert net.nodes[B].is_leader
    net.now += 1
    net.tick(B)
    net.settle()
    assert net.data(C) == net.data(B) == [b"e0", b"e1", b"e2"]


def test_small_batches_catch_a_follower_up_over_several_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "MAX_BATCH", 2)
    net = Net([A, B, C])
    net.campaign(A)
    net.settle()
    net.crash(C)
    for i in range(7):
        net.propose(A, b"e%d" % i)
    net.settle()
    net.restart(C)
    appends = 0
    net.now += 1
    net.tick(A)
    while net.queue:
        appends += isinstance(net.queue[0][2], Append) and net.queue[0][0] == C
        net.deliver()
    assert net.data(C) == [b"e%d" % i for i in range(7)][: len(net.data(C))] and appends >= 4
    for seed in range(40):
        run = run_schedule(seed, 3, 400)
        leader = run.heal()
        assert all(run.applied[i] == run.applied[leader] for i in run.ids)
        assert all(dict(run.applied[leader]).get(seq) == data for seq, data in run.acked.items())


def test_an_entry_larger_than_the_bound_is_refused() -> None:
    node = JournalNode(A, frozenset({A}))
    node.campaign(0)
    with pytest.raises(ValueError, match="1 to"):
        node.propose(b"x" * (journal.MAX_ENTRY_BYTES + 1))
    with pytest.raises(ValueError, match="1 to"):
        node.propose(b"")  # (empty: a leader's no-op)
    assert node.propose(b"x" * journal.MAX_ENTRY_BYTES) == 2


def test_an_earlier_epochs_entry_on_a_majority_is_not_committed_by_counting_raft_figure_8(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raft's Figure 8: a leader must not count replicas of an older epoch's entry as committing it, or a
    later leader with a newer last epoch overwrites it after it was acknowledged."""
    monkeypatch.setattr(journal, "MAX_BATCH", 1)
    net = Net([A, B, C, D, E])
    net.campaign(A)
    net.settle()
    for i in (C, D, E):
        net.crash(i)
    net.propose(A, b"x")  # slot 2, epoch (1, A): on A and B only
    net.settle()
    net.crash(A)
    net.crash(B)
    for i in (C, D, E):
        net.restart(i)
    net.campaign(E)  # (2, E): C and D grant; its no-op lands in slot 2 on E alone
    while not net.nodes[E].is_leader:
        net.deliver()
    net.queue.clear()
    net.crash(E)
    net.restart(A)
    net.restart(B)
    net.campaign(A)  # (2, A): C promised (2, E), a later epoch, and refuses; A learns of it
    net.settle()
    net.campaign(A)  # (3, A): B and C grant; A catches C up one entry at a time
    while not (net.nodes[A].is_leader and net.nodes[C].state.last_seq >= 2):
        net.deliver()
    while any(to == A for to, _, _ in net.queue):  # B's and C's answers: "x" is on A, B and C now
        net.deliver(next(k for k, (to, _, _) in enumerate(net.queue) if to == A))
    assert all(b"x" in [e.data for e in net.nodes[i].state.log] for i in (A, B, C))
    assert 2 not in net.acked  # an older epoch's entry: not committed by being on a majority
    net.queue.clear()
    net.crash(A)
    for i in (D, E):
        net.restart(i)
    net.campaign(E)  # (4, E): its last entry's epoch (2, E) beats (1, A): B, C and D grant
    net.settle()
    assert net.nodes[E].is_leader
    net.now += 1
    net.tick(E)
    net.settle()
    assert b"x" not in net.data(B)  # overwritten, which is right only because it was never acknowledged


def test_with_leases_a_leader_heard_lately_is_not_deposed_and_a_cut_off_one_stands_down() -> None:
    members = frozenset({A, B, C})
    nodes = {i: JournalNode(i, members, lease_s=5.0) for i in members}
    queue: list[tuple[int, int, Message]] = [(to, A, m) for to, m in nodes[A].campaign(0.0)]

    def settle(now: float, drop_to: int | None = None) -> None:
        while queue:
            to, sender, message = queue.pop(0)
            if to != drop_to:
                queue.extend((t, to, m) for t, m in nodes[to].receive(sender, message, now))

    settle(0.0)
    assert nodes[A].is_leader
    queue.extend((to, C, m) for to, m in nodes[C].campaign(1.0))  # C cannot hear A, say: it campaigns
    settle(1.0)
    assert nodes[A].is_leader and not nodes[C].is_leader  # B heard A a second ago and A holds its lease
    assert nodes[A].tick(4.0) and nodes[A].is_leader
    assert nodes[A].tick(6.0) == [] and not nodes[A].is_leader  # nobody answered for 5 s: it stands down
    queue.extend((to, C, m) for to, m in nodes[C].campaign(12.0))
    settle(12.0)
    assert nodes[C].is_leader  # B has not heard a leader for more than its lease
