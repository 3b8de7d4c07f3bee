"""The RM journal's messages (``ha/journal.py``) as the body of a ring ``Direct`` message on ``rm-journal``.

One ``JournalMessage`` (``cortex.thrift``) in Thrift's strict binary protocol, every field
checked on the way in (``thrift_fields``): epochs are (number, 20-byte ring id), seqs
non-negative, an entry's data at most ``MAX_ENTRY_BYTES``, an Append at most
``MAX_BATCH`` entries, the whole body within a Direct message's bound.  Anything else is
``MalformedEnvelope``.
"""

from __future__ import annotations

from typing import Any

from cortex_rm.ha.journal import (
    MAX_BATCH, MAX_ENTRY_BYTES, Append, Appended, Entry, Message, Prepare, Promise, Refused,
)  # fmt: skip
from cortex_rm.internal import thrift_fields as fields
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.direct_bodies import UnionBody

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


def _seqs_follow(message: Message) -> None:
    if isinstance(message, Append) and any(e.seq != message.prev_seq + 1 + i for i, e in enumerate(message.entries)):
        raise MalformedEnvelope("journal.append: the entries' seqs must follow prev_seq one by one")


_BODY: UnionBody[Message] = UnionBody(ttypes.JournalMessage, _SHAPES, "journal", _seqs_follow)
_from_thrift = _BODY.from_thrift
#: The Direct body carrying a message; MalformedEnvelope if the receiver would refuse it.
encode_journal = _BODY.encode
#: The message one ``rm-journal`` body carries, checked; MalformedEnvelope for anything else.
decode_journal = _BODY.decode
