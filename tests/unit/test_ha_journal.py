"""The RM's replicated journal (``ha/journal.py``): scripted cases, then thousands of random schedules on a
simulated network that loses, reorders and repeats messages and crashes nodes (each keeps only what it
persisted), checking after every step that no two leaders share an epoch, that every node applies the
same sequence, and that every entry a leader saw committed (what the RM acknowledges) is applied by
every node in the end."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rm.ha import journal
from cortex_rm.ha.journal import (
    Append, Appended, Epoch, JournalNode, JournalState, Message, NotLeader, Prepare, Promise, Refused, Send, Snapshot,
)  # fmt: skip

A, B, C, D, E = 0xA, 0xB, 0xC, 0xD, 0xE


@dataclass
class Net:
    """Members on a simulated network; ``lossy`` drops, repeats and reorders messages."""

    ids: list[int]
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    lossy: bool = False
    now: float = 0.0
    nodes: dict[int, JournalNode] = field(default_factory=dict)
    states: dict[int, JournalState] = field(default_factory=dict)
    applied: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # each node's store: (seq, data)
    down: set[int] = field(default_factory=set)
    queue: list[tuple[int, int, Message]] = field(default_factory=list)
    leaders: dict[Epoch, int] = field(default_factory=dict)
    acked: dict[int, bytes] = field(default_factory=dict)  # seq -> data a leader saw committed
    proposed: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)  # leader -> its (seq, data)
    lease_s: float = 0.0  # the nodes' leases (0: off); with leases, two leaders never hold one at once
    heartbeat_s: float = 1.0  # (below lease_s for a leader to keep its lease through ``heal``)
    tail: int | None = None  # compaction: each node keeps this many applied entries (None: it keeps all)
    torn_installs: float = 0.0  # how often a node crashes between an install's two steps (its stores torn)
    snapshots: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # a node's snapshot "file": (seq, bytes)
    received: dict[int, bytearray] = field(default_factory=dict)  # a node's snapshot being received
    installs: int = 0

    def __post_init__(self) -> None:
        for i in self.ids:
            self.states[i] = JournalState()
            self.applied[i] = []
            self.nodes[i] = JournalNode(i, frozenset(self.ids), self.states[i], lease_s=self.lease_s,
                                        heartbeat_s=self.heartbeat_s)  # fmt: skip

    def post(self, sender: int, sends: list[Send]) -> None:
        for to, message in sends:
            if isinstance(message, Snapshot):  # (the driver reads the chunk from its file as it sends it)
                seq, blob = self.snapshots[sender]
                assert seq == message.seq and len(blob) == message.size
                message = replace(message, data=blob[message.offset : message.offset + journal.SNAPSHOT_CHUNK_BYTES])
            if self.lossy and self.rng.random() < 0.1:
                continue
            self.queue.append((to, sender, message))
            if self.lossy and self.rng.random() < 0.05:
                self.queue.append((to, sender, message))

    def deliver(self, index: int = 0) -> None:
        to, sender, message = self.queue.pop(index)
        if to not in self.down:
            self.post(to, self.nodes[to].receive(sender, message, self.now))
            self.install(to)
        self.observe()

    def install(self, i: int) -> None:
        """What the driver does with snapshot chunks: write them to a file; once whole, replace the store with it."""
        node = self.nodes[i]
        chunk = node.take_chunk()
        if chunk is not None:
            file = self.received.setdefault(i, bytearray())
            if chunk.offset == 0:
                file.clear()
            assert len(file) == chunk.offset, "a chunk out of order was handed to the driver"
            file += chunk.data
        if node.receiver.ready is None:
            return
        node.install_begin()
        content = [(seq, data.encode()) for seq, data in json.loads(bytes(self.received[i]))]
        if self.rng.random() < self.torn_installs:  # it crashes with half of the snapshot written
            self.applied[i] = content[: len(content) // 2]
            self.crash(i)
            return
        self.applied[i] = content
        self.installs += 1
        self.post(i, node.install_end())

    def settle(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            self.deliver(self.rng.randrange(len(self.queue)) if self.lossy else 0)
        raise AssertionError("the network did not settle")

    def campaign(self, i: int) -> None:
        self.post(i, self.nodes[i].campaign(self.now))
        self.observe()

    def propose(self, i: int, data: bytes) -> int:
        seq = self.nodes[i].propose(data)
        self.proposed.setdefault(i, []).append((seq, data))
        self.post(i, self.nodes[i].flush(self.now))
        self.observe()
        return seq

    def tick(self, i: int) -> None:
        self.post(i, self.nodes[i].tick(self.now))

    def crash(self, i: int) -> None:
        self.down.add(i)

    def restart(self, i: int) -> None:
        """It comes back with what it persisted (its state, its store); all else is gone."""
        self.down.discard(i)
        node = JournalNode(i, frozenset(self.ids), self.states[i], lease_s=self.lease_s, started_at=self.now,
                           heartbeat_s=self.heartbeat_s)  # fmt: skip
        # (the store knows how far it applied; the saved mark may say more: no-ops after its last entry)
        node.applied = max(self.applied[i][-1][0] if self.applied[i] else 0, self.states[i].applied)
        self.nodes[i] = node

    def observe(self) -> None:
        if self.lease_s > 0:
            holding = [i for i, n in self.nodes.items() if i not in self.down and n.is_leader and n._holds_lease(self.now)]
            assert len(holding) <= 1, f"two leaders hold a lease at once: {holding} at {self.now:.2f}"
        for i, node in self.nodes.items():
            if node.is_leader:
                assert self.leaders.setdefault(node.epoch, i) == i, f"two leaders in epoch {node.epoch}"
                for seq, data in self.proposed.get(i, []):
                    state = node.state
                    if state.base_seq < seq <= state.committed and state.entry(seq).data == data:
                        assert self.acked.setdefault(seq, data) == data, f"seq {seq} acknowledged twice, differently"
            self.applied[i].extend((e.seq, e.data) for e in node.take_committed())
            if i not in self.down:
                self.compact(i)
        stores = [applied for i, applied in self.applied.items() if not self.states[i].stale]  # (torn: not yet)
        for one in stores:
            for other in stores:
                common = min(len(one), len(other))
                assert one[:common] == other[:common], "two nodes applied different sequences"

    def compact(self, i: int) -> None:
        """What the driver does after each step: save the applied mark, discard what it covers but the tail, and
        write a snapshot when the leader needs one."""
        node = self.nodes[i]
        node.state.applied = node.applied
        if self.tail is not None:
            node.compact(self.tail, self.now)
        if node.wants_snapshot and node.is_leader:
            blob = json.dumps([[seq, data.decode()] for seq, data in self.applied[i]]).encode()
            self.snapshots[i] = (node.applied, blob)
            self.post(i, node.offer_snapshot(node.applied, len(blob), self.now))

    def data(self, i: int) -> list[bytes]:
        return [d for _, d in self.applied[i]]

    def heal(self) -> int:
        """Everyone up, no loss; one node campaigns and replicates until all have applied everything."""
        for i in list(self.down):
            self.restart(i)
        self.lossy = False
        self.queue.clear()
        self.now += 3 * self.lease_s  # (leases, and the restarted nodes' quiet, run out)
        leader = None
        for _ in range(3):  # a refusal names the epoch promised elsewhere: the next campaign goes above it
            for i in self.ids:  # (a node whose log is behind is not granted: the next one tries)
                self.campaign(i)
                self.settle()
                if self.nodes[i].is_leader:
                    leader = i
                    break
            if leader is not None:
                break
        assert leader is not None
        for _ in range(10):  # heartbeats carry the commit index to everyone
            self.now += self.heartbeat_s
            self.tick(leader)
            self.settle()
        return leader


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


def run_schedule(
    seed: int, members: int, steps: int, lease_s: float = 0.0, tail: int | None = None, torn_installs: float = 0.0,
    heartbeat_s: float = 1.0,
) -> Net:
    net = Net([0x10 + i for i in range(members)], rng=random.Random(seed), lossy=True, lease_s=lease_s, tail=tail,
              torn_installs=torn_installs, heartbeat_s=heartbeat_s)  # fmt: skip
    rng = net.rng
    counter = 0
    for _ in range(steps):
        net.now += rng.random() * 0.3
        roll = rng.random()
        alive = [i for i in net.ids if i not in net.down]
        if net.queue and roll < 0.6:
            net.deliver(rng.randrange(len(net.queue)))
        elif roll < 0.7 and alive:
            net.tick(rng.choice(alive))
        elif roll < 0.85 and alive:
            leaders = [i for i in alive if net.nodes[i].is_leader]
            if leaders:
                counter += 1
                net.propose(rng.choice(leaders), b"p%d" % counter)
        elif roll < 0.9 and alive:
            net.campaign(rng.choice(alive))
        elif roll < 0.94 and len(net.down) < members:
            net.crash(rng.choice(net.ids))
        elif net.down:
            net.restart(rng.choice(sorted(net.down)))
    return net


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


# ------------------------------------------------------------ compaction and snapshots


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
