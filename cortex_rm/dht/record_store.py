"""A node's local copy of the key space: versioned records, the merge rule, size bounds.

Pure data, no protocol: ``key_space.py`` decides what to store and whom to tell;
this module decides *which of two records wins* and keeps the winners.

The merge rule
--------------
Every write is versioned by the key's owner (``KeySpace`` assigns
``version = max(now_ms, highest version held for the key + 1)`` and
``writer = owner's ring id``).  Two records of one key are ordered by
``(version, writer, value)``: the higher version wins, a tie between two owners
that picked the same millisecond goes to the higher ring id, and (only possible if
one owner reused a version after losing its store) the greater value bytes.  The
order is total, so ``merge`` -- "keep the greater" -- is commutative, associative
and idempotent: replicas that have seen the same records hold the same record,
whatever order they saw them in.  A node keeps an incoming record only if it wins
against what the node holds, so a stale copy (a node that was down during a write)
can never overwrite a newer one anywhere.

Bounds
------
Records are small: a key is 1 to ``MAX_KEY_LENGTH`` characters, a value at most
``MAX_VALUE_BYTES`` bytes.  ``record_error`` says what is wrong with a key/value
pair, in words meant for the person who chose it; a record from the wire that
breaks the bounds is dropped before it touches the store.  Messages that carry many
records or digest entries are cut into batches (``record_batches``,
``digest_batches``) so no single message grows without bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cortex_rm.dht.kv_messages import Record

MAX_KEY_LENGTH = 256
"""Characters in a key (keys are names such as ``cortex:resourcemanager``)."""

MAX_VALUE_BYTES = 64 * 1024
"""Bytes in a value: the key space holds small state (RM state, function names), not data."""

MAX_BATCH_BYTES = 1024 * 1024
"""Value bytes per ``StoreReplicas`` message (one record above the limit still travels alone)."""

MAX_DIGEST_ENTRIES = 1024
"""Entries per ``ReplicaDigest`` (1024 keys of at most 1 KiB of UTF-8 each: 1 MiB at worst)."""


class RecordTooLarge(ValueError):
    """A key or value outside the bounds (``MAX_KEY_LENGTH``, ``MAX_VALUE_BYTES``)."""


def record_error(key: str, value: bytes = b"") -> str | None:
    """Why ``key``/``value`` cannot be stored, or None when they are within the bounds."""
    if not key:
        return "key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}"
    if len(value) > MAX_VALUE_BYTES:
        return f"value of key {key[:40]!r} is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}"
    return None


def check_record(key: str, value: bytes = b"") -> None:
    """Raise ``RecordTooLarge`` (saying why) when ``key``/``value`` break the bounds."""
    error = record_error(key, value)
    if error is not None:
        raise RecordTooLarge(error)


def record_order(record: Record) -> tuple[int, int, bytes]:
    """The sort key of the merge rule: ``(version, writer, value)``, greatest wins."""
    return (record.version, record.writer, record.value)


def newer(candidate: Record, held: Record | None) -> bool:
    """Whether ``candidate`` wins against ``held`` (anything wins against nothing)."""
    return held is None or record_order(candidate) > record_order(held)


def merge(a: Record | None, b: Record | None) -> Record | None:
    """The winner of two records of the same key (None only when both are None)."""
    if a is None:
        return b
    if b is None:
        return a
    if a.key != b.key:
        raise ValueError(f"cannot merge records of different keys {a.key!r} and {b.key!r}")
    return b if newer(b, a) else a


class RecordStore:
    """The records one node holds, at most one per key: the newest it has seen."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: dict[str, Record] = {}
        for record in records:
            self.keep(record)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __iter__(self) -> Iterator[Record]:
        """The records, in key order (so digests and batches are deterministic)."""
        return iter([self._records[k] for k in sorted(self._records)])

    def get(self, key: str) -> Record | None:
        """The record held under ``key``, or None."""
        return self._records.get(key)

    def keep(self, record: Record) -> bool:
        """Store ``record`` if it is within the bounds and newer than what we hold; whether it was."""
        if record_error(record.key, record.value) is not None:
            return False
        if not newer(record, self._records.get(record.key)):
            return False
        self._records[record.key] = record
        return True

    def next_version(self, key: str, now_ms: int) -> int:
        """The version an owner gives a new write: ``max(now_ms, highest held + 1)``."""
        held = self._records.get(key)
        return now_ms if held is None else max(now_ms, held.version + 1)

    def copy(self) -> RecordStore:
        """An independent store with the same records (what a restarted node reads back)."""
        return RecordStore(self._records.values())


def record_batches(records: Iterable[Record], max_bytes: int = MAX_BATCH_BYTES) -> list[tuple[Record, ...]]:
    """``records`` cut into consecutive batches of at most ``max_bytes`` value bytes each.

    A record whose value alone exceeds ``max_bytes`` travels in a batch of its own.
    """
    batches: list[tuple[Record, ...]] = []
    batch: list[Record] = []
    size = 0
    for record in records:
        if batch and size + len(record.value) > max_bytes:
            batches.append(tuple(batch))
            batch, size = [], 0
        batch.append(record)
        size += len(record.value)
    if batch:
        batches.append(tuple(batch))
    return batches


def digest_batches(
    records: Iterable[Record], max_entries: int = MAX_DIGEST_ENTRIES
) -> list[tuple[tuple[str, int], ...]]:
    """The ``(key, version)`` entries of ``records``, cut into batches of ``max_entries``."""
    entries = [(record.key, record.version) for record in records]
    return [tuple(entries[i : i + max_entries]) for i in range(0, len(entries), max_entries)]
