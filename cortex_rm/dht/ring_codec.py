"""Ring envelopes to and from bytes: the IDL's ``Envelope`` in Thrift's strict binary protocol.

One frame body is one ``RingService.deliver`` oneway call (``cortex.thrift``):
the message header (name ``deliver``, type ONEWAY, seqid 0), the call's argument
struct holding the ``Envelope``, and nothing after it.  That is byte for byte
what the generated ``RingService.Client`` writes, so any Thrift implementation
of the IDL can talk to a ring member; the transport decodes it here, though,
synchronously and validated, instead of through the generated processor.

Every message type is described once, in ``_SHAPES``: its dataclass, its
generated struct, the union member that carries it and, for each field, a
``_Kind`` that converts the value and checks it on the way in.  Thrift's Python
decoder checks neither ``required`` nor ranges nor enum values, and a union can
arrive with no member or several, so ``*_from_thrift`` checks everything and
raises ``MalformedEnvelope`` naming the field (``envelope.body.neighbours_reply.
successors[3].address``).  ``encode_envelope`` runs the same checks on what it
is about to send, so a core that builds a message the receiver would refuse
learns it at once, from the sender's stack.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
from thrift.Thrift import TMessageType

from cortex_rm.dht import chord_messages as chord, kv_messages as kv, swim_messages as swim
from cortex_rm.dht.envelope import Envelope, RingMessage
from cortex_rm.dht.identity import RING_ID_BITS
from cortex_rm.dht.peer import Peer
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import RingService, ttypes

# The largest frame body either end sends or accepts: an envelope of MAX_PIGGYBACK
# small rumours plus a ReplicaDigest stays far below it; bulk transfers
# (StoreReplicas) must be cut into several envelopes under it.
MAX_FRAME_BYTES = 1024 * 1024
RING_ID_BYTES = RING_ID_BITS // 8  # 20
MAX_COUNT = 2**63 - 1  # request ids, seqs, versions, incarnations: non-negative i64
MAX_ADDRESS_CHARS = 300  # a 255-character DNS name, ':' and a port, with room for [IPv6]
MAX_SUCCESSORS = 64  # in a NeighboursReply or a Leave (Chord's r is 8)
MAX_PIGGYBACK = 256  # rumours on one envelope
MAX_RECORD_KEY_CHARS = 256
MAX_RECORD_VALUE_BYTES = 64 * 1024
MAX_ERROR_CHARS = 1024  # PutReply.error
MAX_DIGEST_ENTRIES = 2048  # ReplicaDigest.entries, ReplicaWant.keys
MAX_STORE_RECORDS = 1024  # StoreReplicas.records (MAX_FRAME_BYTES bounds them first when values are big)
MAX_SECTION_CHARS = 64  # GossipItem.section
MAX_GOSSIP_KEY_CHARS = 256
MAX_GOSSIP_PAYLOAD_BYTES = 8 * 1024

DELIVER = "deliver"  # the RingService call every frame body is

# The binary protocol, strict, with its own bounds on strings and containers, so
# a length prefix cannot make the decoder allocate past the frame.
PROTOCOL_FACTORY = TBinaryProtocolFactory(
    strictRead=True,
    strictWrite=True,
    string_length_limit=MAX_FRAME_BYTES,
    container_length_limit=max(MAX_DIGEST_ENTRIES, MAX_STORE_RECORDS, MAX_PIGGYBACK, MAX_SUCCESSORS),
)


# ------------------------------------------------------------- field kinds


class _Kind:
    """How one field travels: ``to_wire`` for the generated struct, ``from_wire`` checks and converts back."""

    optional = False

    def to_wire(self, value: Any) -> Any:
        return value

    def from_wire(self, value: Any, field: str) -> Any:
        raise NotImplementedError


class _Count(_Kind):
    """A non-negative i64: request ids, seqs, versions, incarnations."""

    def from_wire(self, value: Any, field: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            raise MalformedEnvelope(f"{field} must be an integer in [0, 2**63 - 1], not {value!r}")
        return value


class _RingId(_Kind):
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


class _Bool(_Kind):
    def from_wire(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise MalformedEnvelope(f"{field} must be a bool, not {value!r}")
        return value


@dataclass(frozen=True)
class _Text(_Kind):
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
class _Bytes(_Kind):
    """Opaque bytes, at most ``limit``."""

    limit: int

    def from_wire(self, value: Any, field: str) -> bytes:
        if not isinstance(value, bytes):
            raise MalformedEnvelope(f"{field} must be binary, not {type(value).__name__}")
        if len(value) > self.limit:
            raise MalformedEnvelope(f"{field} is longer than {self.limit} bytes ({len(value)})")
        return value


class _Address(_Kind):
    """``host:port`` (an IPv6 host in brackets), port 1-65535, printable, no spaces."""

    def from_wire(self, value: Any, field: str) -> str:
        text = _Text(MAX_ADDRESS_CHARS, allow_empty=False).from_wire(value, field)
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
class _Enum(_Kind):
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
class _Optional(_Kind):
    """``inner`` or None (an absent optional field)."""

    inner: _Kind

    def to_wire(self, value: Any) -> Any:
        return None if value is None else self.inner.to_wire(value)

    def from_wire(self, value: Any, field: str) -> Any:
        return None if value is None else self.inner.from_wire(value, field)


@dataclass(frozen=True)
class _List(_Kind):
    """A tuple of ``item`` on our side, a Thrift list of at most ``limit`` on the wire."""

    item: _Kind
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
class _Shape(_Kind):
    """A dataclass carried as a generated struct with fields of the same names."""

    python: type
    wire: type
    fields: tuple[tuple[str, _Kind], ...]

    def to_wire(self, value: Any) -> Any:
        return self.wire(**{name: kind.to_wire(getattr(value, name)) for name, kind in self.fields})

    def from_wire(self, value: Any, field: str) -> Any:
        if not isinstance(value, self.wire):
            raise MalformedEnvelope(f"{field} must be a {self.wire.__name__}, not {value!r}")
        return self.python(**{n: k.from_wire(getattr(value, n), f"{field}.{n}") for n, k in self.fields})


class _DigestEntry(_Kind):
    """A ``(key, version)`` pair of ReplicaDigest, as the IDL's ``DigestEntry``."""

    def to_wire(self, value: Any) -> ttypes.DigestEntry:
        key, version = value
        return ttypes.DigestEntry(key=key, version=version)

    def from_wire(self, value: Any, field: str) -> tuple[str, int]:
        if not isinstance(value, ttypes.DigestEntry):
            raise MalformedEnvelope(f"{field} must be a DigestEntry, not {value!r}")
        return (_RECORD_KEY.from_wire(value.key, f"{field}.key"), _Count().from_wire(value.version, f"{field}.version"))


# ------------------------------------------------------------- the shapes

_COUNT, _RING_ID, _BOOL = _Count(), _RingId(), _Bool()
_RECORD_KEY = _Text(MAX_RECORD_KEY_CHARS, allow_empty=False)
_PEER = _Shape(Peer, ttypes.Peer, (("node_id", _RING_ID), ("address", _Address())))
_SUCCESSORS = _List(_PEER, MAX_SUCCESSORS)
_RECORD = _Shape(
    kv.Record,
    ttypes.Record,
    (
        ("key", _RECORD_KEY),
        ("value", _Bytes(MAX_RECORD_VALUE_BYTES)),
        ("version", _COUNT),
        ("writer", _RING_ID),
    ),
)


def _shape(python: type, *fields: tuple[str, _Kind]) -> _Shape:
    """The shape of ``python``, carried by the generated struct of the same name."""
    return _Shape(python, getattr(ttypes, python.__name__), fields)


# Each body type and the RingMessage union member that carries it.
_BODIES: dict[type, tuple[str, _Shape]] = {
    chord.FindSuccessor: ("find_successor", _shape(chord.FindSuccessor, ("request_id", _COUNT), ("key", _RING_ID))),
    chord.FindSuccessorReply: (
        "find_successor_reply",
        _shape(chord.FindSuccessorReply, ("request_id", _COUNT), ("peer", _PEER), ("final", _BOOL)),
    ),
    chord.GetNeighbours: ("get_neighbours", _shape(chord.GetNeighbours, ("request_id", _COUNT))),
    chord.NeighboursReply: (
        "neighbours_reply",
        _shape(
            chord.NeighboursReply,
            ("request_id", _COUNT),
            ("predecessor", _Optional(_PEER)),
            ("successors", _SUCCESSORS),
        ),
    ),
    chord.Notify: ("notify", _shape(chord.Notify)),
    chord.Ping: ("ping", _shape(chord.Ping, ("request_id", _COUNT))),
    chord.Pong: ("pong", _shape(chord.Pong, ("request_id", _COUNT))),
    chord.Leave: ("leave", _shape(chord.Leave, ("predecessor", _Optional(_PEER)), ("successors", _SUCCESSORS))),
    swim.Probe: ("probe", _shape(swim.Probe, ("seq", _COUNT))),
    swim.Ack: ("ack", _shape(swim.Ack, ("seq", _COUNT))),
    swim.ProbeRequest: ("probe_request", _shape(swim.ProbeRequest, ("seq", _COUNT), ("target", _PEER))),
    swim.Nack: ("nack", _shape(swim.Nack, ("seq", _COUNT))),
    kv.PutRecord: (
        "put_record",
        _shape(kv.PutRecord, ("request_id", _COUNT), ("key", _RECORD_KEY), ("value", _Bytes(MAX_RECORD_VALUE_BYTES))),
    ),
    kv.PutReply: (
        "put_reply",
        _shape(
            kv.PutReply, ("request_id", _COUNT), ("record", _Optional(_RECORD)), ("error", _Text(MAX_ERROR_CHARS))
        ),
    ),
    kv.GetRecord: ("get_record", _shape(kv.GetRecord, ("request_id", _COUNT), ("key", _RECORD_KEY))),
    kv.GetReply: ("get_reply", _shape(kv.GetReply, ("request_id", _COUNT), ("record", _Optional(_RECORD)))),
    kv.ReplicaDigest: (
        "replica_digest",
        _shape(kv.ReplicaDigest, ("entries", _List(_DigestEntry(), MAX_DIGEST_ENTRIES))),
    ),
    kv.ReplicaWant: ("replica_want", _shape(kv.ReplicaWant, ("keys", _List(_RECORD_KEY, MAX_DIGEST_ENTRIES)))),
    kv.StoreReplicas: ("store_replicas", _shape(kv.StoreReplicas, ("records", _List(_RECORD, MAX_STORE_RECORDS)))),
}

# Each piggyback type and the Piggyback union member that carries it.
_PIGGYBACKS: dict[type, tuple[str, _Shape]] = {
    swim.MemberUpdate: (
        "member_update",
        _shape(
            swim.MemberUpdate,
            ("peer", _PEER),
            ("status", _Enum(swim.MemberStatus, ttypes.MemberStatus)),
            ("incarnation", _COUNT),
            ("accuser", _Optional(_PEER)),
        ),
    ),
    swim.GossipItem: (
        "gossip_item",
        _shape(
            swim.GossipItem,
            ("section", _Text(MAX_SECTION_CHARS, allow_empty=False)),
            ("key", _Text(MAX_GOSSIP_KEY_CHARS)),
            ("payload", _Bytes(MAX_GOSSIP_PAYLOAD_BYTES)),
        ),
    ),
}


def supported_body_types() -> frozenset[type]:
    """The RingMessage types this codec carries (its tests compare them with the union)."""
    return frozenset(_BODIES)


def supported_piggyback_types() -> frozenset[type]:
    """The Piggyback types this codec carries."""
    return frozenset(_PIGGYBACKS)


def wire_fields(python: type) -> tuple[str, ...]:
    """The field names the codec carries for a body or piggyback type (its tests compare them)."""
    _, shape = _BODIES.get(python) or _PIGGYBACKS[python]
    return tuple(name for name, _ in shape.fields)


# ------------------------------------------------------------- unions and the envelope


def _union_to_thrift(value: Any, members: dict[type, tuple[str, _Shape]], wire: type, what: str) -> Any:
    entry = members.get(type(value))
    if entry is None:
        raise MalformedEnvelope(f"the ring codec cannot carry a {type(value).__name__} as {what}")
    member, shape = entry
    return wire(**{member: shape.to_wire(value)})


def _union_from_thrift(value: Any, shapes: Sequence[tuple[str, _Shape]], wire: type, field: str) -> Any:
    """The one member set in a decoded union, converted; MalformedEnvelope unless exactly one is set."""
    if not isinstance(value, wire):
        raise MalformedEnvelope(f"{field} must be a {wire.__name__}, not {value!r}")
    present = [(member, shape) for member, shape in shapes if getattr(value, member, None) is not None]
    if len(present) != 1:
        names = ", ".join(m for m, _ in present) or "none"
        raise MalformedEnvelope(f"{field} must have exactly one member set, not {names}")
    member, shape = present[0]
    return shape.from_wire(getattr(value, member), f"{field}.{member}")


_BODY_MEMBERS = tuple(_BODIES.values())
_PIGGYBACK_MEMBERS = tuple(_PIGGYBACKS.values())


def body_to_thrift(body: RingMessage) -> ttypes.RingMessage:
    """The IDL's RingMessage union for ``body`` (MalformedEnvelope for a type the codec lacks)."""
    return _union_to_thrift(body, _BODIES, ttypes.RingMessage, "a ring message")


def body_from_thrift(t: Any, field: str = "body") -> RingMessage:
    """The message a decoded RingMessage union carries, validated, or MalformedEnvelope."""
    body: RingMessage = _union_from_thrift(t, _BODY_MEMBERS, ttypes.RingMessage, field)
    return body


def envelope_to_thrift(env: Envelope) -> ttypes.Envelope:
    """The IDL's Envelope for ``env`` (converted, not yet checked: see ``encode_envelope``)."""
    return ttypes.Envelope(
        sender=_PEER.to_wire(env.sender),
        body=body_to_thrift(env.body),
        piggyback=[_union_to_thrift(p, _PIGGYBACKS, ttypes.Piggyback, "piggyback") for p in env.piggyback],
    )


def envelope_from_thrift(t: Any) -> Envelope:
    """The envelope a decoded IDL Envelope holds, every field checked, or MalformedEnvelope."""
    if not isinstance(t, ttypes.Envelope):
        raise MalformedEnvelope(f"the envelope is missing ({t!r})")
    items = t.piggyback
    if not isinstance(items, list):
        raise MalformedEnvelope(f"envelope.piggyback must be a list, not {items!r}")
    if len(items) > MAX_PIGGYBACK:
        raise MalformedEnvelope(f"envelope.piggyback has {len(items)} items, more than {MAX_PIGGYBACK}")
    return Envelope(
        sender=_PEER.from_wire(t.sender, "envelope.sender"),
        body=body_from_thrift(t.body, "envelope.body"),
        piggyback=tuple(
            _union_from_thrift(p, _PIGGYBACK_MEMBERS, ttypes.Piggyback, f"envelope.piggyback[{i}]")
            for i, p in enumerate(items)
        ),
    )


# ------------------------------------------------------------- bytes


def encode_envelope(env: Envelope) -> bytes:
    """One frame body: ``RingService.deliver(env)`` as a oneway call in the strict binary protocol.

    Raises MalformedEnvelope when the envelope breaks a bound the receiver checks
    (or the frame would exceed ``MAX_FRAME_BYTES``): nothing is sent that the
    other end would refuse.
    """
    try:
        t = envelope_to_thrift(env)
    except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong type
        raise MalformedEnvelope(f"cannot encode a {type(env.body).__name__} envelope: {e}") from None
    envelope_from_thrift(t)  # the receiver's checks, here, on the sender's stack
    buffer = _WriteBuffer()
    protocol = PROTOCOL_FACTORY.getProtocol(buffer)
    protocol.writeMessageBegin(DELIVER, TMessageType.ONEWAY, 0)
    RingService.deliver_args(envelope=t).write(protocol)
    protocol.writeMessageEnd()
    data = buffer.getvalue()
    if len(data) > MAX_FRAME_BYTES:
        raise MalformedEnvelope(
            f"a {type(env.body).__name__} envelope of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte frame"
        )
    return data


def decode_envelope(data: bytes) -> Envelope:
    """The envelope one frame body carries, validated; MalformedEnvelope for anything else.

    The body must be exactly one ``deliver`` oneway call and nothing after it.
    """
    if len(data) > MAX_FRAME_BYTES:
        raise MalformedEnvelope(f"a {len(data)}-byte frame exceeds {MAX_FRAME_BYTES} bytes")
    buffer = _ReadBuffer(data)
    protocol = PROTOCOL_FACTORY.getProtocol(buffer)
    try:
        name, kind, _seqid = protocol.readMessageBegin()
        if name != DELIVER or kind != TMessageType.ONEWAY:
            raise MalformedEnvelope(f"a frame must be a oneway {DELIVER!r} call, not {name!r} of type {kind!r}")
        args = RingService.deliver_args()
        args.read(protocol)
        protocol.readMessageEnd()
    except MalformedEnvelope:
        raise
    except Exception as e:  # garbage: Thrift's own errors, EOF, bad UTF-8, nesting too deep...
        raise MalformedEnvelope(f"undecodable frame: {type(e).__name__}: {e}") from None
    if buffer.remaining():
        raise MalformedEnvelope(f"{buffer.remaining()} bytes follow the envelope in its frame")
    return envelope_from_thrift(args.envelope)


class _WriteBuffer:
    """A minimal Thrift write transport (the generated code only calls write/flush)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def flush(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class _ReadBuffer:
    """A minimal Thrift read transport over one frame body that knows how much is left."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._offset = 0

    def readAll(self, size: int) -> bytes:  # noqa: N802 (Thrift's name)
        end = self._offset + size
        if size < 0 or end > len(self._view):
            raise EOFError(f"the frame ends {end - len(self._view)} bytes early")
        chunk = bytes(self._view[self._offset : end])
        self._offset = end
        return chunk

    read = readAll

    def remaining(self) -> int:
        return len(self._view) - self._offset
