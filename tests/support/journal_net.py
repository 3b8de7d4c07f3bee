"""The RM journal's core (``ha/journal.py``) on a simulated network, for its unit tests: ``Net`` delivers what the
members send, can lose, repeat and reorder messages and crash nodes (each keeps only what it persisted: its
``JournalState`` and its store), and checks after every step that no two leaders share an epoch (with leases,
that no two hold one at once) and that every node applies one sequence.  With ``tail`` each node compacts
and the leader's snapshots are sent and installed as the driver would; ``run_schedule`` plays a random schedule
of deliveries, ticks, proposals, campaigns, crashes and restarts."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace

from cortex_rm.ha import journal
from cortex_rm.ha.journal import Epoch, JournalNode, JournalState, Message, Send, Snapshot

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
            holding = [i for i, n in self.nodes.items()
                       if i not in self.down and n.is_leader and n._holds_lease(self.now)]  # fmt: skip
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
