"""The RM journal's messages (``ha/journal.py``) as the body of a ring ``Direct`` message on ``rm-journal``.

One ``JournalMessage`` (``cortex.thrift``) in Thrift's strict binary protocol, every field
checked on the way in (``thrift_fields``): epochs are (number, 20-byte ring id), seqs
non-negative, an entry's data at most ``MAX_ENTRY_BYTES``, an Append at most
``MAX_BATCH`` entries, the whole body within a Direct message's bound.  Anything else is
``MalformedEnvelope``.
"""

from __future__ import annotations

from typing import Any

from cortex_rm.dht.direct_messages import MAX_DIRECT_BYTES
from cortex_rm.ha.journal import (
    MAX_BATCH, MAX_ENTRY_BYTES, Append, Appended, Entry, Message, Prepare, Promise, Refused,
)  # fmt: skip
from cortex_rm.internal import thrift_fields as fields
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.ring_codec import PROTOCOL_FACTORY, _ReadBuffer, _WriteBuffer

#: The ring's Direct channel the journal speaks on.
JOURNAL_CHANNEL = "rm-journal"


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


def _from_thrift(value: Any) -> Message:
    present = [(member, shape) for member, shape in _SHAPES.values() if getattr(value, member) is not None]
    if len(present) != 1:
        raise MalformedEnvelope(f"a JournalMessage must have exactly one member set, not {len(present)}")
    member, shape = present[0]
    message: Message = shape.from_wire(getattr(value, member), f"journal.{member}")
    if isinstance(message, Append) and any(e.seq != message.prev_seq + 1 + i for i, e in enumerate(message.entries)):
        raise MalformedEnvelope("journal.append: the entries' seqs must follow prev_seq one by one")
    return message


def encode_journal(message: Message) -> bytes:
    """The Direct body carrying ``message``; MalformedEnvelope if the receiver would refuse it."""
    member, shape = _SHAPES[type(message)]
    try:
        t = ttypes.JournalMessage(**{member: shape.to_wire(message)})
    except (TypeError, ValueError, AttributeError) as e:
        raise MalformedEnvelope(f"cannot encode a {type(message).__name__}: {e}") from None
    _from_thrift(t)
    buffer = _WriteBuffer()
    t.write(PROTOCOL_FACTORY.getProtocol(buffer))
    data = buffer.getvalue()
    if len(data) > MAX_DIRECT_BYTES:
        raise MalformedEnvelope(f"a {type(message).__name__} of {len(data)} bytes exceeds {MAX_DIRECT_BYTES}")
    return data


def decode_journal(data: bytes) -> Message:
    """The message one ``rm-journal`` body carries, validated; MalformedEnvelope for anything else."""
    if len(data) > MAX_DIRECT_BYTES:
        raise MalformedEnvelope(f"a {len(data)}-byte journal body exceeds {MAX_DIRECT_BYTES} bytes")
    buffer = _ReadBuffer(data)
    t = ttypes.JournalMessage()
    try:
        t.read(PROTOCOL_FACTORY.getProtocol(buffer))
    except Exception as e:  # garbage: Thrift's own errors, EOF, nesting too deep...
        raise MalformedEnvelope(f"undecodable journal body: {type(e).__name__}: {e}") from None
    if buffer.remaining():
        raise MalformedEnvelope(f"{buffer.remaining()} bytes follow the JournalMessage")
    return _from_thrift(t)
