"""Ring envelopes to bytes and back: every message type round-trips, every rule is checked on the way in.

The coverage tests enumerate the ``RingMessage`` and ``Piggyback`` unions with
``typing.get_args``, so a message type (or a field) added to the cores without
codec and IDL support fails here, naming it.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport.TTransport import TMemoryBuffer
from zope.interface import implementer

from cortex_rm.dht import chord_messages as chord
from cortex_rm.dht import direct_messages as direct
from cortex_rm.dht import kv_messages as kv
from cortex_rm.dht import swim_messages as swim
from cortex_rm.dht.envelope import Envelope, RingMessage
from cortex_rm.dht.peer import Peer
from cortex_rm.internal import ring_codec as codec
from cortex_rm.internal.errors import InternalRpcError, MalformedEnvelope
from cortex_rm.internal.gen import RingService, ttypes
from cortex_rm.internal.thrift_fields import MAX_ADDRESS_CHARS

BODY_TYPES = typing.get_args(RingMessage)
PIGGYBACK_TYPES = typing.get_args(swim.Piggyback)

# ------------------------------------------------------------- strategies

ring_ids = st.integers(0, 2**160 - 1)
counts = st.integers(0, 2**63 - 1)
hosts = st.sampled_from(["127.0.0.1", "node-7.example", "[::1]", "10.1.2.3"])
addresses = st.builds(lambda h, p: f"{h}:{p}", hosts, st.integers(1, 65535))
peers = st.builds(Peer, ring_ids, addresses)
successor_lists = st.lists(peers, max_size=8).map(tuple)
record_keys = st.text(min_size=1, max_size=40)
values = st.binary(max_size=200)
keys = st.binary(max_size=120)
signatures = st.binary(max_size=80)
records = st.builds(kv.Record, record_keys, values, counts, ring_ids, keys, signatures)

# Known fields get strategies that respect the bounds; a field added later is
# filled by st.builds from its annotation, so the round trip exposes a codec
# that drops it (or the bounds check that refuses it).
STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    chord.FindSuccessor: st.builds(chord.FindSuccessor, request_id=counts, key=ring_ids),
    chord.FindSuccessorReply: st.builds(chord.FindSuccessorReply, request_id=counts, peer=peers, final=st.booleans()),
    chord.GetNeighbours: st.builds(chord.GetNeighbours, request_id=counts),
    chord.NeighboursReply: st.builds(
        chord.NeighboursReply, request_id=counts, predecessor=st.none() | peers, successors=successor_lists
    ),
    chord.Notify: st.builds(chord.Notify),
    chord.Ping: st.builds(chord.Ping, request_id=counts),
    chord.Pong: st.builds(chord.Pong, request_id=counts),
    chord.Leave: st.builds(chord.Leave, predecessor=st.none() | peers, successors=successor_lists),
    swim.Probe: st.builds(swim.Probe, seq=counts),
    swim.Ack: st.builds(swim.Ack, seq=counts),
    swim.ProbeRequest: st.builds(swim.ProbeRequest, seq=counts, target=peers),
    swim.Nack: st.builds(swim.Nack, seq=counts),
    kv.PutRecord: st.builds(kv.PutRecord, request_id=counts, record=records),
    kv.PutReply: st.builds(kv.PutReply, request_id=counts, record=st.none() | records, error=st.text(max_size=50)),
    kv.GetRecord: st.builds(kv.GetRecord, request_id=counts, key=record_keys),
    kv.GetReply: st.builds(kv.GetReply, request_id=counts, record=st.none() | records),
    kv.ReplicaDigest: st.builds(
        kv.ReplicaDigest, entries=st.lists(st.tuples(record_keys, counts), max_size=10).map(tuple)
    ),
    kv.ReplicaWant: st.builds(kv.ReplicaWant, keys=st.lists(record_keys, max_size=10).map(tuple)),
    kv.StoreReplicas: st.builds(kv.StoreReplicas, records=st.lists(records, max_size=5).map(tuple)),
    direct.Direct: st.builds(direct.Direct, channel=st.text(min_size=1, max_size=64), body=st.binary(max_size=512)),
    swim.MemberUpdate: st.builds(
        swim.MemberUpdate,
        peer=peers,
        status=st.sampled_from(swim.MemberStatus),
        incarnation=counts,
        accuser=st.none() | peers,
        work=counts,
        signer_key=keys,
        signature=signatures,
    ),
    swim.GossipItem: st.builds(
        swim.GossipItem,
        section=st.text(min_size=1, max_size=20),
        key=st.text(max_size=30),
        payload=values,
        publisher=ring_ids,
        signer_key=keys,
        signature=signatures,
    ),
}
bodies = st.one_of([STRATEGIES[t] for t in BODY_TYPES if t in STRATEGIES])
piggybacks = st.one_of([STRATEGIES[t] for t in PIGGYBACK_TYPES if t in STRATEGIES])
envelopes = st.builds(Envelope, peers, bodies, st.lists(piggybacks, max_size=6).map(tuple), counts)

PEER = Peer(0xABC << 140, "node-1.example:7000")
OTHER = Peer(42, "127.0.0.1:7001")
RECORD = kv.Record("k", b"v", 3, OTHER.node_id)
T_RECORD = ttypes.Record("k", b"v", 3, b"\x00" * 20, b"", b"")


def round_trip(env: Envelope) -> Envelope:
    return codec.decode_envelope(codec.encode_envelope(env))


# ------------------------------------------------------------- coverage of the unions


@pytest.mark.parametrize("message_type", BODY_TYPES + PIGGYBACK_TYPES, ids=lambda t: t.__name__)
def test_every_union_type_has_codec_support_and_a_strategy(message_type: type) -> None:
    """Each RingMessage and Piggyback type is carried by the codec, and these tests generate it."""
    supported = codec.supported_body_types() | codec.supported_piggyback_types()
    assert message_type in supported, f"ring_codec cannot carry {message_type.__name__}: add it to the IDL and codec"
    assert message_type in STRATEGIES, f"add a strategy for {message_type.__name__} to test_ring_codec.STRATEGIES"


def test_codec_carries_nothing_outside_the_unions() -> None:
    """The codec's tables are exactly the unions (a type removed from the cores goes from the codec too)."""
    assert codec.supported_body_types() == frozenset(BODY_TYPES)
    assert codec.supported_piggyback_types() == frozenset(PIGGYBACK_TYPES)


@pytest.mark.parametrize("message_type", BODY_TYPES + PIGGYBACK_TYPES, ids=lambda t: t.__name__)
def test_dataclass_codec_and_idl_fields_agree(message_type: type) -> None:
    """The dataclass's fields, the fields the codec carries and the IDL struct's fields are the same names."""
    python = tuple(f.name for f in dataclasses.fields(message_type))
    idl = tuple(spec[2] for spec in getattr(ttypes, message_type.__name__).thrift_spec if spec is not None)
    assert set(codec.wire_fields(message_type)) == set(python), "ring_codec misses or invents a field"
    assert set(idl) == set(python), "cortex.thrift misses or invents a field"


# ------------------------------------------------------------- round trips


@pytest.mark.parametrize("message_type", BODY_TYPES + PIGGYBACK_TYPES, ids=lambda t: t.__name__)
def test_each_message_type_round_trips(message_type: type) -> None:
    """Any valid message of each type, as a body or a piggyback item, survives encode -> decode."""

    # (hypothesis inside: pytest-twisted's wrapper does not mix with @given on a parametrized test)
    @settings(max_examples=30, deadline=None)
    @given(message=STRATEGIES[message_type], sender=peers)
    def check(message: Any, sender: Peer) -> None:
        if message_type in PIGGYBACK_TYPES:
            env = Envelope(sender, chord.Notify(), (message,))
        else:
            env = Envelope(sender, message)
        assert round_trip(env) == env

    check()


@settings(max_examples=200, deadline=None)
@given(envelopes)
def test_any_envelope_round_trips(env: Envelope) -> None:
    """Whole envelopes (any body, any mix of rumours) survive encode -> decode."""
    assert round_trip(env) == env


def test_bounds_themselves_are_accepted() -> None:
    """Values exactly at each bound go through (the checks are <=, not <)."""
    big_record = kv.Record("k" * codec.MAX_RECORD_KEY_CHARS, b"v" * codec.MAX_RECORD_VALUE_BYTES, 2**63 - 1, 2**160 - 1,
                           b"K" * codec.MAX_KEY_BYTES, b"S" * codec.MAX_SIGNATURE_BYTES)
    big = kv.PutRecord(2**63 - 1, big_record)
    top = Peer(2**160 - 1, "h" * (MAX_ADDRESS_CHARS - 6) + ":65535")
    env = Envelope(top, big, (swim.GossipItem("s" * codec.MAX_SECTION_CHARS, "", b"p"),) * codec.MAX_PIGGYBACK)
    assert round_trip(env) == env
    many = Envelope(PEER, chord.Leave(None, (OTHER,) * codec.MAX_SUCCESSORS))
    assert round_trip(many) == many
    digest = Envelope(PEER, kv.ReplicaDigest((("k", 1),) * codec.MAX_DIGEST_ENTRIES))
    assert round_trip(digest) == digest


def test_generated_client_and_processor_speak_the_same_wire() -> None:
    """A frame from the generated RingService.Client decodes here; ours is accepted by the generated Processor."""
    update = swim.MemberUpdate(OTHER, swim.MemberStatus.DEAD, 2)
    env = Envelope(PEER, chord.NeighboursReply(9, OTHER, (OTHER, PEER)), (update,))
    out = TMemoryBuffer()
    client = RingService.Client(out, codec.PROTOCOL_FACTORY)
    client.deliver(codec.envelope_to_thrift(env))
    assert codec.decode_envelope(out.getvalue()) == env

    delivered: list[Any] = []

    @implementer(RingService.Iface)
    class Handler:
        def deliver(self, envelope: Any) -> None:
            delivered.append(envelope)

    processor = RingService.Processor(Handler())
    processor.process(TBinaryProtocol(TMemoryBuffer(codec.encode_envelope(env))), TBinaryProtocol(TMemoryBuffer()))
    assert [codec.envelope_from_thrift(t) for t in delivered] == [env]


def test_malformed_envelope_is_an_internal_rpc_error() -> None:
    """MalformedEnvelope belongs to the internal RPC's error family (and is a ValueError)."""
    assert issubclass(MalformedEnvelope, InternalRpcError) and issubclass(MalformedEnvelope, ValueError)


# ------------------------------------------------------------- validation on decode


def raw_frame(t: Any, name: str = "deliver", kind: int = TMessageType.ONEWAY) -> bytes:
    """A frame body holding the Thrift Envelope ``t`` as is: no checks, as a hostile peer would write it."""
    out = TMemoryBuffer()
    protocol = TBinaryProtocol(out, strictWrite=True)
    protocol.writeMessageBegin(name, kind, 0)
    RingService.deliver_args(envelope=t).write(protocol)
    protocol.writeMessageEnd()
    return out.getvalue()


def mutated(body: RingMessage, change: Callable[[Any], None], piggyback: tuple[Any, ...] = ()) -> bytes:
    """The frame of an envelope from PEER carrying ``body``, with ``change`` applied to its Thrift form."""
    t = codec.envelope_to_thrift(Envelope(PEER, body, piggyback))
    change(t)
    return raw_frame(t)


def setter(path: str, value: Any) -> Callable[[Any], None]:
    """A change setting the attribute at dotted ``path`` (list indexes as numbers) to ``value``."""

    def change(t: Any) -> None:
        *parents, last = path.split(".")
        for p in parents:
            t = t[int(p)] if p.isdecimal() else getattr(t, p)
        setattr(t, last, value)

    return change


UPDATE = swim.MemberUpdate(OTHER, swim.MemberStatus.SUSPECT, 1, PEER)
GOSSIP = swim.GossipItem("capacity", "node-1", b"{}")
NEIGHBOURS = chord.NeighboursReply(1, OTHER, (OTHER,))
PING = chord.Ping(1)
NOTIFY = chord.Notify()
T_PEER = ttypes.Peer(b"\x00" * 20, "h:1")
T_ENTRY = ttypes.DigestEntry("k", 1)
T_GOSSIP = ttypes.Piggyback(gossip_item=ttypes.GossipItem("s", "k", b"", b"\x00" * 20, b"", b""))


def case(name: str, body: RingMessage, path: str, value: Any, match: str, piggyback: tuple[Any, ...] = ()) -> Any:
    """A test case: the frame of ``body`` with the field at ``path`` set to ``value``, and the error expected."""
    return pytest.param(mutated(body, setter(path, value), piggyback), match, id=name)


@pytest.mark.parametrize(
    "frame, match",
    [
        case("no-body", PING, "body.ping", None, "exactly one member set, not none"),
        case("two-bodies", PING, "body.pong", ttypes.Pong(request_id=1), "exactly one member set, not ping, pong"),
        case("no-sender", PING, "sender", None, "envelope.sender must be a Peer"),
        case("id-19", PING, "sender.node_id", b"\x01" * 19, "sender.node_id must be 20 bytes, not 19"),
        case("id-21", PING, "sender.node_id", b"\x01" * 21, "not 21 bytes"),
        case("key-id", chord.FindSuccessor(1, 5), "body.find_successor.key", b"", "find_successor.key must be 20"),
        case("writer-id", kv.GetReply(1, RECORD), "body.get_reply.record.writer", b"\0" * 8, "writer must be 20"),
        case("no-port", PING, "sender.address", "node-1.example", "must be host:port"),
        case("port-0", PING, "sender.address", "node:0", "must be host:port"),
        case("port-big", PING, "sender.address", "node:70000", "must be host:port"),
        case("no-host", PING, "sender.address", ":7000", "must be host:port"),
        case("space", PING, "sender.address", "a b:7000", "must be host:port"),
        case("long-address", PING, "sender.address", "h" * 300 + ":1", "longer than 300"),
        case("successor-address", NEIGHBOURS, "body.neighbours_reply.successors.0.address", "x", r"successors\[0\]"),
        case("successors-65", NEIGHBOURS, "body.neighbours_reply.successors", [T_PEER] * 65, "65 entries, more than"),
        case("no-successors", chord.Leave(None, ()), "body.leave.successors", None, "successors must be a list"),
        case("negative-request-id", PING, "body.ping.request_id", -1, r"request_id must be an integer in \[0"),
        case("missing-request-id", PING, "body.ping.request_id", None, "request_id must be an integer"),
        case("negative-seq", swim.Probe(1), "body.probe.seq", -5, "probe.seq"),
        case("negative-version", kv.GetReply(1, RECORD), "body.get_reply.record.version", -1, "record.version"),
        case("negative-incarnation", NOTIFY, "piggyback.0.member_update.incarnation", -1, "incarnation", (UPDATE,)),
        case("unknown-status", NOTIFY, "piggyback.0.member_update.status", 99, "unknown MemberStatus 99", (UPDATE,)),
        case("accuser-id", NOTIFY, "piggyback.0.member_update.accuser.node_id", b"", "accuser.node_id", (UPDATE,)),
        case("piggyback-257", NOTIFY, "piggyback", [T_GOSSIP] * 257, "257 items, more than 256"),
        case("empty-piggyback", NOTIFY, "piggyback.0.member_update", None, "exactly one member set", (UPDATE,)),
        case("empty-section", NOTIFY, "piggyback.0.gossip_item.section", "", "must not be empty", (GOSSIP,)),
        case("long-section", NOTIFY, "piggyback.0.gossip_item.section", "s" * 65, "longer than 64", (GOSSIP,)),
        case("long-gossip-key", NOTIFY, "piggyback.0.gossip_item.key", "k" * 257, "longer than 256", (GOSSIP,)),
        case("big-payload", NOTIFY, "piggyback.0.gossip_item.payload", b"p" * 8193, "longer than 8192", (GOSSIP,)),
        case("long-record-key", kv.GetRecord(1, "k"), "body.get_record.key", "k" * 257, "key is longer than 256"),
        case("empty-record-key", kv.GetRecord(1, "k"), "body.get_record.key", "", "key must not be empty"),
        case("big-value", kv.PutRecord(1, RECORD), "body.put_record.record.value", b"v" * 65537, "longer than 65536"),
        case("big-signature", kv.PutRecord(1, RECORD), "body.put_record.record.signature", b"s" * 161, "longer than 160"),
        case("big-signer-key", NOTIFY, "piggyback.0.member_update.signer_key", b"k" * 513, "longer than 512", (UPDATE,)),
        case("negative-work", NOTIFY, "work", -1, "work"),
        case("long-error", kv.PutReply(1, None, ""), "body.put_reply.error", "e" * 1025, "longer than 1024"),
        # beyond 2048 entries Thrift's own container limit refuses the list before we see it
        case("digest-2049", kv.ReplicaDigest(()), "body.replica_digest.entries", [T_ENTRY] * 2049, "2048"),
        case("digest-version", kv.ReplicaDigest((("k", 1),)), "body.replica_digest.entries.0.version", -1, "version"),
        case("want-2049", kv.ReplicaWant(()), "body.replica_want.keys", ["k"] * 2049, "2048"),
        case("store-1025", kv.StoreReplicas(()), "body.store_replicas.records", [T_RECORD] * 1025, "more than 1024"),
    ],
)
def test_decode_refuses_what_breaks_the_rules(frame: bytes, match: str) -> None:
    """Each broken rule raises MalformedEnvelope naming the field."""
    with pytest.raises(MalformedEnvelope, match=match):
        codec.decode_envelope(frame)


# ------------------------------------------------------------- garbage


GOOD = codec.encode_envelope(Envelope(PEER, NEIGHBOURS, (UPDATE, GOSSIP)))


PING_T = codec.envelope_to_thrift(Envelope(PEER, PING))


@pytest.mark.parametrize(
    "frame, match",
    [
        pytest.param(b"", "undecodable", id="empty"),
        pytest.param(b"\xff" * 12, "undecodable", id="ff"),
        pytest.param(GOOD + b"\x00", "1 bytes follow the envelope", id="trailing"),
        pytest.param(GOOD[:-1], "undecodable", id="truncated"),
        pytest.param(raw_frame(PING_T, name="steal"), "oneway 'deliver' call, not 'steal'", id="other-call"),
        pytest.param(raw_frame(PING_T, kind=TMessageType.CALL), "of type 1", id="not-oneway"),
        pytest.param(raw_frame(None), "the envelope is missing", id="no-envelope"),
        pytest.param(b"x" * (codec.MAX_FRAME_BYTES + 1), "exceeds", id="too-big"),
    ],
)
def test_garbage_frames_raise_malformed_envelope(frame: bytes, match: str) -> None:
    """Bytes that are not one deliver call raise MalformedEnvelope, and nothing else."""
    with pytest.raises(MalformedEnvelope, match=match):
        codec.decode_envelope(frame)


def test_invalid_utf8_in_a_string_is_malformed() -> None:
    """A string field whose bytes are not UTF-8 raises MalformedEnvelope."""
    frame = GOOD.replace(b"node-1.example:7000", b"node-1.exampl\xff:7000")
    with pytest.raises(MalformedEnvelope, match="undecodable"):
        codec.decode_envelope(frame)


def test_deeply_nested_unknown_fields_are_malformed() -> None:
    """A frame nesting unknown structs 100,000 deep (Thrift skips them recursively) raises MalformedEnvelope."""
    header = GOOD[: GOOD.index(b"deliver") + len(b"deliver") + 4]
    nested = struct.pack("!bh", TType.STRUCT, 99) * 100_000
    with pytest.raises(MalformedEnvelope, match="undecodable"):
        codec.decode_envelope(header + nested)


def test_every_prefix_of_a_frame_is_malformed() -> None:
    """A frame cut anywhere short raises MalformedEnvelope."""
    for end in range(len(GOOD)):
        with pytest.raises(MalformedEnvelope):
            codec.decode_envelope(GOOD[:end])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_to_malformed_envelope_only(data: bytes) -> None:
    """Random bytes never raise anything but MalformedEnvelope."""
    try:
        codec.decode_envelope(data)
    except MalformedEnvelope:
        pass


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, len(GOOD) - 1), byte=st.integers(0, 255))
def test_a_corrupted_byte_yields_an_envelope_or_malformed_envelope(position: int, byte: int) -> None:
    """Any single corrupted byte of a valid frame decodes to a valid envelope or raises MalformedEnvelope."""
    frame = GOOD[:position] + bytes([byte]) + GOOD[position + 1 :]
    try:
        env = codec.decode_envelope(frame)
    except MalformedEnvelope:
        return
    assert round_trip(env) == env


# ------------------------------------------------------------- encode refuses what decode would


@dataclasses.dataclass(frozen=True)
class Gossip:
    """A message type no union knows."""

    text: str


@pytest.mark.parametrize(
    "env, match",
    [
        pytest.param(Envelope(Peer(2**160, "h:1"), chord.Ping(1)), "ring id must be an integer", id="id-too-big"),
        pytest.param(Envelope(Peer(-1, "h:1"), chord.Ping(1)), "ring id must be an integer", id="negative-id"),
        pytest.param(Envelope(PEER, chord.Ping(-1)), "request_id", id="negative-request-id"),
        pytest.param(Envelope(PEER, chord.Ping(2**63)), "request_id", id="request-id-beyond-i64"),
        pytest.param(Envelope(PEER, Gossip("x")), "cannot carry a Gossip", id="unknown-type"),  # type: ignore
        pytest.param(Envelope(PEER, NOTIFY, (Gossip("x"),)), "cannot carry", id="bad-piggyback"),  # type: ignore
        pytest.param(Envelope(Peer(1, "nohost"), chord.Notify()), "host:port", id="bad-address"),
        pytest.param(Envelope(PEER, kv.ReplicaDigest((("k",),))), "cannot encode", id="bad-digest"),  # type: ignore
        pytest.param(
            Envelope(PEER, kv.StoreReplicas((kv.Record("k", b"v" * 65536, 1, 1),) * 17)),
            "exceeds the 1048576-byte frame",
            id="frame-too-big",
        ),
    ],
)
def test_encode_refuses_what_the_receiver_would(env: Envelope, match: str) -> None:
    """encode_envelope raises MalformedEnvelope instead of writing a frame the receiver would refuse."""
    with pytest.raises(MalformedEnvelope, match=match):
        codec.encode_envelope(env)
