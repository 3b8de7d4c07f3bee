"""Checked conversions between dataclass fields and the fields of generated Thrift structs.

Thrift's Python decoder checks neither ``required`` nor ranges nor enum values, so
a decoded struct is only raw material.  A ``Kind`` describes how one field
travels: ``to_wire`` gives the value the generated struct holds, ``from_wire``
checks a decoded value and gives ours back, or raises ``MalformedEnvelope`` naming
the field by its path (``envelope.body.neighbours_reply.successors[3].address``).
``Shape`` puts kinds together into a dataclass carried by the generated struct of
the same field names.  ``ring_codec`` describes every ring message with these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cortex_rm.dht.ring_math import RING_ID_BITS
from cortex_rm.internal.errors import MalformedEnvelope

RING_ID_BYTES = RING_ID_BITS // 8  # 20
MAX_COUNT = 2**63 - 1  # request ids, seqs, versions, incarnations: non-negative i64
MAX_ADDRESS_CHARS = 300  # a 255-character DNS name, ':' and a port, with room for [IPv6]


class Kind:
    """How one field travels: ``to_wire`` for the generated struct, ``from_wire`` checks and converts back."""

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, value: Any, field: str) -> Any:
        raise NotImplementedError


class Count(Kind):
    """A non-negative i64: request ids, seqs, versions, incarnations."""

    def from_wire(self, value: Any, field: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            raise MalformedEnvelope(f"{field} must be an integer in [0, 2**63 - 1], not {value!r}")
        return value


class RingId(Kind):
    """A point on the ring (a ring id or a key id): 20 bytes, big-endian."""

    def to_wire(self, value: Any) -> bytes:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << RING_ID_BITS:
            raise MalformedEnvelope(f"a ring id must be an integer in [0, 2**{RING_ID_BITS}), not {value!r}")
        return value.to_bytes(RING_ID_BYTES, "big")

    def from_wire(self, value: Any, field: str) -> int:
        if not isinstance(value, bytes) or len(value) != RING_ID_BYTES:
            got = f"{len(value)} bytes" if isinstance(value, bytes) else repr(value)
            raise MalformedEnvelope(f"{field} must be {RING_ID_BYTES} bytes, not {got}")
        return int.from_bytes(value, "big")


class Bool(Kind):
    """A Thrift bool (nothing else: not 0 or 1)."""

    def from_wire(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise MalformedEnvelope(f"{field} must be a bool, not {value!r}")
        return value


@dataclass(frozen=True)
class Text(Kind):
    """A string of at most ``limit`` characters (non-empty unless ``allow_empty``)."""

    limit: int
    allow_empty: bool = True

    def from_wire(self, value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise MalformedEnvelope(f"{field} must be a string, not {value!r}")
        if len(value) > self.limit:
            raise MalformedEnvelope(f"{field} is longer than {self.limit} characters ({len(value)})")
        if not value and not self.allow_empty:
            raise MalformedEnvelope(f"{field} must not be empty")
        return value


@dataclass(frozen=True)
class Bytes(Kind):
    """Opaque bytes, at most ``limit``."""

    limit: int

    def from_wire(self, value: Any, field: str) -> bytes:
        if not isinstance(value, bytes):
            raise MalformedEnvelope(f"{field} must be binary, not {type(value).__name__}")
        if len(value) > self.limit:
            raise MalformedEnvelope(f"{field} is longer than {self.limit} bytes ({len(value)})")
        return value


class Address(Kind):
    """``host:port`` (an IPv6 host in brackets), port 1-65535, printable, no spaces."""

    def from_wire(self, value: Any, field: str) -> str:
        text = Text(MAX_ADDRESS_CHARS, allow_empty=False).from_wire(value, field)
        host, sep, port = text.rpartition(":")
        if (
            not sep
            or not host
            or not host.isprintable()
            or " " in host
            or not port.isdecimal()
            or not port.isascii()
            or not 0 < int(port) <= 65535
        ):
            raise MalformedEnvelope(f"{field} must be host:port, not {text!r}")
        return text


@dataclass(frozen=True)
class EnumOf(Kind):
    """A Python enum carried as the IDL enum of the same member names."""

    python: type[enum.Enum]
    wire: Any  # the generated enum class (int constants by name)

    def to_wire(self, value: Any) -> int:
        return int(getattr(self.wire, value.name))

    def from_wire(self, value: Any, field: str) -> enum.Enum:
        name = self.wire._VALUES_TO_NAMES.get(value) if isinstance(value, int) else None
        if name is None or name not in self.python.__members__:
            raise MalformedEnvelope(f"{field}: unknown {self.python.__name__} {value!r}")
        return self.python[name]


@dataclass(frozen=True)
class Maybe(Kind):
    """``inner`` or None (an absent optional field)."""

    inner: Kind

    def to_wire(self, value: Any) -> Any:
        return None if value is None else self.inner.to_wire(value)

    def from_wire(self, value: Any, field: str) -> Any:
        return None if value is None else self.inner.from_wire(value, field)


@dataclass(frozen=True)
class ListOf(Kind):
    """A tuple of ``item`` on our side, a Thrift list of at most ``limit`` on the wire."""

    item: Kind
    limit: int

    def to_wire(self, value: Any) -> list[Any]:
        return [self.item.to_wire(v) for v in value]

    def from_wire(self, value: Any, field: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise MalformedEnvelope(f"{field} must be a list, not {value!r}")
        if len(value) > self.limit:
            raise MalformedEnvelope(f"{field} has {len(value)} entries, more than {self.limit}")
        return tuple(self.item.from_wire(v, f"{field}[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True)
class Shape(Kind):
    """A dataclass carried as a generated struct with fields of the same names."""

    python: type
    wire: type
    fields: tuple[tuple[str, Kind], ...]

    def to_wire(self, value: Any) -> Any:
        return self.wire(**{name: kind.to_wire(getattr(value, name)) for name, kind in self.fields})

    def from_wire(self, value: Any, field: str) -> Any:
        if not isinstance(value, self.wire):
            raise MalformedEnvelope(f"{field} must be a {self.wire.__name__}, not {value!r}")
        return self.python(**{n: k.from_wire(getattr(value, n), f"{field}.{n}") for n, k in self.fields})
