"""The tracker's event calls (``openFunctionCode``, ``callerKey``) decided in-process on a fake
clock, as the generated processor calls them: only a registered, running node on the connection of
its own key is served, a user's token identifier is answered with the RM's caller assertion for the
node's ring key and the token's entry key for that key alone, and every refusal is the IDL's
exception that says it."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from cortex_rm.allocator.node_tracker import NodeTracker
from cortex_rm.allocator.nodes import NodeTable
from cortex_rm.events.functions import function_key
from cortex_rm.events.signatures import Verifier
from cortex_rm.events.registration import RegistrationRequest
from cortex_rm.fs.model import User
from cortex_rm.fs.paths import parse_path
from cortex_rm.internal import block_codec
from cortex_rm.internal.gen import ttypes
from cortex_rm.internal.ring_codec import _RECORD
from cortex_rm.events.request_proofs import entry_key, window
from cortex_rm.internal.event_codec import CALLER_PROOF
from cortex_rm.internal.tracker_event_calls import caller_key_from_thrift
from cortex_rm.internal.tracker_server import FileSystemServices, TrackerCalls
from cortex_rm.roles.event_registry import AUTH_RATE
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRegistration
from cortex_rm.yarn.resources import Resource
from tests.support.event_registry_rig import CODE, CODE_MTIME, IDENTITY, RegistryRig
from tests.support.rm_core import result_of

NODE = NodeId("10.0.0.1", 45454)
KEY = "a" * 64
RING_ID = 0xABC  # the ring id of the key the node's connection shows
WEB = "10.0.0.1:8042"  # the web address it registered


@pytest.fixture
def rig() -> RegistryRig:
    rig = RegistryRig()
    result_of(defer.ensureDeferred(rig.events.register("alice", "hello", RegistrationRequest(CODE))))
    return rig


def calls_for(
    rig: RegistryRig, fingerprint: str = KEY, events: bool = True, ring_id: int | None = RING_ID
) -> TrackerCalls:
    tracker = NodeTracker(NodeTable(), rig.clock, nm_expiry_ms=10_000, rm_identifier=1)
    tracker.register(NodeRegistration(NODE, "10.0.0.1:8042", "/r", Resource(4096, 4), 1000), KEY)
    fs = FileSystemServices(rig.name_node, events=rig.events if events else None)
    return TrackerCalls(tracker, fingerprint, "10.0.0.1:1234", ring_id, fs=fs)


def node() -> ttypes.NodeAddress:
    return ttypes.NodeAddress(NODE.host, NODE.port)


def record_of(rig: RegistryRig) -> ttypes.Record:
    return _RECORD.to_wire(rig.ring.records[function_key("hello")])


def test_a_registered_node_gets_the_code_of_the_rings_record(rig: RegistryRig) -> None:
    source = block_codec.source_from_thrift(calls_for(rig).openFunctionCode(node(), record_of(rig)))
    assert (source.length, source.modification_time_ms) == (5, CODE_MTIME)
    assert source.ticket


def proof(rig: RegistryRig, user: str = "alice", node: int = RING_ID, host: str = WEB) -> tuple[object, Any]:
    token = rig.token_proto(user)
    return token, CALLER_PROOF.to_wire(rig.signed(token, node, host))


def test_a_users_request_is_answered_with_the_rms_assertion_and_the_entry_key_for_the_nodes_ring_key(
    rig: RegistryRig,
) -> None:
    token, shown = proof(rig)
    answer = caller_key_from_thrift(calls_for(rig).callerKey(node(), shown))
    assertion = answer.assertion
    assert (assertion.user, assertion.audience) == ("alice", RING_ID)
    hour = window(int(rig.clock.seconds() * 1000))
    assert answer.entry_key == entry_key(token.password, RING_ID, hour)  # type: ignore[attr-defined]
    now_ms = int(rig.clock.seconds() * 1000)
    assert Verifier().caller_error(assertion, RING_ID, frozenset({IDENTITY.ring_id}), now_ms) is None
    with pytest.raises(ttypes.NodeRefused, match="no ring key"):
        calls_for(rig, ring_id=None).callerKey(node(), shown)


def test_a_request_for_another_node_or_address_or_forged_gets_no_key(rig: RegistryRig) -> None:
    calls = calls_for(rig)
    with pytest.raises(ttypes.CredentialRefused, match="signed for node"):
        calls.callerKey(node(), proof(rig, node=RING_ID + 1)[1])  # a request to another node, shown here
    with pytest.raises(ttypes.CredentialRefused, match="addressed to '10.0.0.9:8088', not to the node's 10.0.0.1:8042"):
        calls.callerKey(node(), proof(rig, host="10.0.0.9:8088")[1])  # sent to another server (the RM, say)
    _, shown = proof(rig)
    shown.signature = bytes(32)
    with pytest.raises(ttypes.CredentialRefused, match="does not match"):
        calls.callerKey(node(), shown)  # an identifier alone, with a made-up signature


def test_a_node_on_another_key_or_an_rm_without_a_registry_is_refused(rig: RegistryRig) -> None:
    with pytest.raises(ttypes.NodeRefused, match="not registered with the key of this connection"):
        calls_for(rig, fingerprint="b" * 64).callerKey(node(), proof(rig)[1])
    with pytest.raises(ttypes.NodeRefused, match="keeps no function registry"):
        calls_for(rig, events=False).openFunctionCode(node(), record_of(rig))


def test_refusals_travel_as_the_idls_exceptions(rig: RegistryRig) -> None:
    calls = calls_for(rig)
    forged = record_of(rig)
    forged.value = forged.value.replace(b'"handler"', b'"handlex"')
    with pytest.raises(ttypes.FunctionRefused, match="bad signature"):
        calls.openFunctionCode(node(), forged)
    _, shown = proof(rig)
    shown.token_identifier = b"\x00\x01"
    with pytest.raises(ttypes.CredentialRefused, match="not an RM delegation token identifier"):
        calls.callerKey(node(), shown)
    for field, value, says in (("token_identifier", b"", "token identifier"), ("nonce", "x", "nonce"),
                               ("token_identifier", b"x" * 5000, "longer than")):  # fmt: skip
        _, shown = proof(rig)
        setattr(shown, field, value)
        with pytest.raises(ttypes.NodeRefused, match=says):
            calls.callerKey(node(), shown)
    with pytest.raises(ttypes.NodeRefused, match="function"):
        calls.openFunctionCode(node(), ttypes.Record(key="k"))  # a record missing its fields
    _, shown = proof(rig)
    with pytest.raises(ttypes.TryLater) as busy:
        for _ in range(int(AUTH_RATE[1]) + 1):
            calls.callerKey(node(), shown)
    assert busy.value.retry_after_ms > 0


def test_a_revoked_users_or_an_applications_token_gets_no_key(rig: RegistryRig) -> None:
    _, shown = proof(rig, "bob")
    result_of(rig.auth.credentials.revoke_user("bob"))
    with pytest.raises(ttypes.CredentialRefused, match="revoked"):
        calls_for(rig).callerKey(node(), shown)
    ident = result_of(rig.auth.credentials.issue("alice", "application_1_0001"))
    [(_, app_token), _] = rig.auth.tokens_for(ident, "127.0.0.1:8032", "127.0.0.1:8088")
    with pytest.raises(ttypes.CredentialRefused, match="application"):
        calls_for(rig).callerKey(node(), CALLER_PROOF.to_wire(rig.signed(app_token, RING_ID, WEB)))


def test_a_code_file_gone_since_is_the_file_systems_failure(rig: RegistryRig) -> None:
    rig.name_node.persist(rig.name_node.namespace.delete(parse_path(CODE), User("alice", frozenset()), False, 0)[1])
    with pytest.raises(ttypes.FsFailure) as failed:
        calls_for(rig).openFunctionCode(node(), record_of(rig))
    assert failed.value.java_class == "java.io.FileNotFoundException"
