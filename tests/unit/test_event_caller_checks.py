"""Who calls the events' REST API at a node (``roles/event_callers.py``), with the RM's real registry
and credentials behind it on a fake clock: a node takes a user's request signed for it at its own
address, asks the RM once per token and hour (showing it the request; concurrent requests share the
question), keeps the key a minute, keeps no refusal (a forged proof must not lock the owner out) but
bounds the questions one client address causes, takes each proof once, and refuses the plain token,
saying how to sign instead; the RM takes both, and a revoked token there at once."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer

from cortex_rm.events.caller_assertions import AssertionIssuer, CallerAssertion, CallerKey
from cortex_rm.events.request_proofs import SignedRequest, parse, sign
from cortex_rm.roles.event_callers import AUTH_CACHE_S, ORIGIN_RATE, CallerChecks, rm_caller_checks
from cortex_rm.yarn.delegation import InvalidToken
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn_api.delegation_tokens import to_url_string
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.rest_errors import RestError
from tests.support.event_registry_rig import IDENTITY, RegistryRig
from tests.support.rm_core import result_of

NODE_ID = NodeId("10.0.0.1", 45454)
ME = 0x77 << 120  # this node's ring id
WEB = "10.0.0.1:8042"  # its web address (as it registered it with the RM)
TARGET = "/ws/v1/cortex/events/functions/hello/trigger"


class Node:
    """A node's ``CallerChecks`` asking the rig's RM (its real ``caller_key``), the questions counted."""

    def __init__(self) -> None:
        self.rig = RegistryRig()
        self.asked: list[defer.Deferred[CallerKey]] = []
        self.remembered: list[CallerAssertion] = []
        self.held = False  # answers wait until released (concurrent requests)
        wall = lambda: int(self.rig.clock.seconds() * 1000)  # noqa: E731
        self.checks = CallerChecks(ME, lambda: (WEB,), self.rig.clock, wall, self.key_of, self.remembered.append)

    def key_of(self, request: SignedRequest) -> defer.Deferred[CallerKey]:
        d: defer.Deferred[CallerKey] = defer.Deferred()
        self.asked.append(d)
        if not self.held:
            self.answer(d, request)
        else:
            d.request = request  # type: ignore[attr-defined]
        return d

    def answer(self, d: defer.Deferred[CallerKey], request: SignedRequest) -> None:
        try:
            d.callback(self.rig.events.caller_key(NODE_ID, request, ME, WEB))
        except Exception as e:  # noqa: BLE001 - the RM's refusal, as the tracker client delivers it
            d.errback(e)

    def signed(self, token: TokenProto, node: int = ME, body: bytes = b"{}", host: str = WEB,
               origin: str = "10.9.9.9") -> SignedRequest:  # fmt: skip
        now = int(self.rig.clock.seconds() * 1000)
        header = sign(token.identifier, token.password, node, "POST", host, TARGET, body, now)
        return SignedRequest.of("POST", host, TARGET, body, parse(header), origin)

    def user_of(self, shown: Any) -> str:
        return str(result_of(defer.ensureDeferred(self.checks.user_of(shown))))


@pytest.fixture
def node() -> Node:
    return Node()


def test_a_signed_request_names_its_user_and_her_assertion_is_kept_for_her_triggers(node: Node) -> None:
    alice = node.rig.token_proto("alice")
    assert node.user_of(node.signed(alice)) == "alice"
    assert [a.user for a in node.remembered] == ["alice"] and node.remembered[0].audience == ME


def test_one_question_to_the_rm_per_token_kept_a_minute(node: Node) -> None:
    alice = node.rig.token_proto("alice")
    for _ in range(5):
        assert node.user_of(node.signed(alice)) == "alice"
    assert len(node.asked) == 1
    node.rig.clock.advance(AUTH_CACHE_S + 1)
    assert node.user_of(node.signed(alice)) == "alice" and len(node.asked) == 2


def test_concurrent_requests_with_one_token_share_one_question(node: Node) -> None:
    alice = node.rig.token_proto("alice")
    node.held = True
    waiting = [defer.ensureDeferred(node.checks.user_of(node.signed(alice, body=b"[%d]" % i))) for i in range(3)]
    assert len(node.asked) == 1 and not any(d.called for d in waiting)
    node.answer(node.asked[0], node.asked[0].request)  # type: ignore[attr-defined]
    assert [result_of(d) for d in waiting] == ["alice"] * 3


def test_a_revoked_token_is_refused_within_the_cache_and_a_refusal_is_not_kept(node: Node) -> None:
    bob = node.rig.token_proto("bob")
    assert node.user_of(node.signed(bob)) == "bob"
    result_of(node.rig.auth.credentials.revoke_user("bob"))
    assert node.user_of(node.signed(bob)) == "bob"  # the minute's cache
    node.rig.clock.advance(AUTH_CACHE_S + 1)
    with pytest.raises(InvalidToken, match="revoked"):
        node.user_of(node.signed(bob))
    with pytest.raises(InvalidToken, match="revoked"):
        node.user_of(node.signed(bob))
    assert len(node.asked) == 3  # refusals are asked again (bounded per client address, below)


def test_a_forged_proof_does_not_lock_out_the_tokens_owner(node: Node) -> None:
    alice = node.rig.token_proto("alice")
    forged = TokenProto(identifier=alice.identifier, password=b"x" * 20, kind=alice.kind, service=alice.service)
    with pytest.raises(InvalidToken, match="does not match"):
        node.user_of(node.signed(forged, origin="10.6.6.6"))  # the RM checks the proof the node shows it
    assert node.user_of(node.signed(alice)) == "alice"


def test_one_client_address_causes_a_bounded_number_of_questions_to_the_rm(node: Node) -> None:
    rate, burst = ORIGIN_RATE
    tokens = [node.rig.token_proto(f"u{i}") for i in range(int(burst) + 1)]
    for token in tokens[:-1]:
        node.user_of(node.signed(token, origin="10.6.6.6"))
    with pytest.raises(RestError) as refused:
        node.user_of(node.signed(tokens[-1], origin="10.6.6.6"))
    assert refused.value.status == 503 and "from your address" in refused.value.message
    assert node.user_of(node.signed(tokens[-1], origin="10.1.1.1")) == f"u{int(burst)}"


def test_a_replayed_proof_another_nodes_or_a_forged_one_is_refused(node: Node) -> None:
    alice = node.rig.token_proto("alice")
    once = node.signed(alice)
    node.user_of(once)
    with pytest.raises(InvalidToken, match="sent before"):
        node.user_of(once)
    with pytest.raises(InvalidToken, match="signed for node"):
        node.user_of(node.signed(alice, node=ME + 1))
    with pytest.raises(InvalidToken, match="addressed to '10.0.0.2:8042'; send it to 10.0.0.1:8042"):
        node.user_of(node.signed(alice, host="10.0.0.2:8042"))  # a proof made for another server, relayed here
    forged = TokenProto(identifier=alice.identifier, password=b"x" * 20, kind=alice.kind, service=alice.service)
    with pytest.raises(InvalidToken, match="does not match"):
        node.user_of(node.signed(forged))
    late = node.signed(alice)
    node.rig.clock.advance(6 * 60)
    with pytest.raises(InvalidToken, match="sign each request when you send it"):
        node.user_of(late)


def test_a_node_refuses_the_plain_token_saying_how_to_sign(node: Node) -> None:
    with pytest.raises(InvalidToken, match="takes no Hadoop-YARN-RM-Delegation-Token header.*cortex-rm event sign"):
        node.user_of(node.rig.token("alice"))
    assert not node.asked


def test_a_node_not_connected_to_the_rm_says_retry_shortly(node: Node) -> None:
    def down(request: SignedRequest) -> defer.Deferred[CallerKey]:
        return defer.fail(ConnectionRefusedError("the tracker connection is closed"))

    wall = lambda: int(node.rig.clock.seconds() * 1000)  # noqa: E731
    checks = CallerChecks(ME, lambda: (WEB,), node.rig.clock, wall, down, lambda a: None)
    with pytest.raises(RestError) as refused:
        result_of(defer.ensureDeferred(checks.user_of(node.signed(node.rig.token_proto("alice")))))
    assert refused.value.status == 503 and "retry shortly" in refused.value.message


def test_the_rm_takes_signed_requests_and_its_plain_header_and_a_revocation_at_once() -> None:
    rig = RegistryRig()
    wall = lambda: int(rig.clock.seconds() * 1000)  # noqa: E731
    remembered: list[CallerAssertion] = []
    rm_id, rm_web = IDENTITY.ring_id, "10.0.0.100:8088"
    issuer = AssertionIssuer(IDENTITY.key, wall)
    checks = rm_caller_checks(rig.auth, issuer, rm_id, lambda: (rm_web,), rig.clock, wall, remembered.append)
    alice = rig.token_proto("alice")
    header = sign(alice.identifier, alice.password, rm_id, "GET", rm_web, "/x", b"", wall())
    assert result_of(defer.ensureDeferred(checks.user_of(SignedRequest.of("GET", rm_web, "/x", b"", parse(header))))) == "alice"
    assert result_of(defer.ensureDeferred(checks.user_of(to_url_string(alice)))) == "alice"
    assert [a.audience for a in remembered] == [rm_id, rm_id]
    result_of(rig.auth.credentials.revoke_user("alice"))
    header = sign(alice.identifier, alice.password, rm_id, "GET", rm_web, "/x", b"", wall())
    with pytest.raises(InvalidToken, match="revoked"):
        result_of(defer.ensureDeferred(checks.user_of(SignedRequest.of("GET", rm_web, "/x", b"", parse(header)))))
    ident = result_of(rig.auth.credentials.issue("carol", application="application_1_0001"))
    [(_, app), _] = rig.auth.tokens_for(ident, "a:1", "b:2")
    with pytest.raises(InvalidToken, match="application_1_0001's credential"):
        result_of(defer.ensureDeferred(checks.user_of(to_url_string(app))))
