"""One contract for every NamespaceStore: the memory store, the SQL store (SQLite file), and the SQL
store through the RM's journal (``ha/replicated_fs.py``, a journal of one eligible node).

Each test applies ``Changes`` and reads back what an RM restarted on the same
state would load (for SQL: a new store object on the same file; through the
journal: that too, and the journal restarted from its own file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.fs.model import BlockRef, Changes, FileKind, InodeRecord
from cortex_rm.fs.namespace_store import MemoryNamespaceStore, NamespaceStore, SqlNamespaceStore
from cortex_rm.ha import replicated_fs
from cortex_rm.ha.journal_applier import journal_applier
from cortex_rm.roles.rm_journal import RmJournal
from tests.support.rm_core import result_of
from tests.support.single_journal import leading_journal

ROOT = InodeRecord(1, 0, "", FileKind.DIRECTORY, "root", "supergroup", 0o755, 1000)


def _file(inode_id: int, name: str, *blocks: BlockRef, parent: int = 1) -> InodeRecord:
    return InodeRecord(
        inode_id, parent, name, FileKind.FILE, "alice", "supergroup", 0o644, 2000, 2001, 3, 128 << 20, tuple(blocks)
    )


def _block(n: int, length: int = 10) -> BlockRef:
    return BlockRef(f"blk_{n:032x}", length, f"{n:032x}")


@dataclass
class StoreUnderTest:
    store: NamespaceStore
    reopen: Callable[[], NamespaceStore]

    def reloaded(self) -> dict[int, InodeRecord]:
        return {r.inode_id: r for r in result_of(self.reopen().load())}


@pytest.fixture(params=["memory", "sql", "replicated"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    opened: list[NamespaceStore] = []
    journals: list[RmJournal] = []
    url = f"sqlite:///{tmp_path / 'rm-state.sqlite'}"

    def open_sql() -> NamespaceStore:
        store = SqlNamespaceStore(url, synchronous_runner)
        opened.append(store)
        return store

    def open_replicated() -> NamespaceStore:
        for journal in journals:  # (the RM before stops)
            journal.stop()
        local = open_sql()
        apply = journal_applier({replicated_fs.STORE: replicated_fs.namespace_applier(local)})
        journals.append(leading_journal(tmp_path / "journal.sqlite", apply))
        return replicated_fs.ReplicatedNamespaceStore(local, journals[-1])

    if request.param == "memory":
        memory = MemoryNamespaceStore()
        yield StoreUnderTest(memory, lambda: memory)
    elif request.param == "sql":
        yield StoreUnderTest(open_sql(), open_sql)
    else:
        yield StoreUnderTest(open_replicated(), open_replicated)
    for journal in journals:
        journal.stop()
        journal.store.close()
    for store in opened:
        store.close()


def test_a_fresh_store_loads_nothing(stores: StoreUnderTest) -> None:
    """At the very first start there is no inode, not even the root."""
    assert stores.reloaded() == {}


def test_inodes_and_their_blocks_survive_a_restart_in_order(stores: StoreUnderTest) -> None:
    """Directories and files come back field for field, each file's blocks in file order."""
    blocks = (_block(3, 5), _block(1, 7), _block(2, 0))
    result_of(stores.store.apply(Changes(upserted=(ROOT, _file(2, "f", *blocks)))))
    assert stores.reloaded() == {1: ROOT, 2: _file(2, "f", *blocks)}


def test_an_upsert_replaces_the_inode_and_all_its_blocks(stores: StoreUnderTest) -> None:
    """An append or an overwrite rewrites the row and the block list (no stale block rows)."""
    result_of(stores.store.apply(Changes(upserted=(ROOT, _file(2, "f", _block(1))))))
    result_of(stores.store.apply(Changes(upserted=(_file(2, "g", _block(4), _block(5)),))))
    assert stores.reloaded()[2] == _file(2, "g", _block(4), _block(5))


def test_removed_inodes_and_their_blocks_are_gone(stores: StoreUnderTest) -> None:
    """A delete removes the rows; the block id may then be used by another file."""
    result_of(stores.store.apply(Changes(upserted=(ROOT, _file(2, "f", _block(1)), _file(3, "g")))))
    result_of(stores.store.apply(Changes(removed=(2,), freed_blocks=(_block(1),))))
    result_of(stores.store.apply(Changes(upserted=(_file(4, "h", _block(1)),))))
    assert set(stores.reloaded()) == {1, 3, 4}


def test_many_removals_in_one_change(stores: StoreUnderTest) -> None:
    """A recursive delete of thousands of inodes is one change (the SQL store bounds its IN lists)."""
    files = tuple(_file(i, f"f{i}", _block(i)) for i in range(2, 1300))
    result_of(stores.store.apply(Changes(upserted=(ROOT, *files))))
    result_of(stores.store.apply(Changes(removed=tuple(f.inode_id for f in files))))
    assert stores.reloaded() == {1: ROOT}
