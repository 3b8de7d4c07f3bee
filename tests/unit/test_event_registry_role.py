"""The RM's function registry wired (``roles/event_registry.py``, ``roles/event_publication.py``) on a
fake clock: the code file checked through the NameNode as the caller, each change persisted then
published in the ring (and retried when the ring fails), everything republished once the ring is
joined and on a timer, and the nodes' calls: a registration record's code, and users' tokens."""

from __future__ import annotations

import dataclasses

import json
from dataclasses import replace

import pytest
from twisted.internet import defer

from cortex_rm.dht.ring_trust import KeyTrust, key_id
from cortex_rm.events.request_proofs import entry_key, window
from cortex_rm.events.signatures import Verifier
from cortex_rm.events.functions import SCHEDULES_KEY, FunctionSpec, InvalidFunction, function_key
from cortex_rm.events.registration import RegistrationRequest
from cortex_rm.events.registry import FunctionAccessDenied, UnknownRegistration
from cortex_rm.fs import tickets
from cortex_rm.fs.errors import AccessControl, FileNotFound, InvalidPath
from cortex_rm.fs.model import User
from cortex_rm.fs.paths import parse_path
from cortex_rm.internal.errors import CallRateExceeded
from cortex_rm.internal.identity import NodeIdentity
from cortex_rm.roles.event_publication import RETRY_INTERVAL_S
from cortex_rm.roles.event_registry import AUTH_RATE, CODE_RATE, EventRegistry, RegistrationRecords
from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resource_tracker import NodeRefused
from tests.support.event_registry_rig import CODE, CODE_MTIME, IDENTITY, NOW_MS, RegistryRig
from tests.support.rm_core import result_of

NODE = NodeId("10.0.0.1", 45454)
OTHER_KEY = NodeIdentity.generate()


def register(
    rig: RegistryRig, name: str = "hello", user: str = "alice", path: str = CODE, **fields: object
) -> FunctionSpec:
    request = RegistrationRequest(code_path=path, **fields)  # type: ignore[arg-type]
    spec: FunctionSpec = result_of(defer.ensureDeferred(rig.events.register(user, name, request)))
    return spec


def in_ring(rig: RegistryRig, name: str) -> FunctionSpec:
    return FunctionSpec.decode(rig.ring.records[function_key(name)].value)


def test_a_registration_records_the_code_files_length_and_time_and_is_persisted_then_published() -> None:
    rig = RegistryRig()
    spec = register(rig, path="/user/alice/hello.py/", schedule="every 1m")
    assert (spec.code_path, spec.code_length, spec.code_mtime_ms, spec.code_kind) == (CODE, 5, CODE_MTIME, "python")
    assert rig.store.rows == {("hello", 1): spec.encode()}
    assert in_ring(rig, "hello") == spec
    assert json.loads(rig.ring.records[SCHEDULES_KEY].value) == {"functions": ["hello"]}
    again = register(rig)
    assert again.version == 2 and in_ring(rig, "hello") == again
    assert json.loads(rig.ring.records[SCHEDULES_KEY].value) == {"functions": []}
    assert sorted(rig.store.rows) == [("hello", 1), ("hello", 2)]


@pytest.mark.parametrize(
    ("user", "path", "error", "message"),
    [
        ("alice", "/user/alice/missing.py", FileNotFound, "missing.py"),
        ("alice", "/user/alice/dir.py", FileNotFound, "Path is not a file"),
        ("bob", "/user/alice/private.py", AccessControl, "user=bob"),
        ("alice", "/user/alice/big.py", InvalidFunction, "^code: /user/alice/big.py is 67108865 bytes"),
        ("alice", "/user/alice/../x.py", InvalidPath, "x.py"),
    ],
)
def test_a_code_file_that_is_missing_unreadable_or_too_large_is_refused(
    user: str, path: str, error: type[Exception], message: str
) -> None:
    rig = RegistryRig()
    with pytest.raises(error, match=message):
        register(rig, user=user, path=path)
    assert rig.events.registry.names() == [] and rig.store.rows == {} and rig.ring.puts == []


def test_a_name_owned_by_another_user_is_refused_before_the_code_is_looked_at() -> None:
    rig = RegistryRig()
    register(rig)
    with pytest.raises(FunctionAccessDenied):
        register(rig, user="bob", path="/user/bob/nothing-here.py")


def test_a_deletion_is_persisted_and_published_as_a_tombstone() -> None:
    rig = RegistryRig()
    register(rig, schedule="every 5m")
    tombstone = result_of(defer.ensureDeferred(rig.events.delete("alice", "hello")))
    assert tombstone.deleted and tombstone.version == 2
    assert rig.store.rows == {("hello", 2): tombstone.encode()}
    assert in_ring(rig, "hello") == tombstone
    assert json.loads(rig.ring.records[SCHEDULES_KEY].value) == {"functions": []}


def test_a_failed_put_does_not_fail_the_registration_and_is_retried_until_it_succeeds() -> None:
    rig = RegistryRig()
    rig.ring.failing = True
    rig.events.start(defer.succeed(None))
    spec = register(rig, schedule="every 1m")
    assert rig.store.rows == {("hello", 1): spec.encode()} and rig.ring.records == {}
    rig.clock.advance(RETRY_INTERVAL_S)
    assert rig.ring.records == {}
    rig.ring.failing = False
    rig.clock.advance(RETRY_INTERVAL_S)
    assert in_ring(rig, "hello") == spec
    assert json.loads(rig.ring.records[SCHEDULES_KEY].value) == {"functions": ["hello"]}
    assert rig.events.publisher is not None and rig.events.publisher.pending == set()
    rig.events.stop()


def test_a_restarted_rm_republishes_every_registration_once_joined_and_on_its_timer() -> None:
    """The second RM loads the first's store; nothing is put before the ring is joined; then every
    registration and tombstone, and the schedules, are put again, and again each interval, after
    tombstones past their retention are forgotten."""
    first = RegistryRig()
    register(first, "a", schedule="every 1m")
    register(first, "b")
    result_of(defer.ensureDeferred(first.events.delete("alice", "b")))
    restarted = RegistryRig(republish_interval_s=60.0)
    restarted.store.rows = dict(first.store.rows)
    events = result_of(defer.ensureDeferred(EventRegistry.load(
        restarted.store, restarted.name_node, restarted.auth, restarted.clock, ring=restarted.ring,
        republish_interval_s=60.0,
    )))  # fmt: skip
    joined: defer.Deferred[None] = defer.Deferred()
    events.start(joined)
    restarted.clock.advance(120)
    assert restarted.ring.puts == []
    joined.callback(None)
    assert sorted(restarted.ring.puts) == sorted([function_key("a"), function_key("b"), SCHEDULES_KEY])
    assert in_ring(restarted, "a") == first.events.registry.current("a")
    assert in_ring(restarted, "b").deleted
    restarted.clock.advance(60)
    assert len(restarted.ring.puts) == 6
    restarted.clock.advance(8 * 24 * 3600)  # past the tombstone's retention: "b" is forgotten, not put
    assert events.registry.names() == ["a"] and ("b", 3) not in restarted.store.rows
    assert restarted.ring.puts[-2:] == [function_key("a"), SCHEDULES_KEY]
    events.stop()


# -- the nodes' calls


def test_a_node_presenting_the_rings_record_gets_the_code_as_the_functions_owner() -> None:
    rig = RegistryRig()
    spec = register(rig)
    length, mtime, ticket = rig.events.open_function_code(NODE, rig.ring.records[function_key("hello")])
    assert (length, mtime) == (spec.code_length, spec.code_mtime_ms)
    claims = tickets.verify({1: rig.name_node.key}, ticket, "OPEN", NOW_MS).claims
    assert (claims["path"], claims["user"]) == (CODE, "alice")


def _signed(key: NodeIdentity, record_key: str, value: bytes) -> object:
    return KeyTrust(key.key, 0, 0, 0).sign_record(record_key, value, NOW_MS)


def test_a_record_that_is_not_an_rms_current_registration_is_refused() -> None:
    """Altered, written by a member that is no RM, filed under another key, not a registration, an
    older version no longer kept, a deleted function: UnknownRegistration saying which."""
    rig = RegistryRig()
    register(rig)
    record = rig.ring.records[function_key("hello")]
    spec = FunctionSpec.decode(record.value)
    cases = [
        (replace(record, value=replace(spec, code_path="/user/alice/private.py").encode()), "bad signature"),
        (_signed(OTHER_KEY, record.key, record.value), "not written by a ResourceManager"),
        (_signed(IDENTITY, function_key("other"), record.value), "filed under another key"),
        (_signed(IDENTITY, record.key, b"{}"), "does not hold a registration"),
        (_signed(IDENTITY, record.key, replace(spec, version=7).encode()), "version 7 is not a registration"),
    ]
    for bad, reason in cases:
        with pytest.raises(UnknownRegistration, match=reason):
            rig.events.open_function_code(NODE, bad)  # type: ignore[arg-type]
    for _ in range(4):
        register(rig)
    with pytest.raises(UnknownRegistration, match="version 1 is not a registration this RM holds"):
        rig.events.open_function_code(NODE, record)  # 4 versions kept: v2..v5
    current = rig.ring.records[function_key("hello")]
    result_of(defer.ensureDeferred(rig.events.delete("alice", "hello")))
    with pytest.raises(UnknownRegistration, match="was deleted"):
        rig.events.open_function_code(NODE, current)


def test_another_configured_rms_records_are_accepted() -> None:
    """[ring] resource_managers names the RMs: a record another one wrote (a standby, a restart on
    a new key) is accepted if it is a registration this RM holds."""
    rig = RegistryRig(resource_managers=frozenset({OTHER_KEY.ring_id}))
    register(rig)
    record = rig.ring.records[function_key("hello")]
    by_other_rm = _signed(OTHER_KEY, record.key, record.value)
    assert rig.events.open_function_code(NODE, by_other_rm)[0] == 5  # type: ignore[arg-type]


def test_without_a_ring_no_code_is_served() -> None:
    rig = RegistryRig()
    register(rig)
    rig.events.records = None
    with pytest.raises(UnknownRegistration, match="not on the ring"):
        rig.events.open_function_code(NODE, rig.ring.records[function_key("hello")])


def test_a_code_file_deleted_since_the_registration_is_the_file_systems_refusal() -> None:
    rig = RegistryRig()
    register(rig)
    alice = User("alice", frozenset({"alice"}))
    rig.name_node.persist(rig.name_node.namespace.delete(parse_path(CODE), alice, False, NOW_MS)[1])
    with pytest.raises(FileNotFound):
        rig.events.open_function_code(NODE, rig.ring.records[function_key("hello")])


WEB = "10.0.0.1:8042"


def test_a_users_request_names_her_and_a_bad_one_says_why_not() -> None:
    rig = RegistryRig()
    token = rig.token_proto("alice")
    answer = rig.events.caller_key(NODE, rig.signed(token, 5, WEB), 5, WEB)
    assertion = answer.assertion
    assert (assertion.user, assertion.audience) == ("alice", 5) and key_id(assertion.signer_key) == IDENTITY.ring_id
    assert Verifier().caller_error(assertion, 5, frozenset({IDENTITY.ring_id}), NOW_MS) is None
    assert answer.entry_key == entry_key(token.password, 5, window(NOW_MS))
    off_ring = EventRegistry(rig.events.registry, rig.store, rig.name_node, rig.auth, rig.clock)
    with pytest.raises(NodeRefused, match="not on the ring"):
        off_ring.caller_key(NODE, rig.signed(token, 5, WEB), 5, WEB)
    bad = rig.signed(token, 5, WEB)
    bad = dataclasses.replace(bad, proof=dataclasses.replace(bad.proof, identifier=b"not an identifier!"))
    with pytest.raises(InvalidToken, match="not an RM delegation token identifier"):
        rig.events.caller_key(NODE, bad, 5, WEB)
    result_of(rig.auth.credentials.revoke_user("alice"))
    with pytest.raises(InvalidToken, match="revoked, cancelled or never issued"):
        rig.events.caller_key(NODE, rig.signed(token, 5, WEB), 5, WEB)
    expiring = rig.token_proto("bob")
    rig.clock.advance(31 * 24 * 3600)
    with pytest.raises(InvalidToken, match="is expired"):
        rig.events.caller_key(NODE, rig.signed(expiring, 5, WEB), 5, WEB)


def test_an_applications_credential_does_not_authenticate_its_user_to_functions() -> None:
    rig = RegistryRig()
    ident = result_of(rig.auth.credentials.issue("alice", application="application_1_0001"))
    [(_, token), _] = rig.auth.tokens_for(ident, "a:1", "b:2")
    with pytest.raises(InvalidToken, match="application_1_0001's credential"):
        rig.events.caller_key(NODE, rig.signed(token, 5, WEB), 5, WEB)


@pytest.mark.parametrize(("call", "rate"), [("auth", AUTH_RATE), ("code", CODE_RATE)])
def test_a_node_calling_past_its_rate_is_told_to_try_later_and_other_nodes_are_not(
    call: str, rate: tuple[float, float]
) -> None:
    rig = RegistryRig()
    register(rig)
    token, record = rig.token_proto("alice"), rig.ring.records[function_key("hello")]

    def once(node: NodeId) -> object:
        if call == "auth":
            return rig.events.caller_key(node, rig.signed(token, 5, WEB), 5, WEB)
        return rig.events.open_function_code(node, record)

    per_second, burst = rate
    for _ in range(int(burst)):
        once(NODE)
    with pytest.raises(CallRateExceeded) as refused:
        once(NODE)
    assert refused.value.retry_after_ms == int(1000 / per_second) + 1
    once(NodeId("10.0.0.2", 45454))
    rig.clock.advance(refused.value.retry_after_ms / 1000)
    once(NODE)


def test_without_a_ring_tombstones_still_expire_on_the_timer() -> None:
    rig = RegistryRig(republish_interval_s=3600.0)
    register(rig)
    result_of(defer.ensureDeferred(rig.events.delete("alice", "hello")))
    events = EventRegistry(
        rig.events.registry, rig.store, rig.name_node, rig.auth, rig.clock, republish_interval_s=3600.0
    )
    events.start(None)
    rig.clock.advance(7 * 24 * 3600 + 3600)
    assert events.registry.names() == [] and rig.store.rows == {}
    events.stop()
