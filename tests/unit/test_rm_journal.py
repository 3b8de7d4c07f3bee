"""The RM's journal driver (``roles/rm_journal.py``) on three eligible nodes: real SQLite journal files, the
real codec, a fake clock and an in-memory bus for the ring's Direct messages.  The ring's designated node
leads after the election timeout, proposals fire once committed and applied everywhere they must be, a
leader that dies is replaced (by the designated node among the living), a restarted node keeps its
promise and its log from disk, and what a non-eligible member sends is dropped."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.dht.peer import Peer
from cortex_rm.ha.election import designated
from cortex_rm.ha.journal import Entry, NotLeader, Prepare
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.internal.journal_codec import encode_journal
from cortex_rm.roles.rm_journal import RmJournal
from tests.support.journal_bus import Bus, Links
from tests.support.rm_core import result_of

IDS = [0x1111 << 140, 0x5555 << 140, 0x9999 << 140]


class Cluster:
    def __init__(self, tmp: Path, preference: tuple[int, ...] = (), stagger: float = 0.0) -> None:
        self.tmp, self.clock, self.bus, self.preference = tmp, Clock(), Bus(), preference
        self.nodes: dict[int, RmJournal] = {}
        self.applied: dict[int, list[bytes]] = {i: [] for i in IDS}
        self.leading: dict[int, list[object]] = {i: [] for i in IDS}
        for i in IDS:
            self.start(i)
            self.clock.advance(stagger)  # (each node's ticks in a phase of its own)

    def start(self, i: int) -> None:
        def apply(entry: Entry) -> defer.Deferred[None]:
            self.applied[i].append(entry.data)
            return defer.succeed(None)

        store = JournalStore(f"sqlite:///{self.tmp / f'{i:x}.sqlite'}", synchronous_runner)
        node = RmJournal(
            Links(self.bus, Peer(i, "h:1")), frozenset(IDS), store, self.clock, apply, rng=random.Random(i),
            on_leading=lambda epoch: self.leading[i].append(epoch), on_following=lambda: self.leading[i].append("lost"),
            preference=self.preference,
        )  # fmt: skip
        self.bus.up.add(i)
        result_of(defer.ensureDeferred(node.start()))
        self.nodes[i] = node

    def kill(self, i: int) -> None:
        self.nodes.pop(i).stop()
        self.bus.up.discard(i)
        self.bus.handlers.pop(i, None)

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)
            self.bus.flush()

    def leader(self) -> int:
        leaders = [i for i, n in self.nodes.items() if n.node is not None and n.node.is_leader]
        assert len(leaders) == 1, leaders
        return leaders[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_the_designated_node_leads_and_a_proposal_fires_once_applied(cluster: Cluster) -> None:
    cluster.run(4)
    assert all(n.leader is None for n in cluster.nodes.values())  # before the election timeout (5 s)
    cluster.run(3)
    first = designated(frozenset(IDS), IDS)
    assert cluster.leader() == first and len(cluster.leading[first]) == 1
    d = cluster.nodes[first].propose(b"app-1")
    cluster.bus.flush()
    assert result_of(d) == 2 and cluster.applied[first] == [b"app-1"]  # (1: the leader's no-op)
    cluster.run(2)  # heartbeats carry the commit index
    assert all(cluster.applied[i] == [b"app-1"] for i in IDS)


def test_a_follower_refuses_to_propose_and_names_the_leader(cluster: Cluster) -> None:
    cluster.run(7)
    leader = cluster.leader()
    other = next(i for i in IDS if i != leader)
    with pytest.raises(NotLeader) as refused:
        result_of(cluster.nodes[other].propose(b"x"))
    assert refused.value.leader == leader


def test_a_dead_leader_is_replaced_and_nothing_acknowledged_is_lost(cluster: Cluster) -> None:
    cluster.run(7)
    old = cluster.leader()
    for k in range(5):
        d = cluster.nodes[old].propose(b"e%d" % k)
        cluster.bus.flush()
        result_of(d)
    cluster.kill(old)
    cluster.run(20)  # the designated node among the living campaigns after its timeout
    new = cluster.leader()
    assert new != old and new == designated(frozenset(IDS), cluster.bus.up)
    d = cluster.nodes[new].propose(b"after")
    cluster.bus.flush()
    result_of(d)
    assert cluster.applied[new] == [b"e0", b"e1", b"e2", b"e3", b"e4", b"after"]


def test_a_restarted_node_keeps_its_log_and_promise_from_disk(cluster: Cluster) -> None:
    cluster.run(7)
    leader = cluster.leader()
    follower = next(i for i in IDS if i != leader)
    d = cluster.nodes[leader].propose(b"kept")
    cluster.bus.flush()
    result_of(d)
    promised = cluster.nodes[follower].node.state.promised  # type: ignore[union-attr]
    cluster.kill(follower)
    cluster.start(follower)
    state = cluster.nodes[follower].node.state  # type: ignore[union-attr]
    assert state.promised == promised and [e.data for e in state.log] == [b"", b"kept"]
    cluster.run(2)
    assert set(cluster.applied[follower]) == {b"kept"}  # (maybe twice: its mark is saved with its next step,
    cluster.applied[follower].clear()                  # and applying is idempotent)
    cluster.kill(follower)
    cluster.start(follower)
    cluster.run(2)
    assert cluster.applied[follower] == []  # the mark saved since: nothing applied again


def test_a_leader_cut_off_from_its_majority_stands_down_and_fails_what_it_had_not_committed(cluster: Cluster) -> None:
    cluster.run(7)
    leader = cluster.leader()
    others = [i for i in IDS if i != leader]
    d = cluster.nodes[leader].propose(b"alone")
    cluster.bus.queue.clear()  # lost on the way
    cluster.bus.up = {leader}  # a partition: the leader hears no one (and the others do not hear each other yet)
    cluster.run(7)  # past its lease (the election timeout, 5 s) without a majority's answer
    assert not cluster.nodes[leader].node.is_leader  # type: ignore[union-attr]
    assert cluster.leading[leader][-1] == "lost"
    with pytest.raises(NotLeader):
        result_of(d)
    cluster.bus.up = set(others)
    cluster.run(20)  # the other two elect a leader of a newer epoch
    cluster.bus.up = set(IDS)
    cluster.run(3)
    new = cluster.leader()
    assert new != leader and all(b"alone" not in cluster.applied[i] for i in IDS)


def test_a_write_acknowledged_is_never_anothers_entry_at_the_same_seq(cluster: Cluster) -> None:
    """A partitioned leader's proposals take seqs that the next leader's entries fill: they fail, they are never
    reported done (a proposal is matched to its entry by seq and epoch)."""
    cluster.run(7)
    old = cluster.leader()
    others = [i for i in IDS if i != old]
    cluster.bus.up = {old}
    first, second = cluster.nodes[old].propose(b"x1"), cluster.nodes[old].propose(b"x2")
    cluster.bus.up = set(others)
    cluster.run(20)
    new = cluster.leader()
    z = cluster.nodes[new].propose(b"z")
    cluster.bus.flush()
    result_of(z)
    cluster.bus.up = set(IDS)
    cluster.run(3)
    for d in (first, second):
        with pytest.raises(NotLeader):
            result_of(d)
    assert all(cluster.applied[i][-1:] == [b"z"] and b"x2" not in cluster.applied[i] for i in IDS)


def test_a_non_eligible_senders_messages_are_dropped(cluster: Cluster) -> None:
    target = cluster.nodes[IDS[0]]
    outsider = Peer(0x7777 << 140, "h:9")
    cluster.bus.handlers[IDS[0]](outsider, encode_journal(Prepare((99, outsider.node_id), 0, (0, 0))))
    cluster.bus.handlers[IDS[0]](Peer(IDS[1], "h:1"), b"\x00garbage")
    assert target.dropped == 2 and target.node.state.promised == (0, 0)  # type: ignore[union-attr]


@pytest.mark.expect_logged_errors("applying entry .* failed")
def test_an_entry_whose_apply_fails_is_applied_again_not_skipped(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.run(7)
    leader = cluster.leader()
    follower = next(i for i in IDS if i != leader)
    failing = {b"two"}
    apply = cluster.nodes[follower].apply

    def flaky(entry: Entry) -> defer.Deferred[None]:
        if entry.data in failing:
            failing.clear()
            return defer.fail(OSError("the disk hiccupped"))
        return apply(entry)

    cluster.nodes[follower].apply = flaky
    for data in (b"one", b"two", b"three"):
        d = cluster.nodes[leader].propose(data)
        cluster.bus.flush()
        result_of(d)
    cluster.run(3)
    assert cluster.applied[follower] == [b"one", b"two", b"three"]


def test_a_stopped_journal_fails_proposals_and_drops_waiting_steps_quietly(cluster: Cluster) -> None:
    cluster.run(7)
    leader = cluster.leader()
    journal = cluster.nodes[leader]
    journal._lock.acquire()  # a step under way
    waiting = journal.propose(b"late")
    cluster.bus.handlers[leader](Peer(IDS[0] if IDS[0] != leader else IDS[1], "h:1"), b"\x00")  # (dropped: garbage)
    journal._tick()  # queued behind the lock
    journal.stop()
    journal._lock.release()
    with pytest.raises(NotLeader):
        result_of(waiting)
    assert cluster.leading[leader][-1] == "lost"


def test_the_configured_order_decides_who_leads_and_a_silent_leader_still_in_the_view_is_passed_over(
    tmp_path: Path,
) -> None:
    order = (IDS[2], IDS[0], IDS[1])
    cluster = Cluster(tmp_path, preference=order)
    cluster.run(7)
    assert cluster.leader() == IDS[2]  # listed first, though not the first at or after the RM key
    crashed = cluster.nodes.pop(IDS[2])  # crashed, and the ring has not noticed: still in every live view
    crashed.stop()
    cluster.bus.handlers.pop(IDS[2])
    cluster.run(5 + 1.5)  # one election timeout (and a heartbeat) without the leader: the next listed campaigns
    leaders = [i for i, n in cluster.nodes.items() if n.node is not None and n.node.is_leader]
    assert leaders == [IDS[0]]  # not IDS[1], which waits three timeouts and more


@pytest.mark.parametrize("offset", [0.0, 0.2, 0.45, 0.7, 0.9])
def test_a_leader_cut_off_stands_down_before_another_can_lead(tmp_path: Path, offset: float) -> None:
    """No two nodes lead at once: the leader's lease ends (and it notices, on a tick) before any follower's election
    timeout can, whatever the phase of its ticks against theirs when it is cut off (still in every live view)."""
    cluster = Cluster(tmp_path, stagger=0.3)
    cluster.run(7)
    old = cluster.leader()
    for _ in range(int(offset * 100)):
        cluster.clock.advance(0.01)
    cluster.bus.flush()
    cluster.bus.cut.add(old)
    overlaps, deposed = [], None
    for step in range(3000):  # 30 s in 10 ms steps
        cluster.clock.advance(0.01)
        cluster.bus.flush()
        leading = [i for i, n in cluster.nodes.items() if n._leading]
        if len(leading) > 1:
            overlaps.append((step, leading))
        if old not in leading and deposed is None:
            deposed = step
    assert not overlaps, overlaps
    assert deposed is not None and any(n._leading for i, n in cluster.nodes.items() if i != old)
