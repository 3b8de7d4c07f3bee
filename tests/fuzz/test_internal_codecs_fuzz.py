"""Fuzzing the internal wire: ring envelopes (Thrift binary), NodeTracker and block messages.

* ``ring_codec.decode_envelope`` over random bytes and over mutated encodings of random
  valid envelopes (every body and piggyback type): ``MalformedEnvelope``, or an envelope
  that the codec itself would send (it re-encodes, and decodes back to itself).
* ``tracker_codec`` and ``block_codec``'s ``*_from_thrift`` over random generated
  structs (fields missing or out of range; of the IDL's types, as Thrift's reader skips
  any other): a value, or ``MalformedMessage`` naming the field.
* The same decoders after the Thrift binary protocol read mutated bytes of a valid
  struct (what the NodeTracker's processor hands them): a value or ``MalformedMessage``.
* The tracker's connection (``TrackerConnection``, past its TLS handshake) fed random and
  mutated call frames: each answered, or the connection closed as undecodable; no
  failure logged.  The events' calls (``openFunctionCode``, ``callerKey``) again
  with a real function registry behind them, from a registered node.
* ``event_codec.decode_event`` (the events' ring channel) over mutated encodings of valid
  messages (an ``InvokeFunction`` with a caller assertion and a tick, a ``FunctionOutcome``)
  and over random ``EventMessage`` structs: ``MalformedEnvelope``, or a message the codec
  itself would send.
* The ring listener's connection (``RingServerConnection``, past TLS) fed length-prefixed
  streams cut anywhere: only envelopes from the certificate's ring id are delivered,
  anything else closes it, and no more than one frame is buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TTransport import TMemoryBuffer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.dht import chord_messages as chord
from cortex_rm.dht import direct_messages as direct
from cortex_rm.dht import kv_messages as kv
from cortex_rm.dht import swim_messages as swim
from cortex_rm.dht.envelope import Envelope
from cortex_rm.dht.peer import Peer
from cortex_rm.events.caller_assertions import CallerAssertion
from cortex_rm.events.outcomes import FunctionOutcome, InvokeFunction
from cortex_rm.internal import block_codec, event_codec, ring_codec, tracker_codec
from cortex_rm.internal.event_codec import CALLER_PROOF
from cortex_rm.internal.errors import MalformedEnvelope, MalformedMessage
from cortex_rm.internal.gen import NodeTracker as gen_service
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.ring_listener import RingServerConnection
from cortex_rm.internal.tracker_event_calls import caller_key_from_thrift
from cortex_rm.internal.tracker_server import FileSystemServices, TrackerCalls, TrackerConnection, TrackerServerFactory
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.refusal_log import RefusalLog
from cortex_rm.yarn.resource_tracker import NodeRegistration
from cortex_rm.yarn.resources import Resource
from tests.support.event_registry_rig import RegistryRig
from tests.fuzz.fuzzing import chunked, failures_logged, fuzz_settings, mutated
from tests.fuzz.messages import bounded_integers, thrift_structs

# --- valid envelopes ---------------------------------------------------------------------------

ring_ids = bounded_integers(0, 2**160 - 1)
counts = bounded_integers(0, 2**63 - 1)
addresses = st.builds(
    lambda host, port: f"{host}:{port}",
    st.sampled_from(["127.0.0.1", "node-7.example", "[::1]", "10.1.2.3", "h" * 250]),
    bounded_integers(1, 65535),
)
peers = st.builds(Peer, ring_ids, addresses)
peer_lists = st.lists(peers, max_size=4).map(tuple)
keys = st.text(min_size=1, max_size=20)
signer_keys = st.binary(max_size=120)
signatures = st.binary(max_size=80)
records = st.builds(kv.Record, keys, st.binary(max_size=40), counts, ring_ids, signer_keys, signatures)
BODY_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    chord.FindSuccessor: st.builds(chord.FindSuccessor, counts, ring_ids, st.booleans()),
    chord.FindSuccessorReply: st.builds(chord.FindSuccessorReply, counts, peers, st.booleans()),
    chord.GetNeighbours: st.builds(chord.GetNeighbours, counts),
    chord.NeighboursReply: st.builds(chord.NeighboursReply, counts, st.none() | peers, peer_lists),
    chord.Notify: st.builds(chord.Notify),
    chord.Ping: st.builds(chord.Ping, counts),
    chord.Pong: st.builds(chord.Pong, counts),
    chord.Leave: st.builds(chord.Leave, st.none() | peers, peer_lists),
    swim.Probe: st.builds(swim.Probe, counts),
    swim.Ack: st.builds(swim.Ack, counts),
    swim.ProbeRequest: st.builds(swim.ProbeRequest, counts, peers),
    swim.Nack: st.builds(swim.Nack, counts),
    kv.PutRecord: st.builds(kv.PutRecord, counts, records),
    kv.PutReply: st.builds(kv.PutReply, counts, st.none() | records, st.text(max_size=20)),
    kv.GetRecord: st.builds(kv.GetRecord, counts, keys),
    kv.GetReply: st.builds(kv.GetReply, counts, st.none() | records),
    kv.ReplicaDigest: st.builds(kv.ReplicaDigest, st.lists(st.tuples(keys, counts), max_size=3).map(tuple)),
    kv.ReplicaWant: st.builds(kv.ReplicaWant, st.lists(keys, max_size=3).map(tuple)),
    kv.StoreReplicas: st.builds(kv.StoreReplicas, st.lists(records, max_size=3).map(tuple)),
    direct.Direct: st.builds(direct.Direct, st.text(min_size=1, max_size=64), st.binary(max_size=256)),
}
bodies = st.one_of(*BODY_STRATEGIES.values())
piggybacks = st.one_of(
    st.builds(swim.MemberUpdate, peers, st.sampled_from(list(swim.MemberStatus)), counts, st.none() | peers),
    st.builds(swim.GossipItem, st.text(min_size=1, max_size=10), st.text(max_size=10), st.binary(max_size=40)),
)
envelopes = st.builds(Envelope, peers, bodies, st.lists(piggybacks, max_size=3).map(tuple), counts)
encodings = envelopes.map(ring_codec.encode_envelope)


def test_the_envelope_strategy_covers_every_body_type() -> None:
    """The fuzzer mutates encodings of every body type the codec carries (a new one must be added here)."""
    assert set(BODY_STRATEGIES) == ring_codec.supported_body_types()


def _decoded_or_malformed(data: bytes) -> None:
    try:
        env = ring_codec.decode_envelope(data)
    except MalformedEnvelope:
        return
    again = ring_codec.encode_envelope(env)  # what is accepted is what the codec would send
    assert ring_codec.decode_envelope(again) == env


@fuzz_settings(350)
@given(data=mutated(encodings, max_mutations=4))
def test_mutated_envelopes_decode_or_are_malformed(data: bytes) -> None:
    """A valid envelope with byte mutations: MalformedEnvelope, or an envelope the codec re-encodes."""
    _decoded_or_malformed(data)


@fuzz_settings(140)
@given(data=st.binary(max_size=200))
@example(data=b"\x80\x01\x00\x04\x00\x00\x00\x07deliver\x00\x00\x00\x00" + b"\x0c\x00\x01" * 2000).via(
    "structs nested past Python's stack"
)
def test_random_frames_decode_or_are_malformed(data: bytes) -> None:
    """Any bytes as a frame body: MalformedEnvelope or a re-encodable envelope."""
    _decoded_or_malformed(data)


@fuzz_settings(140)
@given(struct=thrift_structs(ttypes.Envelope, depth=4, wrong_types=True))
def test_any_decoded_envelope_struct_is_checked(struct: Any) -> None:
    """envelope_from_thrift over any struct (what a lenient Thrift decoder could produce): an Envelope
    the codec can send, or MalformedEnvelope."""
    try:
        env = ring_codec.envelope_from_thrift(struct)
    except MalformedEnvelope:
        return
    ring_codec.encode_envelope(env)


# --- NodeTracker and block messages -----------------------------------------------------------

DECODERS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "registration": (ttypes.NodeRegistration, tracker_codec.registration_from_thrift),
    "registration_answer": (ttypes.RegistrationResponse, tracker_codec.registration_answer_from_thrift),
    "status": (ttypes.NodeStatus, tracker_codec.status_from_thrift),
    "heartbeat_answer": (ttypes.HeartbeatResponse, tracker_codec.heartbeat_answer_from_thrift),
    "report": (ttypes.BlockReport, lambda t: block_codec.report_from_thrift(ttypes.NodeAddress("h", 1), t)),
    "commands": (ttypes.BlockCommands, block_codec.commands_from_thrift),
    "commit": (ttypes.WriteCommit, lambda t: block_codec.commit_from_thrift(ttypes.NodeAddress("h", 1), t)),
    "locations": (ttypes.BlockLocations, block_codec.locations_from_thrift),
    "source": (ttypes.LocalizationSource, block_codec.source_from_thrift),
    "image": (ttypes.RuntimeImage, block_codec.image_from_thrift),
    "target": (ttypes.AggregationTarget, block_codec.target_from_thrift),
    "node": (ttypes.NodeAddress, lambda t: block_codec.report_from_thrift(t, ttypes.BlockReport(True, [], [], 0))),
    "function": (ttypes.Record, lambda t: ring_codec._RECORD.from_wire(t, "function")),
    "caller": (ttypes.CallerKey, caller_key_from_thrift),
}

# Right types or absent: Thrift's generated reader skips a field whose wire type differs from the IDL's.
tracker_structs = st.sampled_from(sorted(DECODERS)).flatmap(
    lambda name: st.tuples(st.just(name), thrift_structs(DECODERS[name][0]))
)


@fuzz_settings(350)
@given(named=tracker_structs)
@example(
    named=("status", ttypes.NodeStatus(ttypes.NodeAddress("h", 1), 0, True, "", [ttypes.ContainerStatus("c", 1, 0)]))
)
def test_tracker_and_block_structs_decode_or_are_malformed(named: tuple[str, Any]) -> None:
    """Any generated struct (fields missing, out of range, lists too long...): a value or MalformedMessage."""
    name, struct = named
    try:
        DECODERS[name][1](struct)
    except MalformedMessage:
        pass


def _thrift_bytes(struct: Any) -> bytes:
    buffer = TMemoryBuffer()
    struct.write(TBinaryProtocol(buffer))
    return buffer.getvalue()


def _thrift_read(cls: type, data: bytes) -> Any:
    """What the NodeTracker's processor would hand the codec, or None when Thrift itself refuses the bytes."""
    struct = cls()
    try:
        struct.read(tracker_codec.PROTOCOL_FACTORY.getProtocol(TMemoryBuffer(data)))
    except Exception:  # noqa: BLE001 - EOF, Thrift's errors, bad UTF-8: the processor drops the call, not ours
        return None
    return struct


encoded_tracker_structs = st.sampled_from(sorted(DECODERS)).flatmap(
    lambda name: st.tuples(
        st.just(name), mutated(thrift_structs(DECODERS[name][0]).map(_thrift_bytes), max_mutations=2)
    )
)


@fuzz_settings(100)
@given(named=encoded_tracker_structs)
def test_mutated_tracker_messages_decode_or_are_malformed(named: tuple[str, bytes]) -> None:
    """Mutated Thrift bytes of a struct, read as the server reads them: a value or MalformedMessage."""
    name, data = named
    cls, decoder = DECODERS[name]
    struct = _thrift_read(cls, data)
    if struct is None:
        return
    try:
        decoder(struct)
    except MalformedMessage:
        pass


# --- the tracker's connection: frames through the generated processor -------------------------------


def _call_frame(method: str, *args: Any) -> bytes:
    """A NodeTracker call as the generated client writes it (strict binary protocol)."""
    out = TMemoryBuffer()
    client = gen_service.Client(out, tracker_codec.PROTOCOL_FACTORY)
    getattr(client, f"send_{method}")(*args)
    return out.getvalue()


REGISTRATION = ttypes.NodeRegistration(
    ttypes.NodeAddress("10.0.0.1", 45454), "10.0.0.1:8042", "/rack", ttypes.Capacity(4096, 4), 1000, "1", True, ""
)
STATUS = ttypes.NodeStatus(ttypes.NodeAddress("10.0.0.1", 45454), 0, True, "", [ttypes.ContainerStatus("c", 1, 0)])
VALID_CALLS = [
    _call_frame("registerNode", REGISTRATION),
    _call_frame("nodeHeartbeat", STATUS),
    _call_frame("blockReport", ttypes.NodeAddress("10.0.0.1", 45454), ttypes.BlockReport(True, [], [], 0)),
    _call_frame("openRuntimeImage", ttypes.NodeAddress("10.0.0.1", 45454)),
    _call_frame(
        "openFunctionCode", ttypes.NodeAddress("10.0.0.1", 45454),
        ttypes.Record("cortex:event:fn:hello", b"{}", 1, b"\x01" * 20, b"k", b"s"),
    ),
    _call_frame("callerKey", ttypes.NodeAddress("10.0.0.1", 45454), ttypes.CallerProof(
        b"AAAA", b"\x01" * 20, "POST", "10.0.0.1:8042", "/t", "0" * 64, 1, "a" * 32, b"s" * 32)),
]
NODE_ADDRESS = ttypes.NodeAddress("10.0.0.1", 45454)
event_call_frames = st.one_of(
    st.builds(lambda r: _call_frame("openFunctionCode", NODE_ADDRESS, r), thrift_structs(ttypes.Record)),
    st.builds(lambda t: _call_frame("callerKey", NODE_ADDRESS, t), thrift_structs(ttypes.CallerProof)),
)
tracker_frames = st.one_of(
    mutated(st.sampled_from(VALID_CALLS), max_mutations=3),
    st.builds(lambda r: _call_frame("registerNode", r), thrift_structs(ttypes.NodeRegistration)),
    st.builds(lambda s: _call_frame("nodeHeartbeat", s), thrift_structs(ttypes.NodeStatus)),
    event_call_frames,
    st.binary(max_size=60),
)


@fuzz_settings(140)
@given(frames=st.lists(tracker_frames, min_size=1, max_size=3))
@example(frames=[VALID_CALLS[0], VALID_CALLS[1]]).via("a registration and a heartbeat")
def test_tracker_frames_are_answered_or_close_the_connection(frames: list[bytes]) -> None:
    """Any frames on an authenticated tracker connection: answered (a result or NodeRefused), or the
    connection closed as undecodable; no failure logged."""
    nodes = NodeTable()
    tracker = NodeTracker(nodes, Clock(), nm_expiry_ms=10_000, rm_identifier=1)
    connection = TrackerConnection()
    connection.factory = TrackerServerFactory(tracker, None, Clock())
    connection.processor = gen_service.Processor(TrackerCalls(tracker, "a" * 64, "10.0.0.1:50000"))
    transport = StringTransport()
    connection.makeConnection(transport)
    with failures_logged() as logged:
        for frame in frames:
            if transport.disconnecting:
                break
            connection.stringReceived(frame)
    assert not logged, logged[0]


@fuzz_settings(60)
@given(frames=st.lists(st.one_of(event_call_frames, mutated(st.sampled_from(VALID_CALLS[-2:]), max_mutations=3)),
                       min_size=1, max_size=3))  # fmt: skip
@example(frames=[VALID_CALLS[-1], VALID_CALLS[-2]]).via("a token and a record that are not valid")
def test_event_calls_with_a_registry_are_answered_or_close_the_connection(frames: list[bytes]) -> None:
    """The events' calls from a registered node, a real registry behind them: answered (a result or
    one of the IDL's refusals), or the connection closed as undecodable; no failure logged."""
    rig = RegistryRig()
    tracker = NodeTracker(NodeTable(), rig.clock, nm_expiry_ms=10_000, rm_identifier=1)
    registration = NodeRegistration(NodeId("10.0.0.1", 45454), "10.0.0.1:8042", "/r", Resource(4096, 4), 1000)
    tracker.register(registration, "a" * 64)
    fs = FileSystemServices(rig.name_node, events=rig.events)
    calls = TrackerCalls(tracker, "a" * 64, "10.0.0.1:50000", 0x1234, fs=fs)
    connection = TrackerConnection()
    connection.factory = TrackerServerFactory(tracker, None, rig.clock)
    connection.processor = gen_service.Processor(calls)
    transport = StringTransport()
    connection.makeConnection(transport)
    with failures_logged() as logged:
        alice = rig.signed(rig.token_proto("alice"), 0x1234, "10.0.0.1:8042")  # (the connection's ring id, its web)
        for frame in [_call_frame("callerKey", NODE_ADDRESS, CALLER_PROOF.to_wire(alice)), *frames]:  # one answered
            if transport.disconnecting:
                break
            connection.stringReceived(frame)
    assert not logged, logged[0]
    assert b"alice" in transport.value()  # the first call's assertion


# --- the events' ring channel ------------------------------------------------------------------------

callers = st.builds(
    CallerAssertion, st.text(min_size=1, max_size=12), ring_ids, counts, counts, st.binary(max_size=16), signer_keys,
    signatures,
)
event_messages = st.one_of(
    st.builds(InvokeFunction, counts, st.text(min_size=1, max_size=20), records, st.binary(max_size=40), counts,
              st.none() | callers, st.none() | counts),  # fmt: skip
    st.builds(FunctionOutcome, counts, st.text(min_size=1, max_size=20), st.sampled_from(["success", "busy", "refused"]),
              st.binary(max_size=20), st.text(max_size=20), st.binary(max_size=20), counts, st.booleans(), signer_keys,
              signatures),  # fmt: skip
)


def _event_decoded_or_malformed(data: bytes) -> None:
    try:
        message = event_codec.decode_event(data)
    except MalformedEnvelope:
        return
    assert event_codec.decode_event(event_codec.encode_event(message)) == message


@fuzz_settings(200)
@given(data=mutated(event_messages.map(event_codec.encode_event), max_mutations=4))
def test_mutated_event_messages_decode_or_are_malformed(data: bytes) -> None:
    """A valid events body (caller assertions and ticks included) with byte mutations: MalformedEnvelope, or a
    message the codec re-encodes."""
    _event_decoded_or_malformed(data)


@fuzz_settings(140)
@given(struct=thrift_structs(ttypes.EventMessage, depth=4, wrong_types=True))
def test_any_decoded_event_struct_is_checked(struct: Any) -> None:
    """The events' checks over any EventMessage struct: a message the codec can send, or MalformedEnvelope."""
    try:
        message = event_codec._from_thrift(struct)
    except MalformedEnvelope:
        return
    event_codec.encode_event(message)


# --- the ring listener's connection: length-prefixed frames ------------------------------------------

SENDER = Peer(0x1234, "10.0.0.5:7000")


class StubListener:
    """What a RingServerConnection needs of its RingListener: a clock, timeouts, and delivery."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.connect_timeout = 10.0
        self.idle_timeout = 30.0
        self._incoming: set[Any] = set()
        self.delivered: list[Envelope] = []
        self.refusals = RefusalLog(Logger(), "", 10.0, self.clock, what="the ring listener")

    def _deliver(self, envelope: Envelope) -> None:
        self.delivered.append(envelope)


sender_encodings = st.builds(Envelope, st.just(SENDER), bodies, st.lists(piggybacks, max_size=2).map(tuple), counts).map(
    ring_codec.encode_envelope
)
ring_streams = st.lists(
    st.one_of(
        sender_encodings.map(lambda e: len(e).to_bytes(4, "big") + e),
        mutated(sender_encodings.map(lambda e: len(e).to_bytes(4, "big") + e), max_mutations=2),
        encodings.map(lambda e: len(e).to_bytes(4, "big") + e),  # another sender than the certificate's
        st.binary(max_size=24),
    ),
    min_size=1,
    max_size=4,
).map(b"".join)


@fuzz_settings(140)
@given(stream=ring_streams, cuts=st.lists(st.integers(0, 1 << 12), max_size=5))
@example(stream=b"\x7f\xff\xff\xff" + b"\x00" * 10, cuts=[]).via("a length over the frame bound")
def test_ring_connections_deliver_only_checked_envelopes_or_close(stream: bytes, cuts: list[int]) -> None:
    """Any bytes on an authenticated ring connection, cut anywhere: only envelopes from the certificate's
    ring id are delivered; anything else closes the connection; no failure logged; at most one frame
    buffered."""
    listener = StubListener()
    connection = RingServerConnection(listener)  # type: ignore[arg-type]
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.peer_id = SENDER.node_id  # what the TLS handshake would have set from the certificate
    with failures_logged() as logged:
        for chunk in chunked(stream, cuts):
            connection.dataReceived(chunk)
            assert len(connection._unprocessed) <= ring_codec.MAX_FRAME_BYTES + 4
    assert not logged, logged[0]
    assert all(envelope.sender == SENDER for envelope in listener.delivered)
    if connection.closing:
        assert transport.disconnected  # aborted, not waiting for a clean close
