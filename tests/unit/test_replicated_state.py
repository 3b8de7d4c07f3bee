"""The RM's state store through the journal (``ha/replicated_state.py``) on three eligible nodes, each with
its own real SQLite state store and journal file, a fake clock and the in-memory ring bus: what the leader's
RM writes is acknowledged once a majority holds it, every node's copy ends the same, and after the leader
dies the new leader loads everything that had been acknowledged; an operation this version does not know
is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cortex_rm.allocator.state_store import SqlStateStore, StoredState, synchronous_runner
from cortex_rm.ha.replicated_state import STORE, UnknownOperation, decode_operation, encode_operation, state_applier
from tests.support.journal_nodes import IDS, Nodes
from tests.support.rm_core import result_of

def loaded(store: Any) -> StoredState:
    state: StoredState = result_of(store.load())
    return state


def test_the_leaders_writes_reach_every_copy_and_survive_its_death(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path)
    nodes.run(7)
    first = nodes.leader()
    rm = nodes.state_of(first)
    nodes.write(rm.save_cluster_timestamp(1_700_000_000_000))
    nodes.write(rm.save_master_key("amrm", 3, b"\x00secret\xff"))
    for n in range(1, 4):
        nodes.write(rm.save_application({"app_id": f"application_1_000{n}", "state": "RUNNING"}, b"ctx%d" % n))
        nodes.write(rm.save_app_id_high_water(n))
    nodes.write(rm.remove_application("application_1_0002"))
    nodes.write(rm.save_delegation_token(7, {"owner": "alice"}))
    nodes.write(rm.save_epoch(4))
    nodes.run(2)
    states = [loaded(nodes.copies[i].state) for i in IDS]
    assert all(s == states[0] for s in states)
    assert states[0].master_keys == {"amrm": (3, b"\x00secret\xff")}
    assert states[0].epoch == 4  # a new active's containers never reuse an id
    assert [doc["app_id"] for doc, _ in states[0].applications] == ["application_1_0001", "application_1_0003"]
    nodes.kill(first)
    nodes.run(20)
    second = nodes.leader()
    assert second != first
    after = loaded(nodes.state_of(second))
    assert after == states[0]  # what the old leader acknowledged, the new one loads
    nodes.write(nodes.state_of(second).save_application({"app_id": "application_2_0001", "state": "NEW"}, b"c"))
    assert len(loaded(nodes.copies[second].state).applications) == 3


def test_a_standby_cannot_write_the_state(tmp_path: Path) -> None:
    nodes = Nodes(tmp_path)
    nodes.run(7)
    standby = next(i for i in IDS if i != nodes.leader())
    with pytest.raises(Exception, match="does not lead"):
        result_of(nodes.state_of(standby).save_app_id_high_water(9))
    assert loaded(nodes.copies[standby].state).app_id_high_water == 0


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
