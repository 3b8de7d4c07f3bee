"""A node's stores as a journal snapshot (``ha/store_snapshot.py``) over the real stores' tables
(``roles/rm_stores.snapshot_databases``), on SQLite files: a dump loaded elsewhere gives the same rows (and
the same file again), replacing whatever was there; a damaged or foreign file is refused before a table
is touched; rows come in bounded batches; chunks written at their offsets make the file again."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.ha import store_snapshot
from cortex_rm.ha.store_snapshot import BadSnapshot, StoreSnapshots
from cortex_rm.roles import rm_stores
from cortex_rm.roles.rm_stores import snapshot_databases
from tests.support.rm_core import result_of


def databases(tmp: Path, name: str) -> list[tuple[str, MetaData]]:
    """A node's two databases: the stores', and the ledger's copy on a URL of its own."""
    return snapshot_databases(f"sqlite:///{tmp / f'{name}-state.sqlite'}", f"sqlite:///{tmp / f'{name}-ledger.sqlite'}")


def value(column: Any, i: int) -> Any:
    kind = column.type.python_type
    if column.nullable and i % 5 == 0:
        return None
    values = {int: i * 7 - 3, str: f"s{i}-\u00e9", bytes: bytes([i % 256]) * (i % 9), bool: i % 2 == 0, float: i / 3}
    return values[kind]


def fill(dbs: list[tuple[str, MetaData]], rows: int, salt: int = 0) -> None:
    for url, metadata in dbs:
        engine = create_engine(url)
        metadata.create_all(engine)
        with engine.begin() as conn:
            for table in metadata.sorted_tables:
                if rows:
                    batch = [{c.name: value(c, i + salt) for c in table.columns} for i in range(rows)]
                    conn.execute(table.insert(), batch)
        engine.dispose()


def content(dbs: list[tuple[str, MetaData]]) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    for url, metadata in dbs:
        engine = create_engine(url)
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                found[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
        engine.dispose()
    return found


def test_a_dump_loaded_on_another_node_gives_the_same_rows_and_replaces_what_was_there(tmp_path: Path) -> None:
    leader, follower = databases(tmp_path, "a"), databases(tmp_path, "b")
    fill(leader, 30)
    fill(follower, 12, salt=1000)  # (what the follower held: gone once the snapshot is in)
    size = store_snapshot.dump(leader, tmp_path / "a.snap")
    assert size == (tmp_path / "a.snap").stat().st_size
    loaded = store_snapshot.load(follower, tmp_path / "a.snap")
    want = content(leader)
    assert loaded == sum(len(rows) for rows in want.values()) and content(follower) == want
    assert len(want) == 10 and all(len(rows) == 30 for rows in want.values())  # (every store's tables)
    store_snapshot.dump(follower, tmp_path / "b.snap")
    assert (tmp_path / "a.snap").read_bytes() == (tmp_path / "b.snap").read_bytes()  # (equal stores, equal files)


def test_empty_stores_make_a_snapshot_that_empties_the_receivers(tmp_path: Path) -> None:
    leader, follower = databases(tmp_path, "a"), databases(tmp_path, "b")
    fill(follower, 5)
    store_snapshot.dump(leader, tmp_path / "a.snap")
    assert store_snapshot.load(follower, tmp_path / "a.snap") == 0
    assert all(rows == [] for rows in content(follower).values())


def damaged(data: bytes) -> list[bytes]:
    header = len(store_snapshot.MAGIC)
    return [
        data[:-3],  # truncated
        data + b"\x00",  # something after its end
        b"CRSNAP\x00\x02" + data[header:],  # another format
        data[: header + 4] + b"X" + data[header + 5 :],  # an unknown record
        data.replace(b"rm_applications", b"rm_applicationz", 1),  # another schema
        data.replace(b"S\x00\x00\x00\x05s1-", b"I\x00\x00\x00\x05s1-", 1),  # a value of another type
    ]


def test_a_damaged_or_foreign_snapshot_is_refused_before_a_table_is_touched(tmp_path: Path) -> None:
    leader, follower = databases(tmp_path, "a"), databases(tmp_path, "b")
    fill(leader, 3)
    fill(follower, 2, salt=50)
    store_snapshot.dump(leader, tmp_path / "a.snap")
    before = content(follower)
    good = (tmp_path / "a.snap").read_bytes()
    for bad in damaged(good):
        assert bad != good
        (tmp_path / "bad.snap").write_bytes(bad)
        with pytest.raises(BadSnapshot):
            store_snapshot.load(follower, tmp_path / "bad.snap")
        assert content(follower) == before


def test_a_snapshot_of_one_layout_is_refused_by_a_node_of_another(tmp_path: Path) -> None:
    """A node whose ledger is beside its stores has one database: a two-database snapshot is not its own."""
    leader = databases(tmp_path, "a")
    store_snapshot.dump(leader, tmp_path / "a.snap")
    one = snapshot_databases(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with pytest.raises(BadSnapshot, match="database"):
        store_snapshot.load(one, tmp_path / "a.snap")


def test_every_store_sql_stores_opens_is_in_the_snapshots(tmp_path: Path) -> None:
    """Each of ``RmStores``' fields is opened from the one list the snapshot's databases are made from, and with
    a ledger URL of its own the ledger's tables (and only they) are in the second database."""
    assert list(rm_stores._SQL_STORES) == [f.name for f in dataclasses.fields(rm_stores.RmStores)]
    tables = {name: {t.name for metadata in store.tables for t in metadata.sorted_tables}
              for name, store in rm_stores._SQL_STORES.items()}  # fmt: skip
    stores, ledger = databases(tmp_path, "a")
    assert set(stores[1].tables) == tables["state"] | tables["namespace"] | tables["registry"]
    assert set(ledger[1].tables) == tables["ledger"] and tables["ledger"]
    (one_url, one), = snapshot_databases(f"sqlite:///{tmp_path / 'c.sqlite'}")
    assert set(one.tables) == set().union(*tables.values()) and one_url.endswith("c.sqlite")


def test_rows_are_read_in_bounded_batches(tmp_path: Path) -> None:
    leader = databases(tmp_path, "a")
    fill(leader, 1200)
    store_snapshot.dump(leader, tmp_path / "a.snap")
    with open(tmp_path / "a.snap", "rb") as stream:
        batches = list(store_snapshot.read(stream, leader))
    assert max(len(rows) for _, _, rows, _ in batches) <= 500
    assert sum(len(rows) for _, _, rows, _ in batches) == 12_000 and sum(last for *_, last in batches) == 10


def test_chunks_written_at_their_offsets_make_the_file_and_install_it(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    leader = StoreSnapshots(databases(tmp_path / "a", "n"), tmp_path / "a", synchronous_runner)
    follower = StoreSnapshots(databases(tmp_path / "b", "n"), tmp_path / "b", synchronous_runner)
    fill(leader.databases, 40)
    size = result_of(leader.dump())
    result_of(follower.write_chunk(0, b"an earlier install's start"))
    for offset in range(0, size, 1000):
        result_of(follower.write_chunk(offset, result_of(leader.read_chunk(offset, 1000))))
    assert follower.received.read_bytes() == leader.own.read_bytes()
    assert result_of(follower.install()) == 400 and content(follower.databases) == content(leader.databases)
    assert not follower.received.exists()  # (installed: its disk holds the stores only)


def test_a_value_a_snapshot_cannot_hold_is_an_error_when_dumping() -> None:
    with pytest.raises(TypeError, match="no dict"):
        store_snapshot._value({})
    out = io.BytesIO()
    with pytest.raises(ValueError, match="more than a snapshot record holds"):
        store_snapshot._record(out, b"x" * (store_snapshot.MAX_RECORD_BYTES + 1))
