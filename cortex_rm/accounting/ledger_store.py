"""Where the ledger's rows live: its entries, the stored subtree hashes and the signed tree heads.

Two implementations of one blocking contract (``tests/unit/test_ledger_store.py``
runs the same suite on memory, SQLite and a real PostgreSQL server):
``MemoryLedgerStore`` and ``SqlLedgerStore`` over SQLAlchemy Core, SQLite by default
(``sqlite:///path``), PostgreSQL by URL (``postgresql+psycopg://...``).  Every method
blocks: ``ledger.Ledger`` calls them through a ``Runner`` (one writer thread), never
on the reactor.

Tables (all ``ledger_``):

=================  ============================================================
``entries``        ``idx`` (0, 1, ...), ``kind``, ``payload``, ``leaf_hash``
``nodes``          ``level`` (4, 8, ...), ``idx``, ``hash``: complete subtrees of
                   the stored levels (``merkle_tiles.py``)
``tree_heads``     every signed tree head made or accepted, encoded
                   (``tree_heads.encode_tree_head``), with its size
=================  ============================================================

The store does no hashing and trusts nothing it reads: ``ledger.MerkleLog.verify_all``
recomputes everything from the entries.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from cortex_rm.accounting.ledger_errors import BadLedgerRequest, LedgerConflict
from cortex_rm.accounting.merkle import Subtree, leaf_hash
from cortex_rm.yarn.sql_engine import LazyEngine

MAX_KIND_CHARS = 32
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""An entry's payload at most: a membership snapshot of 100,000 members (2 MB) or a payout statement of
~150,000 nodes fits; an attestation batch is far smaller (``ledger_office.MAX_BATCH_BYTES``)."""
_KIND = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class LedgerEntry:
    """One record of the log: a ``kind`` tag (e.g. ``attestation``) and opaque payload bytes.

    The leaf hashed into the tree is ``len(kind) || kind || payload`` (one length
    byte, the ASCII kind), so the kind is covered by the tree as much as the payload.
    """

    kind: str
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            raise BadLedgerRequest(f"entry kind {self.kind!r}: 1-32 of a-z 0-9 _ . - (starting with a letter or digit)")
        if not isinstance(self.payload, bytes) or len(self.payload) > MAX_PAYLOAD_BYTES:
            raise BadLedgerRequest(f"an entry payload is bytes of at most {MAX_PAYLOAD_BYTES}")

    def leaf_data(self) -> bytes:
        """The bytes of the Merkle leaf (see the class doc)."""
        return bytes([len(self.kind)]) + self.kind.encode("ascii") + self.payload

    def leaf_hash(self) -> bytes:
        """RFC 6962's hash of this entry's leaf."""
        return leaf_hash(self.leaf_data())


@dataclass(frozen=True)
class StoredEntry:
    """A row of the entries table as read back: not trusted (``verify_all`` checks it)."""

    index: int
    kind: str
    payload: bytes
    leaf_hash: bytes

    def entry(self) -> LedgerEntry:
        """The entry (raises ``BadLedgerRequest`` if the row was edited into something malformed)."""
        return LedgerEntry(self.kind, self.payload)


class LedgerStore(Protocol):
    """The blocking storage contract the ledger is written against."""

    def size(self) -> int:
        """Number of entries: one more than the largest index (0 when empty)."""

    def append(
        self, first_index: int, entries: Sequence[tuple[LedgerEntry, bytes]], nodes: Sequence[tuple[Subtree, bytes]]
    ) -> None:
        """Write (entry, leaf hash) pairs at ``first_index``... and completed subtrees, all or nothing.

        Raises ``LedgerConflict`` (writing nothing) if the log does not have exactly
        ``first_index`` entries.
        """

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """The entries with ``start <= index < end``, in index order."""

    def stored_hashes(self, wanted: Collection[Subtree]) -> dict[Subtree, bytes]:
        """Leaf hashes (level 0) and stored subtree hashes; the ones not stored are left out."""

    def nodes(self, level: int, start: int, end: int) -> dict[int, bytes]:
        """Stored subtrees of ``level`` with ``start <= index < end``: index -> hash."""

    def node_count(self) -> int:
        """Number of stored subtree hashes (levels >= 1)."""

    def index_of(self, leaf_hash: bytes) -> int | None:
        """The first index whose leaf hash is ``leaf_hash``, if any."""

    def add_tree_head(self, size: int, encoded: bytes) -> None:
        """Keep a signed tree head (encoded); the same bytes twice are kept once."""

    def tree_heads(self) -> list[tuple[int, bytes]]:
        """Every kept head as (size, encoded), by size, then in the order they were kept."""

    def close(self) -> None:
        """Release connections."""


class MemoryLedgerStore:
    """The store in lists and dicts: for unit tests and nodes that keep no file."""

    def __init__(self) -> None:
        self.rows: list[StoredEntry] = []
        self.node_rows: dict[Subtree, bytes] = {}
        self.head_rows: list[tuple[int, bytes]] = []

    def size(self) -> int:
        return len(self.rows)

    def append(
        self, first_index: int, entries: Sequence[tuple[LedgerEntry, bytes]], nodes: Sequence[tuple[Subtree, bytes]]
    ) -> None:
        if first_index != len(self.rows):
            raise LedgerConflict(f"append at {first_index} to a log of {len(self.rows)} entries")
        if any(s in self.node_rows for s, _ in nodes):
            raise LedgerConflict("a subtree hash is already stored")
        for i, (entry, digest) in enumerate(entries):
            self.rows.append(StoredEntry(first_index + i, entry.kind, entry.payload, digest))
        self.node_rows.update(nodes)

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        return list(self.rows[max(start, 0) : max(end, 0)])

    def stored_hashes(self, wanted: Collection[Subtree]) -> dict[Subtree, bytes]:
        out: dict[Subtree, bytes] = {}
        for s in wanted:
            if s.level == 0:
                if 0 <= s.position < len(self.rows):
                    out[s] = self.rows[s.position].leaf_hash
            elif s in self.node_rows:
                out[s] = self.node_rows[s]
        return out

    def nodes(self, level: int, start: int, end: int) -> dict[int, bytes]:
        if end - start > len(self.node_rows):
            return {s.position: h for s, h in self.node_rows.items() if s.level == level and start <= s.position < end}
        found = ((i, self.node_rows.get(Subtree(level, i))) for i in range(start, end))
        return {i: h for i, h in found if h is not None}

    def node_count(self) -> int:
        return len(self.node_rows)

    def index_of(self, leaf_hash: bytes) -> int | None:
        return next((row.index for row in self.rows if row.leaf_hash == leaf_hash), None)

    def add_tree_head(self, size: int, encoded: bytes) -> None:
        if (size, encoded) not in self.head_rows:
            self.head_rows.append((size, encoded))

    def tree_heads(self) -> list[tuple[int, bytes]]:
        return sorted(self.head_rows, key=lambda row: row[0])  # stable: kept order within a size

    def close(self) -> None:
        pass


_metadata = MetaData()
_entries = Table(
    "ledger_entries",
    _metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(MAX_KIND_CHARS), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Index("ledger_entries_by_leaf_hash", "leaf_hash"),
)
_nodes = Table(
    "ledger_nodes",
    _metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)
_tree_heads = Table(
    "ledger_tree_heads",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("size", BigInteger, nullable=False),
    Column("encoded", LargeBinary, nullable=False),
    Index("ledger_tree_heads_by_size", "size"),
)


class SqlLedgerStore:
    """The store over SQLAlchemy Core: any SQLAlchemy URL (tested: SQLite, PostgreSQL with psycopg 3)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = LazyEngine(url, _metadata)

    @staticmethod
    def _size(conn: Connection) -> int:
        last = conn.execute(select(func.max(_entries.c.idx))).scalar_one_or_none()
        return 0 if last is None else int(last) + 1

    def size(self) -> int:
        with self._engine.get().connect() as conn:
            return self._size(conn)

    def append(
        self, first_index: int, entries: Sequence[tuple[LedgerEntry, bytes]], nodes: Sequence[tuple[Subtree, bytes]]
    ) -> None:
        rows = [
            {"idx": first_index + i, "kind": e.kind, "payload": e.payload, "leaf_hash": digest}
            for i, (e, digest) in enumerate(entries)
        ]
        node_rows = [{"level": s.level, "idx": s.position, "hash": digest} for s, digest in nodes]
        try:
            with self._engine.get().begin() as conn:
                size = self._size(conn)
                if size != first_index:
                    raise LedgerConflict(f"append at {first_index} to a log of {size} entries")
                if rows:
                    conn.execute(_entries.insert(), rows)
                if node_rows:
                    conn.execute(_nodes.insert(), node_rows)
        except IntegrityError as e:  # another writer got there first (a second active RM, or a stale one)
            raise LedgerConflict(f"append at {first_index} collided with another writer: {e.orig}") from e

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        query = (
            select(_entries.c.idx, _entries.c.kind, _entries.c.payload, _entries.c.leaf_hash)
            .where(_entries.c.idx >= start, _entries.c.idx < end)
            .order_by(_entries.c.idx)
        )
        with self._engine.get().connect() as conn:
            return [StoredEntry(int(i), k, bytes(p), bytes(h)) for i, k, p, h in conn.execute(query)]

    def stored_hashes(self, wanted: Collection[Subtree]) -> dict[Subtree, bytes]:
        leaves = sorted({s.position for s in wanted if s.level == 0})
        by_level: dict[int, list[int]] = {}
        for s in wanted:
            if s.level > 0:
                by_level.setdefault(s.level, []).append(s.position)
        out: dict[Subtree, bytes] = {}
        with self._engine.get().connect() as conn:
            if leaves:
                query = select(_entries.c.idx, _entries.c.leaf_hash).where(_entries.c.idx.in_(leaves))
                out.update((Subtree(0, int(i)), bytes(h)) for i, h in conn.execute(query))
            if by_level:
                where = or_(*(and_(_nodes.c.level == lv, _nodes.c.idx.in_(ix)) for lv, ix in by_level.items()))
                query = select(_nodes.c.level, _nodes.c.idx, _nodes.c.hash).where(where)
                for row in conn.execute(query):
                    out[Subtree(int(row[0]), int(row[1]))] = bytes(row[2])
        return out

    def nodes(self, level: int, start: int, end: int) -> dict[int, bytes]:
        query = select(_nodes.c.idx, _nodes.c.hash).where(
            _nodes.c.level == level, _nodes.c.idx >= start, _nodes.c.idx < end
        )
        with self._engine.get().connect() as conn:
            return {int(i): bytes(h) for i, h in conn.execute(query)}

    def node_count(self) -> int:
        with self._engine.get().connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_nodes)).scalar_one())

    def index_of(self, leaf_hash: bytes) -> int | None:
        query = select(func.min(_entries.c.idx)).where(_entries.c.leaf_hash == leaf_hash)
        with self._engine.get().connect() as conn:
            found = conn.execute(query).scalar_one_or_none()
        return None if found is None else int(found)

    def add_tree_head(self, size: int, encoded: bytes) -> None:
        with self._engine.get().begin() as conn:
            same = select(_tree_heads.c.id).where(_tree_heads.c.size == size, _tree_heads.c.encoded == encoded)
            if conn.execute(same).first() is None:
                conn.execute(_tree_heads.insert().values(size=size, encoded=encoded))

    def tree_heads(self) -> list[tuple[int, bytes]]:
        query = select(_tree_heads.c.size, _tree_heads.c.encoded).order_by(_tree_heads.c.size, _tree_heads.c.id)
        with self._engine.get().connect() as conn:
            return [(int(s), bytes(e)) for s, e in conn.execute(query)]

    def close(self) -> None:
        self._engine.dispose()
