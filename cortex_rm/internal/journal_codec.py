"""The RM journal's messages (``ha/journal.py``) as the body of a ring ``Direct`` message on ``rm-journal``.

One ``JournalMessage`` (``cortex.thrift``) in Thrift's strict binary protocol, every field
checked on the way in (``thrift_fields``): epochs are (number, 20-byte ring id), seqs
non-negative, an entry's data at most ``MAX_ENTRY_BYTES``, an Append at most
``MAX_BATCH`` entries, the whole body within a Direct message's bound.  Anything else is
``MalformedEnvelope``.

Snapshot chunks and their answers (``Snapshot``, ``SnapshotAck``) go on a channel of their own,
``rm-journal-snapshot``, in a fixed big-endian layout (``cortex.thrift``'s union has no member
for them, and its generated code is not regenerated for this): a kind byte (1: ``Snapshot``,
2: ``SnapshotAck``), the epoch (u64 number, 20-byte ring id), the seq (u64), then for a
``Snapshot`` the last epoch, the size and the offset (u64 each) and the chunk's data (the rest
of the body, 1 to ``SNAPSHOT_CHUNK_BYTES`` bytes, within the size), for a ``SnapshotAck`` the
offset (u64).  Every number is at most 2**63 - 1 and a snapshot at most ``MAX_SNAPSHOT_BYTES``.
"""

from __future__ import annotations

import struct
from typing import Any

from cortex_rm.ha.journal import (
    MAX_BATCH, MAX_ENTRY_BYTES, SNAPSHOT_CHUNK_BYTES, Append, Appended, Entry, Epoch, Message, Prepare, Promise,
    Refused, Snapshot, SnapshotAck,
)  # fmt: skip
from cortex_rm.internal import thrift_fields as fields
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.direct_bodies import UnionBody

#: The ring's Direct channel the journal speaks on.
JOURNAL_CHANNEL = "rm-journal"
#: ... and the one its snapshot chunks go on.
SNAPSHOT_CHANNEL = "rm-journal-snapshot"
#: The largest snapshot a follower takes (its stores' content, written to a file as it comes).
MAX_SNAPSHOT_BYTES = 1 << 40


class _Epoch(fields.Kind):
    """An epoch, ``(number, ring id)`` here, a ``JournalEpoch`` on the wire."""

    _count, _node = fields.Count(), fields.RingId()

    def to_wire(self, value: Any) -> Any:
        number, node = value
        return ttypes.JournalEpoch(number, self._node.to_wire(node))

    def from_wire(self, value: Any, field: str) -> tuple[int, int]:
        if not isinstance(value, ttypes.JournalEpoch):
            raise MalformedEnvelope(f"{field} must be a JournalEpoch, not {value!r}")
        return self._count.from_wire(value.number, f"{field}.number"), self._node.from_wire(value.node, f"{field}.node")


class _Flag(fields.Kind):
    """An optional bool: absent is False."""

    def to_wire(self, value: Any) -> Any:
        return True if value else None

    def from_wire(self, value: Any, field: str) -> bool:
        return False if value is None else fields.Bool().from_wire(value, field)


_EPOCH = _Epoch()
_SEQ = fields.Count()
_ENTRY = fields.Shape(Entry, ttypes.JournalEntry, (
    ("epoch", _EPOCH), ("seq", _SEQ), ("data", fields.Bytes(MAX_ENTRY_BYTES)),
))  # fmt: skip

_SHAPES: dict[type, tuple[str, fields.Shape]] = {
    Prepare: ("prepare", fields.Shape(Prepare, ttypes.JournalPrepare, (
        ("epoch", _EPOCH), ("last_seq", _SEQ), ("last_epoch", _EPOCH), ("pre", _Flag()),
    ))),
    Promise: ("promise", fields.Shape(Promise, ttypes.JournalPromise, (
        ("epoch", _EPOCH), ("granted", fields.Bool()), ("pre", _Flag()),
    ))),
    Append: ("append", fields.Shape(Append, ttypes.JournalAppend, (
        ("epoch", _EPOCH), ("prev_seq", _SEQ), ("prev_epoch", _EPOCH), ("entries", fields.ListOf(_ENTRY, MAX_BATCH)),
        ("commit", _SEQ),
    ))),
    Appended: ("appended", fields.Shape(Appended, ttypes.JournalAppended, (
        ("epoch", _EPOCH), ("ok", fields.Bool()), ("match", _SEQ),
    ))),
    Refused: ("refused", fields.Shape(Refused, ttypes.JournalRefused, (("promised", _EPOCH),))),
}  # fmt: skip


def _seqs_follow(message: Message) -> None:
    if isinstance(message, Append) and any(e.seq != message.prev_seq + 1 + i for i, e in enumerate(message.entries)):
        raise MalformedEnvelope("journal.append: the entries' seqs must follow prev_seq one by one")


_BODY: UnionBody[Message] = UnionBody(ttypes.JournalMessage, _SHAPES, "journal", _seqs_follow)
_from_thrift = _BODY.from_thrift
#: The Direct body carrying a message; MalformedEnvelope if the receiver would refuse it.
encode_journal = _BODY.encode
#: The message one ``rm-journal`` body carries, checked; MalformedEnvelope for anything else.
decode_journal = _BODY.decode


_HEAD = struct.Struct(">BQ20sQ")  # kind, epoch (number, node), seq
_SNAPSHOT = struct.Struct(">Q20sQQ")  # last epoch (number, node), size, offset
_ACK = struct.Struct(">Q")  # offset
_MAX = 2**63 - 1


def encode_snapshot(message: Snapshot | SnapshotAck) -> bytes:
    """The ``rm-journal-snapshot`` body carrying ``message``; MalformedEnvelope if the receiver would refuse it."""
    try:
        if isinstance(message, Snapshot):
            data = _HEAD.pack(1, *_epoch(message.epoch), message.seq) + _SNAPSHOT.pack(
                *_epoch(message.last_epoch), message.size, message.offset) + message.data  # fmt: skip
        else:
            data = _HEAD.pack(2, *_epoch(message.epoch), message.seq) + _ACK.pack(message.offset)
    except (struct.error, OverflowError, TypeError) as e:
        raise MalformedEnvelope(f"cannot encode a {type(message).__name__}: {e}") from None
    if decode_snapshot(data) != message:
        raise MalformedEnvelope(f"a {type(message).__name__} out of bounds: {message!r:.200}")
    return data


def decode_snapshot(data: bytes) -> Snapshot | SnapshotAck:
    """The message one ``rm-journal-snapshot`` body carries, checked; MalformedEnvelope for anything else."""
    if len(data) < _HEAD.size:
        raise MalformedEnvelope(f"a {len(data)}-byte snapshot body is too short")
    kind, number, node, seq = _HEAD.unpack_from(data)
    epoch = (_count(number, "epoch.number"), int.from_bytes(node, "big"))
    _count(seq, "seq")
    rest = data[_HEAD.size :]
    if kind == 2:
        if len(rest) != _ACK.size:
            raise MalformedEnvelope(f"a snapshot ack of {len(data)} bytes, not {_HEAD.size + _ACK.size}")
        (offset,) = _ACK.unpack(rest)
        if offset > MAX_SNAPSHOT_BYTES:
            raise MalformedEnvelope(f"a snapshot ack's offset {offset} is beyond {MAX_SNAPSHOT_BYTES}")
        return SnapshotAck(epoch, seq, offset)
    if kind != 1:
        raise MalformedEnvelope(f"a snapshot body of kind {kind} (1: a chunk, 2: an ack)")
    if len(rest) < _SNAPSHOT.size:
        raise MalformedEnvelope(f"a {len(data)}-byte snapshot chunk is too short")
    last_number, last_node, size, offset = _SNAPSHOT.unpack_from(rest)
    chunk = rest[_SNAPSHOT.size :]
    if not 1 <= size <= MAX_SNAPSHOT_BYTES or not 1 <= len(chunk) <= SNAPSHOT_CHUNK_BYTES or offset + len(chunk) > size:
        raise MalformedEnvelope(f"a snapshot chunk of {len(chunk)} bytes at {offset} of {size}: out of bounds")
    last_epoch = (_count(last_number, "last_epoch.number"), int.from_bytes(last_node, "big"))
    return Snapshot(epoch, seq, last_epoch, size, offset, chunk)


def encode_message(message: Message) -> tuple[str, bytes]:
    """Any journal message: the channel it goes on and its body."""
    if isinstance(message, (Snapshot, SnapshotAck)):
        return SNAPSHOT_CHANNEL, encode_snapshot(message)
    return JOURNAL_CHANNEL, encode_journal(message)


def _epoch(epoch: Epoch) -> tuple[int, bytes]:
    number, node = epoch
    return number, node.to_bytes(20, "big")


def _count(value: int, field: str) -> int:
    if value > _MAX:
        raise MalformedEnvelope(f"snapshot {field} must be at most 2**63 - 1, not {value}")
    return value
