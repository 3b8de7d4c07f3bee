"""Journal compaction and snapshots through the driver (``roles/rm_journal.py``) on three eligible nodes with their
real stores (``tests/support/journal_nodes.py``): a node whose files were wiped catches up by a snapshot of the
leader's stores, sent in chunks on the snapshot channel, and ends with the same rows; a node killed in the
middle of an install asks for another; every journal stays within its tail however many entries are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from cortex_rm.ha import journal
from cortex_rm.ha.store_snapshot import StoreSnapshots
from cortex_rm.internal.journal_codec import SNAPSHOT_CHANNEL
from cortex_rm.roles.rm_stores import snapshot_databases
from tests.support.journal_nodes import Nodes
from tests.support.rm_core import result_of


def rows_of(nodes: Nodes, i: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of node i's stores, by table."""
    found = {}
    for url, metadata in snapshot_databases(nodes.url(i)):
        engine = create_engine(url)
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                found[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
        engine.dispose()
    return found


def submit(nodes: Nodes, leader: int, first: int, count: int) -> None:
    state = nodes.state_of(leader)
    for n in range(first, first + count):
        document = {"app_id": f"application_1_{n:04d}", "state": "RUNNING", "seq": n}
        nodes.write(state.save_application(document, b"context-%d" % n))


def test_a_wiped_node_catches_up_by_a_snapshot_in_chunks_and_then_by_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "SNAPSHOT_CHUNK_BYTES", 2048)  # (several chunks for a few dozen applications)
    nodes = Nodes(tmp_path, log_tail=10)
    nodes.run(7)
    leader = nodes.leader()
    wiped = next(i for i in nodes.journals if i != leader)
    submit(nodes, leader, 0, 60)
    nodes.wipe(wiped)
    submit(nodes, leader, 60, 60)  # (the other two: a majority)
    assert nodes.journals[leader].node is not None and nodes.journals[leader].node.state.base_seq > 60
    nodes.start(wiped)
    nodes.run(5)
    assert rows_of(nodes, wiped) == rows_of(nodes, leader) and len(rows_of(nodes, leader)["rm_applications"]) == 120
    node = nodes.journals[wiped].node
    assert node is not None and node.state.base_seq > 60 and not node.state.stale
    assert nodes.bus.sent_bytes[SNAPSHOT_CHANNEL] > 3 * 2048
    submit(nodes, leader, 120, 5)  # and Appends go on from the snapshot
    nodes.run(3)
    assert rows_of(nodes, wiped) == rows_of(nodes, leader)


@pytest.mark.expect_logged_errors("installing the snapshot at")
def test_a_node_killed_in_the_middle_of_an_install_asks_for_another_and_applies_nothing_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The install's first save (the base, marked stale) is on disk and the stores are half replaced when the node
    dies: restarted, it applies nothing and does not lead until another snapshot is in."""
    nodes = Nodes(tmp_path, log_tail=0)
    nodes.run(7)
    leader = nodes.leader()
    victim = next(i for i in nodes.journals if i != leader)
    submit(nodes, leader, 0, 20)
    nodes.wipe(victim)
    submit(nodes, leader, 20, 20)
    original = StoreSnapshots.install
    torn: list[int] = []

    def die_halfway(self: StoreSnapshots) -> Any:
        url, metadata = self.databases[0]
        engine = create_engine(url)  # (one table replaced by a few of the snapshot's rows, then the machine goes)
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM rm_applications")
            conn.exec_driver_sql("INSERT INTO rm_applications VALUES ('application_1_0001', 'NEW', '{}', x'00', 1)")
        engine.dispose()
        torn.append(1)
        nodes.kill(victim)
        raise OSError("the machine went down")

    monkeypatch.setattr(StoreSnapshots, "install", die_halfway)
    nodes.start(victim)
    nodes.run(3)
    assert torn and victim not in nodes.journals
    monkeypatch.setattr(StoreSnapshots, "install", original)
    nodes.start(victim)
    node = nodes.journals[victim].node
    assert node is not None and node.state.stale and node.to_apply() == [] and node.campaign(1e9) == []
    nodes.run(3)
    assert not node.state.stale and rows_of(nodes, victim) == rows_of(nodes, leader)


def test_every_journal_stays_within_its_tail_over_ten_thousand_entries(tmp_path: Path) -> None:
    """Ten thousand writes in batches of a hundred: no journal, in memory or on disk, ever holds more than its
    tail, the margin before it compacts again, and the batch not yet applied."""
    tail = 50
    nodes = Nodes(tmp_path, log_tail=tail)
    nodes.run(7)
    leader = nodes.leader()
    state = nodes.state_of(leader)
    longest = 0
    for first in range(0, 10_000, 100):
        writes = [state.save_app_id_high_water(n) for n in range(first, first + 100)]  # (proposed at once)
        nodes.bus.flush()
        for d in writes:
            result_of(d)
        nodes.run(1.1)  # (heartbeats carry the commit index: the followers apply and compact too)
        longest = max(longest, *(len(j.node.state.log) for j in nodes.journals.values() if j.node is not None))
    bound = tail + max(16, tail // 4) + 100 + 2  # (the tail, the margin, a batch not yet applied, two no-ops)
    assert longest <= bound
    assert all(j.node is not None and j.node.state.base_seq > 9_000 for j in nodes.journals.values())
    loaded = result_of(nodes.journals[leader].store.load())  # (on disk as well)
    assert len(loaded.log) <= bound
