"""The parts of a ledger append too large for one journal entry, kept on a node until the last part arrives.

A ledger append is atomic (``accounting/ledger_store.LedgerStore.append``), but a journal entry holds at
most ``ha/journal.MAX_ENTRY_BYTES`` and a ledger entry may hold 4 MB (a membership snapshot of a
large ring, a payout statement).  So the active splits such an append into numbered parts
(``replicated_ledger.py``); every node keeps each committed part here, on disk, and applies the
append once the last part is applied.  On disk, because a node that restarts re-applies the
journal only from its last saved mark: parts applied before the restart must still be here.

Rows are keyed by the append's first index, the SHA-256 of the whole append and the part's
number, so a part applied twice is kept once, and the parts of an append an old active began
and never finished (it lost the lead) never mix with those of the append the next active
makes at the same index: they are dropped once the copy has grown past that index.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, Table, delete, select

from cortex_rm.yarn.sql_engine import LazyEngine


class LedgerParts(Protocol):
    """Staged parts of split appends (blocking, like the ledger's store)."""

    def put(self, first: int, digest: bytes, part: int, data: bytes) -> None:
        """Keep part number ``part`` of the append at ``first`` whose whole bytes hash to ``digest``."""

    def joined(self, first: int, digest: bytes, count: int) -> bytes | None:
        """Parts 0 .. count-1 of that append, joined; None when one is missing."""

    def drop_below(self, size: int) -> None:
        """Forget the parts of appends at an index below ``size`` (applied, or abandoned)."""

    def close(self) -> None:
        """Release connections."""


class MemoryLedgerParts:
    """``LedgerParts`` in a dict (for tests with a memory ledger store)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, bytes, int], bytes] = {}

    def put(self, first: int, digest: bytes, part: int, data: bytes) -> None:
        self.rows[(first, digest, part)] = data

    def joined(self, first: int, digest: bytes, count: int) -> bytes | None:
        found = [self.rows.get((first, digest, part)) for part in range(count)]
        return None if any(data is None for data in found) else b"".join(d for d in found if d is not None)

    def drop_below(self, size: int) -> None:
        self.rows = {key: data for key, data in self.rows.items() if key[0] >= size}

    def close(self) -> None:
        pass


_metadata = MetaData()
_parts = Table(
    "ledger_journal_parts",
    _metadata,
    Column("first_idx", BigInteger, primary_key=True, autoincrement=False),
    Column("digest", LargeBinary(32), primary_key=True),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)


class SqlLedgerParts:
    """``LedgerParts`` in a table of their own beside the ledger's copy (same SQLAlchemy URL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = LazyEngine(url, _metadata)

    def put(self, first: int, digest: bytes, part: int, data: bytes) -> None:
        key = (_parts.c.first_idx == first, _parts.c.digest == digest, _parts.c.part == part)
        with self._engine.get().begin() as conn:
            conn.execute(delete(_parts).where(*key))
            conn.execute(_parts.insert().values(first_idx=first, digest=digest, part=part, data=data))

    def joined(self, first: int, digest: bytes, count: int) -> bytes | None:
        query = (
            select(_parts.c.part, _parts.c.data)
            .where(_parts.c.first_idx == first, _parts.c.digest == digest, _parts.c.part < count)
            .order_by(_parts.c.part)
        )
        with self._engine.get().connect() as conn:
            rows = [(int(part), bytes(data)) for part, data in conn.execute(query)]
        if [part for part, _ in rows] != list(range(count)):
            return None
        return b"".join(data for _, data in rows)

    def drop_below(self, size: int) -> None:
        with self._engine.get().begin() as conn:
            conn.execute(delete(_parts).where(_parts.c.first_idx < size))

    def close(self) -> None:
        self._engine.dispose()
