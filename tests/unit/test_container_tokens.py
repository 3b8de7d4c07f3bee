"""The NodeManager's ContainerToken check: signature, node, expiry, one start per token, key changes."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from cortex_rm.container.container_tokens import ContainerGrant, ContainerTokenVerifier, InvalidContainerToken
from cortex_rm.yarn.ids import NodeId
from cortex_rm.yarn.resources import Resource
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.tokens import read_container_identifier, read_nm_token_identifier, token_from_proto
from tests.support.nm_requests import ATTEMPT, KEY, NODE, cid, container_token, nm_token

NOW_MS = 1_700_000_000_000


def verify(verifier: ContainerTokenVerifier, proto: TokenProto) -> ContainerGrant:
    """The check of a token as it arrives on the wire (``TokenProto``, read by nm_service)."""
    return verifier.verify(token_from_proto(proto))


@pytest.fixture
def verifier() -> ContainerTokenVerifier:
    clock = Clock()
    clock.advance(NOW_MS / 1000)
    v = ContainerTokenVerifier(NODE, clock, read_container_identifier, read_nm_token_identifier)
    v.set_master_key(KEY)
    return v


def test_valid_token_grants_its_container(verifier: ContainerTokenVerifier) -> None:
    """A token signed under the current key, for this node, unexpired, grants container, user and resource."""
    grant = verify(verifier, container_token(cid(2), memory_mb=2048, user="bob", expiry_ms=NOW_MS + 1000, is_am=True))
    assert (grant.container_id, grant.user, grant.resource, grant.is_am) == (cid(2), "bob", Resource(2048, 1), True)


def test_forged_password_is_refused(verifier: ContainerTokenVerifier) -> None:
    """A password made with another secret under the same key id is refused with YARN's message."""
    forged = container_token(cid(2), sign_with=MasterKey(KEY.key_id, b"x" * 20))
    with pytest.raises(InvalidContainerToken, match="seems to have an illegally generated token"):
        verify(verifier, forged)


def test_unknown_key_id_is_refused(verifier: ContainerTokenVerifier) -> None:
    """A token under a key this node never received is refused."""
    with pytest.raises(InvalidContainerToken, match="illegally generated"):
        verify(verifier, container_token(cid(2), key=MasterKey(99, b"y" * 20)))


def test_no_key_yet_refuses_everything() -> None:
    """Before the node registered (no key), no token verifies."""
    v = ContainerTokenVerifier(NODE, Clock(), read_container_identifier, read_nm_token_identifier)
    with pytest.raises(InvalidContainerToken):
        verify(v, container_token(cid(2)))


def test_token_for_another_node_is_refused(verifier: ContainerTokenVerifier) -> None:
    """nmHostAddr must be this node's NodeId."""
    with pytest.raises(InvalidContainerToken, match="not valid for current Node manager. Expected : 127.0.0.1:45454 Found : 10.0.0.9:45454"):
        verify(verifier, container_token(cid(2), node=NodeId("10.0.0.9", 45454)))


def test_a_token_of_an_rm_other_than_the_one_registered_with_is_refused(verifier: ContainerTokenVerifier) -> None:
    """Fencing: once registered with an RM, a node takes only that RM's tokens (an RM that lost the lead, or an
    earlier start of it, may still hand some out); before any registration the identifier is not checked."""
    assert verify(verifier, container_token(cid(2), rm_identifier=5)).container_id == cid(2)
    verifier.rm_identifier = 7
    with pytest.raises(InvalidContainerToken, match=f"Container {cid(3)} rejected as it is allocated by a previous RM"):
        verify(verifier, container_token(cid(3), rm_identifier=5))
    assert verify(verifier, container_token(cid(3), rm_identifier=7)).container_id == cid(3)


def test_expired_token_is_refused(verifier: ContainerTokenVerifier) -> None:
    """A token whose expiryTimeStamp passed is refused, naming both times."""
    with pytest.raises(InvalidContainerToken, match=f"This token is expired. current time is {NOW_MS} found {NOW_MS - 1}"):
        verify(verifier, container_token(cid(2), expiry_ms=NOW_MS - 1))


def test_started_container_cannot_start_again_until_its_token_expires(verifier: ContainerTokenVerifier) -> None:
    """A token starts its container once; the memory of it lasts as long as the token."""
    grant = verify(verifier, container_token(cid(2), expiry_ms=NOW_MS + 5000))
    verifier.check_not_started(grant)
    verifier.mark_started(grant)
    with pytest.raises(InvalidContainerToken, match="was started on this node before"):
        verifier.check_not_started(verify(verifier, container_token(cid(2), expiry_ms=NOW_MS + 5000)))
    verifier.clock.advance(6)  # type: ignore[attr-defined]
    with pytest.raises(InvalidContainerToken, match="expired"):
        verify(verifier, container_token(cid(2), expiry_ms=NOW_MS + 5000))
    verifier.check_not_started(verify(verifier, container_token(cid(2), expiry_ms=NOW_MS + 10_000)))


def test_previous_key_still_verifies_after_a_key_change(verifier: ContainerTokenVerifier) -> None:
    """After a new key arrives, tokens of the previous key verify; the one before that does not."""
    verifier.set_master_key(MasterKey(18, b"second-secret-bytes!"))
    assert verify(verifier, container_token(cid(2))).container_id == cid(2)
    verifier.set_master_key(MasterKey(19, b"third-secret-bytes!!"))
    with pytest.raises(InvalidContainerToken):
        verify(verifier, container_token(cid(3)))


def test_garbage_and_wrong_kind_are_refused(verifier: ContainerTokenVerifier) -> None:
    """An identifier that is not a ContainerTokenIdentifier, or a token of another kind, is refused."""
    token = container_token(cid(2))
    token.kind = "NMToken"
    with pytest.raises(InvalidContainerToken, match="kind"):
        verify(verifier, token)
    token = container_token(cid(2))
    token.identifier = b"\xff\xff"
    with pytest.raises(InvalidContainerToken, match="Invalid container token"):
        verify(verifier, token)


def test_an_nmtoken_for_this_node_has_its_password_under_the_current_or_previous_key(
    verifier: ContainerTokenVerifier,
) -> None:
    """What SASL's DIGEST-MD5 checks a caller's proof against: the HMAC of the identifier."""
    token = nm_token(ATTEMPT)
    assert verifier.nm_token_password(token.identifier) == KEY.password(token.identifier) == token.password
    verifier.set_master_key(MasterKey(KEY.key_id + 1, b"n" * 20))  # a new key: the old one still verifies
    assert verifier.nm_token_password(token.identifier) == token.password
    verifier.set_master_key(MasterKey(KEY.key_id + 2, b"m" * 20))  # two changes later it is gone
    assert verifier.nm_token_password(token.identifier) is None


@pytest.mark.parametrize(
    "identifier",
    [
        nm_token(node=NodeId("127.0.0.1", 1)).identifier,  # another node's
        nm_token(key=MasterKey(99, b"y" * 20)).identifier,  # a key this node never had
        container_token(cid(2)).identifier,  # not an NMToken
        b"\xff\xfe garbage",
        b"",
    ],
    ids=["another-node", "unknown-key", "container-token", "garbage", "empty"],
)
def test_anything_else_has_no_password_so_the_caller_is_refused(verifier: ContainerTokenVerifier, identifier: bytes) -> None:
    assert verifier.nm_token_password(identifier) is None
