"""The events' records: registrations (FunctionSpec), activations and their store, and the events' wire codec."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cortex_rm.dht.kv_messages import Record
from cortex_rm.events.activations import Activation, ActivationStore, StoreFull, entry_prefix, new_activation_id
from cortex_rm.events.activation_signing import activation_signed_bytes
from cortex_rm.events.functions import FunctionLimits, FunctionSpec, InvalidFunction, function_key
from cortex_rm.events.outcomes import FunctionOutcome, InvokeFunction
from cortex_rm.internal.errors import MalformedEnvelope
from cortex_rm.internal.event_codec import decode_event, encode_event

SPEC = FunctionSpec("resize", "alice", 3, "/user/alice/f.py", 120, 1_700_000_000_000, grants=frozenset({"bob"}))


def test_a_registration_survives_its_json() -> None:
    """encode/decode and to_json/from_json are inverses; the key is the name's."""
    assert FunctionSpec.decode(SPEC.encode()) == SPEC
    assert SPEC.key == function_key("resize") == "cortex:event:fn:resize"
    assert SPEC.may_trigger("alice") and SPEC.may_trigger("bob") and not SPEC.may_trigger("eve") and not SPEC.may_trigger(None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "../x"}, "name"),
        ({"version": 0}, "version"),
        ({"code_path": "relative.py"}, "code_path"),
        ({"code_kind": "jar"}, "code_kind"),
        ({"handler": "os.system; x"}, "handler"),
        ({"code_kind": "zip", "handler": "handler"}, "module.function"),
        ({"replicas": 8}, "replicas"),
        ({"mode": "quorum"}, "mode"),
        ({"grants": frozenset({"a b"})}, "grants"),
    ],
)
def test_a_bad_registration_names_its_field(change: dict[str, object], field: str) -> None:
    data = {**SPEC.__dict__, **change}
    with pytest.raises(InvalidFunction, match=field):
        FunctionSpec(**data)  # type: ignore[arg-type]


def test_limits_are_bounded() -> None:
    with pytest.raises(InvalidFunction, match="memory_mb"):
        FunctionLimits(memory_mb=10**6)
    with pytest.raises(InvalidFunction, match="timeout_s"):
        FunctionLimits(timeout_s=0)


@given(st.binary(max_size=200))
def test_garbage_is_never_a_registration(data: bytes) -> None:
    """Anything that is not a registration's JSON raises InvalidFunction, nothing else."""
    try:
        FunctionSpec.decode(data)
    except InvalidFunction:
        pass


def test_decode_refuses_wrong_types_inside_json() -> None:
    doc = json.loads(SPEC.encode())
    doc["limits"]["memoryMb"] = "lots"
    with pytest.raises(InvalidFunction, match="memory_mb"):
        FunctionSpec.decode(json.dumps(doc).encode())
    doc = json.loads(SPEC.encode())
    doc["grants"] = [["x"]]
    with pytest.raises(InvalidFunction):
        FunctionSpec.decode(json.dumps(doc).encode())


def test_activation_ids_name_their_entry_node() -> None:
    aid = new_activation_id(0xABCDEF0123456789 << 96, "00112233aabbccdd")
    assert aid == "abcdef012345-00112233aabbccdd"
    assert entry_prefix(aid) == "abcdef012345"
    assert entry_prefix("nope") is None and entry_prefix("abcdef012345-zz112233aabbccdd") is None


def _activation(n: int, start: int = 0) -> Activation:
    return Activation(f"{n:012x}-{n:016x}", "f", 1, "alice", "alice", "first", 1, 1, start)


def test_the_store_keeps_ended_activations_for_the_retention_only() -> None:
    store = ActivationStore(retention_ms=1000, max_count=10)
    a = _activation(1)
    store.add(a, 0)
    a.status, a.end_ms = "success", 100
    store.ended(a)
    assert store.get(a.activation_id, 1099) is a
    assert store.get(a.activation_id, 1100) is None and len(store) == 0


def test_the_store_evicts_the_oldest_ended_and_refuses_when_only_running_ones_are_left() -> None:
    store = ActivationStore(max_count=2)
    first, second = _activation(1), _activation(2)
    store.add(first, 0)
    store.add(second, 0)
    with pytest.raises(StoreFull):
        store.add(_activation(3), 0)
    first.status, first.end_ms = "success", 1
    store.ended(first)
    store.add(_activation(3), 2)
    assert store.get(first.activation_id, 2) is None and store.get(second.activation_id, 2) is second


def test_the_store_bounds_the_bytes_of_results_and_logs() -> None:
    store = ActivationStore(max_bytes=1000)
    kept = []
    for n in range(5):
        a = _activation(n)
        store.add(a, 0)
        a.status, a.end_ms, a.logs = "success", n, b"x" * 400
        store.ended(a)
        kept.append(a)
    assert [a for a in kept if store.get(a.activation_id, 10) is not None] == kept[-2:]


def _run_by(n: int, caller: str, owner: str = "alice") -> Activation:
    return Activation(f"{n:012x}-{n:016x}", "f", 1, caller, owner, "first", 1, 1, 0)


def _end(store: ActivationStore, a: Activation, now_ms: int = 1) -> None:
    a.status, a.end_ms = "success", now_ms
    store.ended(a)


def test_the_store_bounds_each_user_s_running_activations() -> None:
    """A user at the per-user bound is refused, naming the bound, while another user is not; a scheduled tick (no
    caller) counts as its owner's; an ended activation frees its user's room."""
    store = ActivationStore(max_running_per_user=2)
    mallory = [_run_by(n, "mallory") for n in range(2)]
    for a in mallory:
        store.add(a, 0)
    with pytest.raises(StoreFull, match=r"mallory has 2 activations running on this node, the most one user may \(2\)"):
        store.add(_run_by(2, "mallory"), 0)
    store.add(_run_by(3, "bob"), 0)
    with pytest.raises(StoreFull, match="mallory has 2"):
        store.add(_run_by(4, "", owner="mallory"), 0)  # her function's scheduled tick
    _end(store, mallory[0])
    store.add(_run_by(5, "mallory"), 1)
    assert store.running == 3


def test_the_store_bounds_the_bytes_running_activations_hold() -> None:
    """Triggers whose events would pass the running bound together are refused, naming it; an ended activation gives
    its bytes back; one activation alone is never refused for its size."""
    store = ActivationStore(max_running_bytes=1000)
    first = _run_by(1, "alice")
    store.add(first, 0, held_bytes=600)
    store.add(_run_by(2, "bob"), 0, held_bytes=400)
    with pytest.raises(StoreFull, match="hold 1000 bytes of events; with 1 more they would pass its bound of 1000"):
        store.add(_run_by(3, "carol"), 0, held_bytes=1)
    _end(store, first)
    assert store.running_bytes == 400
    store.add(_run_by(3, "carol"), 1, held_bytes=600)
    lone = ActivationStore(max_running_bytes=10)
    lone.add(_run_by(4, "dave"), 0, held_bytes=11)


def test_the_signed_bytes_leave_out_the_signature_and_are_canonical() -> None:
    a = _activation(1)
    body = a.to_json()
    assert activation_signed_bytes(body) == activation_signed_bytes({**body, "signature": "x", "signerKey": "y"})
    assert activation_signed_bytes(dict(reversed(list(body.items())))) == activation_signed_bytes(body)


RECORD = Record(function_key("f"), SPEC.encode(), 3, 7, b"k" * 91, b"s" * 70)


def test_the_codec_round_trips_both_messages() -> None:
    invoke = InvokeFunction(5, "abc-1", RECORD, b'{"x": 1}', 60_000)
    outcome = FunctionOutcome(5, "abc-1", "success", b"[1]", "", b"log\n", 12, True, b"k" * 91, b"s" * 70)
    assert decode_event(encode_event(invoke)) == invoke
    assert decode_event(encode_event(outcome)) == outcome


def test_the_codec_refuses_what_the_receiver_would() -> None:
    """An unknown status, a payload over its bound, trailing bytes and garbage are MalformedEnvelope."""
    with pytest.raises(MalformedEnvelope, match="status"):
        encode_event(FunctionOutcome(1, "a", "great", b"", "", b"", 0, False))
    with pytest.raises(MalformedEnvelope, match="payload"):
        encode_event(InvokeFunction(1, "a", RECORD, b"x" * (256 * 1024 + 1), 1))
    good = encode_event(InvokeFunction(1, "a", RECORD, b"1", 1))
    with pytest.raises(MalformedEnvelope, match="follow"):
        decode_event(good + b"\x00")


@given(st.binary(max_size=300))
def test_garbage_bodies_are_malformed_never_a_crash(data: bytes) -> None:
    try:
        decode_event(data)
    except MalformedEnvelope:
        pass
