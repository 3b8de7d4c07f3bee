"""Ring envelopes to and from bytes: the IDL's ``Envelope`` in Thrift's strict binary protocol.

One frame body is one ``RingService.deliver`` oneway call (``cortex.thrift``):
the message header (name ``deliver``, type ONEWAY, seqid 0), the call's argument
struct holding the ``Envelope``, and nothing after it.  That is byte for byte
what the generated ``RingService.Client`` writes, so any Thrift implementation
of the IDL can talk to a ring member; the transport decodes it here, though,
synchronously and validated, instead of through the generated processor.

Every message type is described once, in ``_BODIES`` and ``_PIGGYBACKS``: its
dataclass, its generated struct, the union member that carries it and, for each
field, a ``thrift_fields.Kind`` that converts the value and checks it on the way
in.  A union may arrive with no member or several, values out of range, lists too
long: ``*_from_thrift`` checks everything and raises ``MalformedEnvelope`` naming
the field (``envelope.body.neighbours_reply.successors[3].address``).
``encode_envelope`` runs the same checks on what it is about to send, so a core
that builds a message the receiver would refuse learns it at once, from the
sender's stack.  (Addresses, ids and counters are bounded in ``thrift_fields``.)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocolFactory
from thrift.Thrift import TMessageType

from cortex_rm.dht import chord_messages as chord
from cortex_rm.dht import direct_messages as direct
from cortex_rm.dht import kv_messages as kv
from cortex_rm.dht import swim_messages as swim
from cortex_rm.dht.envelope import Envelope, RingMessage
from cortex_rm.dht.peer import Peer
from cortex_rm.internal import thrift_fields as fields
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.gen import RingService, ttypes

# The largest frame body either end sends or accepts: an envelope of MAX_PIGGYBACK
# small rumours plus a ReplicaDigest stays far below it; bulk transfers
# (StoreReplicas) must be cut into several envelopes under it.
MAX_FRAME_BYTES = 1024 * 1024
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
MAX_KEY_BYTES = 512  # signer_key: a DER SPKI (P-256: 91 bytes)
MAX_SIGNATURE_BYTES = 160  # a DER ECDSA signature (P-256: at most 72 bytes)

DELIVER = "deliver"  # the RingService call every frame body is

# The binary protocol, strict, with its own bounds on strings and containers, so
# a length prefix cannot make the decoder allocate past the frame.
PROTOCOL_FACTORY = TBinaryProtocolFactory(
    strictRead=True,
    strictWrite=True,
    string_length_limit=MAX_FRAME_BYTES,
    container_length_limit=max(MAX_DIGEST_ENTRIES, MAX_STORE_RECORDS, MAX_PIGGYBACK, MAX_SUCCESSORS),
)


class _DigestEntry(fields.Kind):
    """A ``(key, version)`` pair of ReplicaDigest, as the IDL's ``DigestEntry``."""

    def to_wire(self, value: Any) -> ttypes.DigestEntry:
        key, version = value
        return ttypes.DigestEntry(key=key, version=version)

    def from_wire(self, value: Any, field: str) -> tuple[str, int]:
        if not isinstance(value, ttypes.DigestEntry):
            raise MalformedEnvelope(f"{field} must be a DigestEntry, not {value!r}")
        key = _RECORD_KEY.from_wire(value.key, f"{field}.key")
        return (key, fields.Count().from_wire(value.version, f"{field}.version"))


# ------------------------------------------------------------- the shapes

_COUNT, _RING_ID, _BOOL = fields.Count(), fields.RingId(), fields.Bool()
_RECORD_KEY = fields.Text(MAX_RECORD_KEY_CHARS, allow_empty=False)
_PEER = fields.Shape(Peer, ttypes.Peer, (("node_id", _RING_ID), ("address", fields.Address())))
_SUCCESSORS = fields.ListOf(_PEER, MAX_SUCCESSORS)
_SIGNER_KEY = ("signer_key", fields.Bytes(MAX_KEY_BYTES))
_SIGNATURE = ("signature", fields.Bytes(MAX_SIGNATURE_BYTES))
_RECORD = fields.Shape(
    kv.Record,
    ttypes.Record,
    (
        ("key", _RECORD_KEY),
        ("value", fields.Bytes(MAX_RECORD_VALUE_BYTES)),
        ("version", _COUNT),
        ("writer", _RING_ID),
        _SIGNER_KEY,
        _SIGNATURE,
    ),
)


def _member(python: type) -> str:
    """The union member that carries ``python``: its name in snake case (``FindSuccessorReply`` -> ...)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", python.__name__).lower()


def _table(*shapes: fields.Shape) -> dict[type, tuple[str, fields.Shape]]:
    """Each type and (its union member, its shape)."""
    return {shape.python: (_member(shape.python), shape) for shape in shapes}


def _shape(python: type, *members: tuple[str, fields.Kind]) -> fields.Shape:
    """The shape of ``python``, carried by the generated struct of the same name."""
    return fields.Shape(python, getattr(ttypes, python.__name__), members)


_REQUEST_ID = ("request_id", _COUNT)
_SEQ = ("seq", _COUNT)
_PREDECESSOR = ("predecessor", fields.Maybe(_PEER))

# Each RingMessage type and the union member that carries it.
_BODIES = _table(
    _shape(chord.FindSuccessor, _REQUEST_ID, ("key", _RING_ID), ("exclude_sender", _BOOL)),
    _shape(chord.FindSuccessorReply, _REQUEST_ID, ("peer", _PEER), ("final", _BOOL)),
    _shape(chord.GetNeighbours, _REQUEST_ID),
    _shape(chord.NeighboursReply, _REQUEST_ID, _PREDECESSOR, ("successors", _SUCCESSORS)),
    _shape(chord.Notify),
    _shape(chord.Ping, _REQUEST_ID),
    _shape(chord.Pong, _REQUEST_ID),
    _shape(chord.Leave, _PREDECESSOR, ("successors", _SUCCESSORS)),
    _shape(swim.Probe, _SEQ),
    _shape(swim.Ack, _SEQ),
    _shape(swim.ProbeRequest, _SEQ, ("target", _PEER)),
    _shape(swim.Nack, _SEQ),
    _shape(kv.PutRecord, _REQUEST_ID, ("record", _RECORD)),
    _shape(kv.PutReply, _REQUEST_ID, ("record", fields.Maybe(_RECORD)), ("error", fields.Text(MAX_ERROR_CHARS))),
    _shape(kv.GetRecord, _REQUEST_ID, ("key", _RECORD_KEY)),
    _shape(kv.GetReply, _REQUEST_ID, ("record", fields.Maybe(_RECORD))),
    _shape(kv.ReplicaDigest, ("entries", fields.ListOf(_DigestEntry(), MAX_DIGEST_ENTRIES))),
    _shape(kv.ReplicaWant, ("keys", fields.ListOf(_RECORD_KEY, MAX_DIGEST_ENTRIES))),
    _shape(kv.StoreReplicas, ("records", fields.ListOf(_RECORD, MAX_STORE_RECORDS))),
    _shape(
        direct.Direct,
        ("channel", fields.Text(direct.MAX_CHANNEL_CHARS, allow_empty=False)),
        ("body", fields.Bytes(direct.MAX_DIRECT_BYTES)),
    ),
)

# Each Piggyback type and the union member that carries it.
_PIGGYBACKS = _table(
    _shape(
        swim.MemberUpdate,
        ("peer", _PEER),
        ("status", fields.EnumOf(swim.MemberStatus, ttypes.MemberStatus)),
        ("incarnation", _COUNT),
        ("accuser", fields.Maybe(_PEER)),
        ("work", _COUNT),
        _SIGNER_KEY,
        _SIGNATURE,
    ),
    _shape(
        swim.GossipItem,
        ("section", fields.Text(MAX_SECTION_CHARS, allow_empty=False)),
        ("key", fields.Text(MAX_GOSSIP_KEY_CHARS)),
        ("payload", fields.Bytes(MAX_GOSSIP_PAYLOAD_BYTES)),
        ("publisher", _RING_ID),
        _SIGNER_KEY,
        _SIGNATURE,
    ),
)


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


def _union_to_thrift(value: Any, members: dict[type, tuple[str, fields.Shape]], wire: type, what: str) -> Any:
    entry = members.get(type(value))
    if entry is None:
        raise MalformedEnvelope(f"the ring codec cannot carry a {type(value).__name__} as {what}")
    member, shape = entry
    return wire(**{member: shape.to_wire(value)})


def _union_from_thrift(value: Any, shapes: Sequence[tuple[str, fields.Shape]], wire: type, field: str) -> Any:
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
        work=env.work,
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
        work=_COUNT.from_wire(t.work, "envelope.work"),
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


_SIZE_PROBE_SENDER = Peer(0, "127.0.0.1:1")
_EMPTY_ENVELOPE_BYTES = len(encode_envelope(Envelope(_SIZE_PROBE_SENDER, chord.Ping(0))))


@functools.lru_cache(maxsize=8192)
def piggyback_size(item: swim.Piggyback) -> int:
    """The bytes ``item`` adds to an envelope on the wire (exact: it is encoded once and cached)."""
    return len(encode_envelope(Envelope(_SIZE_PROBE_SENDER, chord.Ping(0), (item,)))) - _EMPTY_ENVELOPE_BYTES
