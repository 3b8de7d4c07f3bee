"""Where the NameNode keeps the namespace so that it survives a restart: one row per inode,
one row per block of a file, written one ``Changes`` per transaction.

Two implementations share one contract (``tests/unit/test_fs_namespace_store.py``
runs the same suite on both): ``MemoryNamespaceStore`` and ``SqlNamespaceStore``
over SQLAlchemy (the RM's state-store URL: SQLite by default, PostgreSQL at
scale).  As the RM's state store, SQL work runs through a ``Runner`` (one thread,
so transactions commit in the order operations were applied in memory).  Which
node holds which replica is not stored: the nodes' block reports rebuild it.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, MetaData, String, Table, create_engine, delete, select
from sqlalchemy.engine import Connection, Engine
from twisted.internet import defer

from cortex_rm.fs.model import BlockRef, Changes, FileKind, InodeRecord
from cortex_rm.yarn.blocking import Runner


class NamespaceStore(Protocol):
    def load(self) -> defer.Deferred[list[InodeRecord]]:
        """Fires with every stored inode (empty at the very first start)."""

    def apply(self, changes: Changes) -> defer.Deferred[None]:
        """Persist one operation's changes atomically (all of them or none)."""

    def close(self) -> None:
        """Release connections."""


class MemoryNamespaceStore:
    """An in-process store with the same contract, for unit tests."""

    def __init__(self) -> None:
        self.inodes: dict[int, InodeRecord] = {}
        self.transactions = 0

    def load(self) -> defer.Deferred[list[InodeRecord]]:
        return defer.succeed(list(self.inodes.values()))

    def apply(self, changes: Changes) -> defer.Deferred[None]:
        for inode_id in changes.removed:
            self.inodes.pop(inode_id, None)
        for record in changes.upserted:
            self.inodes[record.inode_id] = record
        self.transactions += 1
        return defer.succeed(None)

    def close(self) -> None:
        pass


_metadata = MetaData()
_inodes = Table(
    "fs_inodes",
    _metadata,
    Column("inode_id", BigInteger, primary_key=True),
    Column("parent_id", BigInteger, nullable=False, index=True),
    Column("name", String(1024), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("owner", String(256), nullable=False),
    Column("group_name", String(256), nullable=False),
    Column("permission", Integer, nullable=False),
    Column("modification_time", BigInteger, nullable=False),
    Column("access_time", BigInteger, nullable=False),
    Column("replication", Integer, nullable=False),
    Column("block_size", BigInteger, nullable=False),
)
_blocks = Table(
    "fs_blocks",
    _metadata,
    Column("inode_id", BigInteger, ForeignKey("fs_inodes.inode_id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("block_id", String(40), nullable=False, unique=True),
    Column("length", BigInteger, nullable=False),
    Column("checksum", String(32), nullable=False),
)


class SqlNamespaceStore:
    """The namespace in two SQL tables (``fs_inodes``, ``fs_blocks``), through SQLAlchemy."""

    def __init__(self, url: str, run: Runner) -> None:
        self._engine: Engine = create_engine(url)
        self._run = run
        _metadata.create_all(self._engine)

    def load(self) -> defer.Deferred[list[InodeRecord]]:
        return self._run(self._load)

    def _load(self) -> list[InodeRecord]:
        with self._engine.connect() as db:
            blocks: dict[int, list[BlockRef]] = {}
            for row in db.execute(select(_blocks).order_by(_blocks.c.inode_id, _blocks.c.seq)):
                blocks.setdefault(row.inode_id, []).append(BlockRef(row.block_id, row.length, row.checksum))
            return [
                InodeRecord(
                    inode_id=row.inode_id,
                    parent_id=row.parent_id,
                    name=row.name,
                    kind=FileKind(row.kind),
                    owner=row.owner,
                    group=row.group_name,
                    permission=row.permission,
                    modification_time=row.modification_time,
                    access_time=row.access_time,
                    replication=row.replication,
                    block_size=row.block_size,
                    blocks=tuple(blocks.get(row.inode_id, ())),
                )
                for row in db.execute(select(_inodes))
            ]

    def apply(self, changes: Changes) -> defer.Deferred[None]:
        if changes.empty:
            return defer.succeed(None)
        return self._run(lambda: self._apply(changes))

    def _apply(self, changes: Changes) -> None:
        with self._engine.begin() as db:
            removed = list(changes.removed) + [r.inode_id for r in changes.upserted]
            for start in range(0, len(removed), 500):  # bounded IN lists
                chunk = removed[start : start + 500]
                db.execute(delete(_blocks).where(_blocks.c.inode_id.in_(chunk)))
                db.execute(delete(_inodes).where(_inodes.c.inode_id.in_(chunk)))
            self._insert(db, changes.upserted)

    @staticmethod
    def _insert(db: Connection, records: tuple[InodeRecord, ...]) -> None:
        if not records:
            return
        db.execute(
            _inodes.insert(),
            [
                {
                    "inode_id": r.inode_id,
                    "parent_id": r.parent_id,
                    "name": r.name,
                    "kind": r.kind.value,
                    "owner": r.owner,
                    "group_name": r.group,
                    "permission": r.permission,
                    "modification_time": r.modification_time,
                    "access_time": r.access_time,
                    "replication": r.replication,
                    "block_size": r.block_size,
                }
                for r in records
            ],
        )
        rows = [
            {"inode_id": r.inode_id, "seq": seq, "block_id": b.block_id, "length": b.length, "checksum": b.checksum}
            for r in records
            for seq, b in enumerate(r.blocks)
        ]
        if rows:
            db.execute(_blocks.insert(), rows)

    def close(self) -> None:
        self._engine.dispose()
