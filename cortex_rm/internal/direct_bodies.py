"""One Thrift union per ring ``Direct`` channel: the body codec the events' and the RM journal's channels share.

A ``UnionBody`` knows the union struct (``EventMessage``, ``JournalMessage``), which member
carries which dataclass (a ``thrift_fields.Shape`` each), and an optional ``check`` of what
the shapes cannot say.  ``encode`` refuses what the receiver would refuse (and bodies over a
Direct message's bound); ``decode`` takes any bytes and gives a checked message or raises
``MalformedEnvelope``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from cortex_rm.dht.direct_messages import MAX_DIRECT_BYTES
from cortex_rm.internal import thrift_fields as fields
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.ring_codec import PROTOCOL_FACTORY, _ReadBuffer, _WriteBuffer

M = TypeVar("M")


class UnionBody(Generic[M]):
    """See the module docstring; ``what`` names the channel in errors (``journal``, ``event``)."""

    def __init__(
        self, union: type, shapes: dict[type, tuple[str, fields.Shape]], what: str,
        check: Callable[[M], None] = lambda message: None,
    ) -> None:  # fmt: skip
        self.union, self.shapes, self.what, self.check = union, shapes, what, check

    def from_thrift(self, value: Any) -> M:
        if not isinstance(value, self.union):
            raise MalformedEnvelope(f"the {self.what} body must be a {self.union.__name__}, not {type(value).__name__}")
        present = [(member, shape) for member, shape in self.shapes.values() if getattr(value, member) is not None]
        if len(present) != 1:
            raise MalformedEnvelope(f"a {self.union.__name__} must have exactly one member set, not {len(present)}")
        member, shape = present[0]
        message: M = shape.from_wire(getattr(value, member), f"{self.what}.{member}")
        self.check(message)
        return message

    def encode(self, message: M) -> bytes:
        """The Direct body carrying ``message``; MalformedEnvelope if the receiver would refuse it."""
        member, shape = self.shapes[type(message)]
        try:
            t = self.union(**{member: shape.to_wire(message)})
        except (TypeError, ValueError, AttributeError) as e:
            raise MalformedEnvelope(f"cannot encode a {type(message).__name__}: {e}") from None
        self.from_thrift(t)
        buffer = _WriteBuffer()
        t.write(PROTOCOL_FACTORY.getProtocol(buffer))
        data: bytes = buffer.getvalue()
        if len(data) > MAX_DIRECT_BYTES:
            raise MalformedEnvelope(f"a {type(message).__name__} of {len(data)} bytes exceeds {MAX_DIRECT_BYTES}")
        return data

    def decode(self, data: bytes) -> M:
        """The message one body carries, checked; MalformedEnvelope for anything else."""
        if len(data) > MAX_DIRECT_BYTES:
            raise MalformedEnvelope(f"a {len(data)}-byte {self.what} body exceeds {MAX_DIRECT_BYTES} bytes")
        buffer = _ReadBuffer(data)
        t = self.union()
        try:
            t.read(PROTOCOL_FACTORY.getProtocol(buffer))
        except Exception as e:  # garbage: Thrift's own errors, EOF, bad UTF-8, nesting too deep...
            raise MalformedEnvelope(f"undecodable {self.what} body: {type(e).__name__}: {e}") from None
        if buffer.remaining():
            raise MalformedEnvelope(f"{buffer.remaining()} bytes follow the {self.union.__name__}")
        return self.from_thrift(t)
