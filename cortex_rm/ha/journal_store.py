"""Where an eligible node keeps its copy of the RM's journal: a SQLite file in its state directory.

Each node keeps its own (``<state_dir>/rm-journal.sqlite``): the journal *is* the
replication, so it is never shared.  ``load`` gives the ``JournalState`` back;
``save`` writes what changed since the last save — the promised epoch, the commit
index, the applied mark, and the log from ``state.dirty_from`` on — in one transaction, and must have
finished before the driver sends what the change answers (a promise or an
acknowledgement on disk is what the other nodes count on).  SQL runs through a
``Runner`` (one thread: saves commit in order); ``save`` copies what it writes on the
caller's thread, so the state may change again while it runs.

**Compaction**: the log's base (``JournalState.base_seq``/``base_epoch``) and the ``stale`` mark
are a row of their own (``journal_base``: a table added beside the first two, so that a journal
written before it opens as one with base 0).  A save whose base moved deletes the entries up to
it, in the same transaction that writes the applied mark and the base; ``load`` reads the entries
after the base only.  Crash orderings:

* the stores apply an entry (their own commit) before the driver raises its applied mark, and the
  base never passes the mark saved with it: whatever a save deleted, the stores had committed
  (a crash before the save only means entries applied again from the older mark, still on disk);
* an install saves the new base with ``stale`` set *before* the stores' tables are replaced, and
  clears it after: a crash in between loads as stale (the node asks for a snapshot again and
  applies nothing meanwhile), never as stores that mix two states.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, Column, Integer, LargeBinary, MetaData, Table, delete, select
from twisted.internet import defer

from cortex_rm.ha.journal import Entry, Epoch, JournalState
from cortex_rm.yarn.blocking import Runner
from cortex_rm.yarn.sql_engine import LazyEngine

_metadata = MetaData()
_entries = Table(
    "journal_entries",
    _metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("epoch_number", BigInteger, nullable=False),
    Column("epoch_node", LargeBinary(20), nullable=False),
    Column("data", LargeBinary, nullable=False),
)
_meta = Table(
    "journal_meta",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # one row, id 1
    Column("promised_number", BigInteger, nullable=False),
    Column("promised_node", LargeBinary(20), nullable=False),
    Column("committed", BigInteger, nullable=False),
    Column("applied", BigInteger, nullable=False),
)

_base = Table(
    "journal_base",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # one row, id 1 (none: base 0)
    Column("seq", BigInteger, nullable=False),
    Column("epoch_number", BigInteger, nullable=False),
    Column("epoch_node", LargeBinary(20), nullable=False),
    Column("stale", Boolean, nullable=False),
)


def _node(ring_id: int) -> bytes:
    return ring_id.to_bytes(20, "big")


@dataclass(frozen=True)
class _Save:
    promised: Epoch
    committed: int
    applied: int
    dirty_from: int | None
    entries: tuple[Entry, ...]
    base: tuple[int, Epoch, bool] | None  # (seq, epoch, stale) when changed since the last save


class JournalStore:
    """See the module docstring."""

    def __init__(self, url: str, run: Runner) -> None:
        self.url = url
        self._run = run
        self._engine = LazyEngine(url, _metadata, _durable_sqlite)
        self.saves = 0
        self._base: tuple[int, Epoch, bool] = (0, (0, 0), False)  # as last loaded or saved

    def load(self) -> defer.Deferred[JournalState]:
        def load_sync() -> JournalState:
            with self._engine.get().connect() as conn:
                meta = conn.execute(select(_meta).where(_meta.c.id == 1)).first()
                base = conn.execute(select(_base).where(_base.c.id == 1)).first()
                seq0 = base.seq if base is not None else 0
                rows = conn.execute(select(_entries).where(_entries.c.seq > seq0).order_by(_entries.c.seq)).all()
            log = [Entry((r.epoch_number, int.from_bytes(r.epoch_node, "big")), r.seq, bytes(r.data)) for r in rows]
            for i, entry in enumerate(log, seq0 + 1):
                if entry.seq != i:
                    raise ValueError(f"{self.url}: the journal has no entry {i} (next is {entry.seq}): it is damaged")
            epoch0 = (base.epoch_number, int.from_bytes(base.epoch_node, "big")) if base is not None else (0, 0)
            stale = bool(base.stale) if base is not None else False
            self._base = (seq0, epoch0, stale)
            state = JournalState(log=log, base_seq=seq0, base_epoch=epoch0, stale=stale)
            if meta is None:
                return state
            state.promised = (meta.promised_number, int.from_bytes(meta.promised_node, "big"))
            state.committed = max(seq0, min(meta.committed, state.last_seq))
            state.applied = max(seq0, min(meta.applied, state.committed))
            return state

        return self._run(load_sync)

    def save(self, state: JournalState) -> defer.Deferred[None]:
        """Write what changed in ``state`` (see the module docstring); ``state.dirty_from`` is reset."""
        start = None if state.dirty_from is None else max(state.dirty_from, state.base_seq + 1)
        entries = tuple(state.entries_after(start - 1)) if start is not None else ()
        base = (state.base_seq, state.base_epoch, state.stale)
        changed = base if base != self._base else None
        save = _Save(state.promised, state.committed, state.applied, start, entries, changed)
        self._base = base
        state.dirty_from = None
        self.saves += 1
        return self._run(lambda: self._save_sync(save))

    def _save_sync(self, save: _Save) -> None:
        meta = {"promised_number": save.promised[0], "promised_node": _node(save.promised[1]),
                "committed": save.committed, "applied": save.applied}  # fmt: skip
        with self._engine.get().begin() as conn:
            if conn.execute(_meta.update().where(_meta.c.id == 1).values(**meta)).rowcount == 0:
                conn.execute(_meta.insert().values(id=1, **meta))
            if save.base is not None:
                seq, epoch, stale = save.base
                row = {"seq": seq, "epoch_number": epoch[0], "epoch_node": _node(epoch[1]), "stale": stale}
                if conn.execute(_base.update().where(_base.c.id == 1).values(**row)).rowcount == 0:
                    conn.execute(_base.insert().values(id=1, **row))
                conn.execute(delete(_entries).where(_entries.c.seq <= seq))
            if save.dirty_from is not None:
                conn.execute(delete(_entries).where(_entries.c.seq >= save.dirty_from))
                if save.entries:
                    rows = [{"seq": e.seq, "epoch_number": e.epoch[0], "epoch_node": _node(e.epoch[1]), "data": e.data}
                            for e in save.entries]  # fmt: skip
                    conn.execute(_entries.insert(), rows)

    def close(self) -> None:
        self._engine.dispose()


def _durable_sqlite(connection: object, _record: object) -> None:
    """A commit is on disk when it returns (WAL, synchronous FULL): what a promise or an acknowledgement needs."""
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
