"""The messages of the replicated key space (``key_space.py``).

A record lives at the owner of its key (the key's successor on the ring) and at the
owner's next ``r`` successors.  Writes go through the owner, which gives each write
a version higher than any it holds for the key, so versions of one key are totally
ordered and the highest wins everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One value under a key: ``version`` orders writes (higher wins), ``writer`` breaks ties.

    ``writer`` is the ring id of the member that wrote (and signed) it: SHA-1 of
    ``signer_key``; ``signature`` covers key, version and value (``ring_trust.py``).
    The writer picks the version; the owner refuses one not above what it holds.
    """

    key: str
    value: bytes
    version: int
    writer: int
    signer_key: bytes = b""
    signature: bytes = b""


@dataclass(frozen=True)
class PutRecord:
    """Request to the key's owner: store ``record`` (written and signed by the sender)."""

    request_id: int
    record: Record


@dataclass(frozen=True)
class PutReply:
    """Answer to PutRecord: the stored record, or ``error`` (not the owner, too large...)."""

    request_id: int
    record: Record | None
    error: str


@dataclass(frozen=True)
class GetRecord:
    """Request to the key's owner (or a replica): the record under ``key``."""

    request_id: int
    key: str


@dataclass(frozen=True)
class GetReply:
    """Answer to GetRecord: the record, or None when the receiver holds none."""

    request_id: int
    record: Record | None


@dataclass(frozen=True)
class ReplicaDigest:
    """One-way, owner to replica (or leaver to successor): the versions I hold.

    The receiver answers with ``ReplicaWant`` for each key it lacks or holds older.
    """

    entries: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ReplicaWant:
    """One-way answer to ReplicaDigest: send me these keys."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class StoreReplicas:
    """One-way: keep these records (each kept only if newer than what the receiver has)."""

    records: tuple[Record, ...]


KeySpaceMessage = PutRecord | PutReply | GetRecord | GetReply | ReplicaDigest | ReplicaWant | StoreReplicas
