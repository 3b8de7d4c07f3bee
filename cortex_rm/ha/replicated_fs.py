"""The file system's namespace through the journal: each ``NamespaceStore.apply`` is one journal entry,
acknowledged once a majority of the eligible nodes hold it and applied by every one of them.

``ReplicatedNamespaceStore`` has the ``NamespaceStore`` contract (``fs/namespace_store.py``): the
NameNode persists one operation's ``Changes`` through it, and its Deferred fires once the entry
``{"store": "fs", "op": "apply", "args": [<changes>]}`` is committed and applied here.  Every
eligible node applies committed entries to its own local store (``namespace_applier``), so a
standby that takes over loads the namespace the old active acknowledged.  Reads (``load``) are
the local copy's.

``<changes>`` is ``[upserted, removed, freed_blocks]`` with each inode a list of its fields in
``InodeRecord``'s order (its kind by value, its blocks as ``[block_id, length, checksum]``), so a
recursive delete of many inodes stays far below the journal's entry bound
(``ha/journal.MAX_ENTRY_BYTES``).  Decoding is exact (``decode_changes(encode_changes(c)) == c``)
and checks every field's type, so what decodes can be stored.

Applying is idempotent (a store's ``apply`` replaces inodes by id and removes by id), so a node
that restarts may apply an entry again from its saved applied mark.

**Size**: the freed blocks are not stored by any ``NamespaceStore`` (the NameNode's block map
follows them; a new leader's block map deletes unreferenced replicas as orphans after their
grace).  An entry that would exceed the journal's bound is therefore journalled without them;
one still too large is refused with ``ChangesTooLarge`` before anything is proposed: some 60,000
inodes removed at once, 4,000 written at once, or one file of 6,000 blocks (768 GB of 128 MB blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from cortex_rm.fs.model import BlockRef, Changes, FileKind, InodeRecord
from cortex_rm.fs.namespace_store import NamespaceStore
from cortex_rm.ha.journal import MAX_ENTRY_BYTES
from cortex_rm.ha.replicated_state import Proposer, UnknownOperation, encode_operation

STORE = "fs"
#: Every SQL column of the namespace holds at most a signed 64-bit integer.
_INT_RANGE = (-(1 << 63), (1 << 63) - 1)


class ChangesTooLarge(ValueError):
    """One namespace operation's changes do not fit in one journal entry, even without the freed blocks."""


# ------------------------------------------------------------ the codec


def encode_changes(changes: Changes) -> list[Any]:
    """``changes`` as JSON values (module docstring); ``decode_changes`` reads them back exactly."""
    return [
        [_encode_inode(record) for record in changes.upserted],
        list(changes.removed),
        [_encode_block(block) for block in changes.freed_blocks],
    ]


def _encode_inode(r: InodeRecord) -> list[Any]:
    return [r.inode_id, r.parent_id, r.name, r.kind.value, r.owner, r.group, r.permission, r.modification_time,
            r.access_time, r.replication, r.block_size, [_encode_block(b) for b in r.blocks]]  # fmt: skip


def _encode_block(b: BlockRef) -> list[Any]:
    return [b.block_id, b.length, b.checksum]


def decode_changes(value: Any) -> Changes:
    """``encode_changes``'s values back; UnknownOperation naming the first thing that is wrong."""
    upserted, removed, freed = _list(value, "the changes", 3)
    return Changes(
        upserted=tuple(_decode_inode(v, f"upserted[{i}]") for i, v in enumerate(_list(upserted, "upserted"))),
        removed=tuple(_int(v, f"removed[{i}]") for i, v in enumerate(_list(removed, "removed"))),
        freed_blocks=tuple(_decode_block(v, f"freed_blocks[{i}]") for i, v in enumerate(_list(freed, "freed_blocks"))),
    )


def _decode_inode(value: Any, where: str) -> InodeRecord:
    (inode_id, parent_id, name, kind, owner, group, permission, modification_time, access_time, replication,
     block_size, blocks) = _list(value, where, 12)  # fmt: skip
    if not isinstance(kind, str) or kind not in {k.value for k in FileKind}:
        raise UnknownOperation(f"{where}: no file kind {str(kind)[:40]!r}")
    return InodeRecord(
        inode_id=_int(inode_id, f"{where}.inode_id"),
        parent_id=_int(parent_id, f"{where}.parent_id"),
        name=_str(name, f"{where}.name"),
        kind=FileKind(kind),
        owner=_str(owner, f"{where}.owner"),
        group=_str(group, f"{where}.group"),
        permission=_int(permission, f"{where}.permission"),
        modification_time=_int(modification_time, f"{where}.modification_time"),
        access_time=_int(access_time, f"{where}.access_time"),
        replication=_int(replication, f"{where}.replication"),
        block_size=_int(block_size, f"{where}.block_size"),
        blocks=tuple(_decode_block(b, f"{where}.blocks[{i}]") for i, b in enumerate(_list(blocks, f"{where}.blocks"))),
    )


def _decode_block(value: Any, where: str) -> BlockRef:
    block_id, length, checksum = _list(value, where, 3)
    return BlockRef(
        _str(block_id, f"{where}.block_id"), _int(length, f"{where}.length"), _str(checksum, f"{where}.checksum")
    )


def _list(value: Any, where: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise UnknownOperation(f"{where} must be a list" + (f" of {length} values" if length is not None else ""))
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int or not _INT_RANGE[0] <= value <= _INT_RANGE[1]:  # (not a bool)
        raise UnknownOperation(f"{where} must be a 64-bit integer")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UnknownOperation(f"{where} must be a string")
    try:
        value.encode("utf-8")  # (JSON may escape a lone surrogate, which no SQL text column takes)
    except UnicodeEncodeError:
        raise UnknownOperation(f"{where} is not Unicode text") from None
    return value


# ------------------------------------------------------------ the store and its applier


class ReplicatedNamespaceStore:
    """See the module docstring.  ``local`` is this node's own copy (``SqlNamespaceStore``)."""

    def __init__(self, local: NamespaceStore, journal: Proposer) -> None:
        self.local = local
        self.journal = journal

    def load(self) -> defer.Deferred[list[InodeRecord]]:
        return self.local.load()

    def apply(self, changes: Changes) -> defer.Deferred[None]:
        """Fires once ``changes`` are committed and applied here; nothing is journalled for empty changes
        (as ``SqlNamespaceStore``, which has nothing to write for them)."""
        if changes.empty:
            return defer.succeed(None)
        try:
            data = entry_for(changes)
        except ChangesTooLarge as e:
            return defer.fail(e)
        return self.journal.propose(data).addCallback(lambda _: None)

    def close(self) -> None:
        self.local.close()


def entry_for(changes: Changes) -> bytes:
    """The journal entry of ``changes``: whole when it fits, else without the freed blocks (module docstring)."""
    data = encode_operation(STORE, "apply", [encode_changes(changes)])
    if len(data) <= MAX_ENTRY_BYTES:
        return data
    data = encode_operation(STORE, "apply", [encode_changes(Changes(changes.upserted, changes.removed))])
    if len(data) > MAX_ENTRY_BYTES:
        raise ChangesTooLarge(
            f"one operation's namespace changes ({len(changes.upserted)} inodes written,"
            f" {len(changes.removed)} removed) take {len(data)} bytes, more than a journal entry's {MAX_ENTRY_BYTES}"
        )
    return data


def namespace_applier(local: NamespaceStore) -> Callable[[str, list[Any]], defer.Deferred[None]]:
    """Applies one ``fs`` operation to ``local``: what a node's journal ``apply`` calls for entries of this store."""

    def apply(op: str, args: list[Any]) -> defer.Deferred[None]:
        if op != "apply" or len(args) != 1:
            raise UnknownOperation(f"the namespace store has no operation {op!r} of {len(args)} arguments")
        return local.apply(decode_changes(args[0]))

    return apply
