"""The RM's state store through the journal (``ha/replicated_state.py``) on three eligible nodes, each with
its own real SQLite state store and journal file, a fake clock and the in-memory ring bus: what the leader's
RM writes is acknowledged once a majority holds it, every node's copy ends the same, and after the leader
dies the new leader loads everything that had been acknowledged; an operation this version does not know
is refused by name."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from cortex_rm.allocator.state_store import SqlStateStore, StoredState, synchronous_runner
from cortex_rm.dht.peer import Peer
from cortex_rm.ha.journal import Entry
from cortex_rm.ha.journal_store import JournalStore
from cortex_rm.ha.replicated_state import (
    STORE, ReplicatedStateStore, UnknownOperation, decode_operation, encode_operation, state_applier,
)  # fmt: skip
from cortex_rm.roles.rm_journal import RmJournal
from tests.support.journal_bus import Bus, Links
from tests.support.rm_core import result_of

IDS = [0x2222 << 140, 0x6666 << 140, 0xAAAA << 140]


class Nodes:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.clock, self.bus = tmp, Clock(), Bus()
        self.journals: dict[int, RmJournal] = {}
        self.locals: dict[int, SqlStateStore] = {}
        for i in IDS:
            self.start(i)

    def start(self, i: int) -> None:
        local = SqlStateStore(f"sqlite:///{self.tmp / f'state-{i:x}.sqlite'}", synchronous_runner)
        apply_op = state_applier(local)

        def apply(entry: Entry) -> defer.Deferred[None]:
            store, op, args = decode_operation(entry.data)
            assert store == STORE
            return apply_op(op, args)

        journal = RmJournal(Links(self.bus, Peer(i, "h:1")), frozenset(IDS),
                            JournalStore(f"sqlite:///{self.tmp / f'journal-{i:x}.sqlite'}", synchronous_runner),
                            self.clock, apply, rng=random.Random(i))  # fmt: skip
        self.bus.up.add(i)
        result_of(defer.ensureDeferred(journal.start()))
        self.journals[i], self.locals[i] = journal, local

    def kill(self, i: int) -> None:
        self.journals.pop(i).stop()
        self.locals.pop(i).close()
        self.bus.up.discard(i)

    def run(self, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)
            self.bus.flush()

    def leader(self) -> int:
        [leader] = [i for i, j in self.journals.items() if j.node is not None and j.node.is_leader]
        return leader

    def store_of(self, i: int) -> ReplicatedStateStore:
        return ReplicatedStateStore(self.locals[i], self.journals[i])

    def write(self, d: defer.Deferred[Any]) -> None:
        self.bus.flush()
        result_of(d)


def loaded(store: Any) -> StoredState:
    state: StoredState = result_of(store.load())
    return state


def test_the_leaders_writes_reach_every_copy_and_survive_its_death(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path)
    nodes.run(7)
    first = nodes.leader()
    rm = nodes.store_of(first)
    nodes.write(rm.save_cluster_timestamp(1_700_000_000_000))
    nodes.write(rm.save_master_key("amrm", 3, b"\x00secret\xff"))
    for n in range(1, 4):
        nodes.write(rm.save_application({"app_id": f"application_1_000{n}", "state": "RUNNING"}, b"ctx%d" % n))
        nodes.write(rm.save_app_id_high_water(n))
    nodes.write(rm.remove_application("application_1_0002"))
    nodes.write(rm.save_delegation_token(7, {"owner": "alice"}))
    nodes.run(2)
    states = [loaded(nodes.locals[i]) for i in IDS]
    assert all(s == states[0] for s in states)
    assert states[0].master_keys == {"amrm": (3, b"\x00secret\xff")}
    assert [doc["app_id"] for doc, _ in states[0].applications] == ["application_1_0001", "application_1_0003"]
    nodes.kill(first)
    nodes.run(20)
    second = nodes.leader()
    assert second != first
    after = loaded(nodes.store_of(second))
    assert after == states[0]  # what the old leader acknowledged, the new one loads
    nodes.write(nodes.store_of(second).save_application({"app_id": "application_2_0001", "state": "NEW"}, b"c"))
    assert len(loaded(nodes.locals[second]).applications) == 3


def test_a_standby_cannot_write_the_state(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path)
    nodes.run(7)
    standby = next(i for i in IDS if i != nodes.leader())
    with pytest.raises(Exception, match="does not lead"):
        result_of(nodes.store_of(standby).save_app_id_high_water(9))
    assert loaded(nodes.locals[standby]).app_id_high_water == 0


def test_operations_round_trip_and_unknown_ones_are_refused_by_name(tmp_path: Path) -> None:
    data = encode_operation(STORE, "save_master_key", ["container", 2, b"\x01\x02"])
    assert decode_operation(data) == (STORE, "save_master_key", ["container", 2, b"\x01\x02"])
    local = SqlStateStore(f"sqlite:///{tmp_path / 's.sqlite'}", synchronous_runner)
    apply = state_applier(local)
    with pytest.raises(UnknownOperation, match="'drop_everything'"):
        apply("drop_everything", [])
    with pytest.raises(UnknownOperation, match="save_master_key.*of 1 arguments"):
        apply("save_master_key", ["x"])
    with pytest.raises(UnknownOperation, match="not JSON"):
        decode_operation(b"{nope")
    local.close()
