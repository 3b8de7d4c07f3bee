"""The journal's SQLite file (``ha/journal_store.py``) with compaction: the base and the stale mark survive a
restart, the entries a base covers are deleted on disk in the save that moved it, only the entries after
the base are loaded, and a crash between an install's two saves loads as a node that needs a snapshot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cortex_rm.allocator.state_store import synchronous_runner
from cortex_rm.ha.journal import Entry, JournalState
from cortex_rm.ha.journal_store import JournalStore
from tests.support.rm_core import result_of

A = 0xA << 150


def store(path: Path) -> JournalStore:
    return JournalStore(f"sqlite:///{path}", synchronous_runner)


def entries_on_disk(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [seq for (seq,) in db.execute("SELECT seq FROM journal_entries ORDER BY seq")]


def written(count: int) -> JournalState:
    state = JournalState(promised=(3, A), log=[Entry((3, A), s, b"e%d" % s) for s in range(1, count + 1)])
    state.changed(1)
    return state


def test_a_save_after_compaction_deletes_what_the_base_covers_with_the_applied_mark(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    one = store(path)
    state = written(10)
    state.committed = 9
    result_of(one.save(state))
    state.applied = 8
    assert state.compact(3) == 5
    result_of(one.save(state))
    assert entries_on_disk(path) == [6, 7, 8, 9, 10]
    one.close()
    loaded = result_of(store(path).load())
    assert (loaded.base_seq, loaded.base_epoch, loaded.applied, loaded.committed) == (5, (3, A), 8, 9)
    assert [e.seq for e in loaded.log] == [6, 7, 8, 9, 10] and loaded.last_seq == 10 and not loaded.stale


def test_entries_written_after_a_base_are_saved_where_they_belong(tmp_path: Path) -> None:
    """The log after the base, changed (a conflicting tail replaced): the save writes from the change on."""
    path = tmp_path / "journal.sqlite"
    one = store(path)
    state = written(6)
    state.committed = state.applied = 4
    state.compact(1)
    result_of(one.save(state))
    state.truncate_from(5)
    state.log.append(Entry((4, A), 5, b"new"))
    state.changed(5)
    result_of(one.save(state))
    loaded = result_of(store(path).load())
    assert [(e.seq, e.data) for e in loaded.log] == [(4, b"e4"), (5, b"new")] and loaded.base_seq == 3


def test_a_crash_between_an_installs_two_saves_loads_as_a_node_that_needs_a_snapshot(tmp_path: Path) -> None:
    """``install`` is saved (base, applied, stale) before the stores are replaced; a crash before the second save
    (stale cleared) loads stale: the node applies nothing until another snapshot."""
    path = tmp_path / "journal.sqlite"
    one = store(path)
    state = written(4)
    state.committed = state.applied = 2
    result_of(one.save(state))
    state.install(40, (7, A))  # (far beyond its log: the log is emptied)
    result_of(one.save(state))
    one.close()  # (the crash: the stores' replacement and the second save never happen)
    loaded = result_of(store(path).load())
    assert loaded.stale and (loaded.base_seq, loaded.base_epoch) == (40, (7, A))
    assert loaded.applied == loaded.committed == 40
    assert loaded.log == [] and entries_on_disk(path) == []
    loaded.stale = False
    again = store(path)
    again.load()  # (what a restarted node does first)
    result_of(again.save(loaded))
    assert not result_of(store(path).load()).stale


def test_an_install_that_agrees_with_the_log_keeps_the_entries_after_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    one = store(path)
    state = written(8)
    state.committed = state.applied = 3
    result_of(one.save(state))
    state.install(5, (3, A))
    state.stale = False
    result_of(one.save(state))
    loaded = result_of(store(path).load())
    assert [e.seq for e in loaded.log] == [6, 7, 8] and entries_on_disk(path) == [6, 7, 8] and loaded.applied == 5


def test_a_journal_with_a_gap_after_its_base_is_refused_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    one = store(path)
    state = written(6)
    state.committed = state.applied = 2
    state.compact(0)
    result_of(one.save(state))
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM journal_entries WHERE seq = 4")
    with pytest.raises(ValueError, match="no entry 4"):
        result_of(store(path).load())
