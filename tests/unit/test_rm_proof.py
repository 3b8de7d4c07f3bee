"""RM proofs (``yarn/rm_proof.py``, ``yarn_api/rm_proof_web.py``): an RM that holds the delegation key proves it for
a nonce and its own addresses, the active from its live credentials and a standby from its copy of the store; the
proof is bound to the nonce and to every address, so a relayed or replayed one, or one for another entry, does not
match; malformed, unknown, expired, revoked and applications' identifiers, a ``Host`` that is not the RM's, and a
flood from one address are refused in the REST API's JSON form; the message is domain-separated from every other
HMAC Cortex keys with a token's password."""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

import cortex_rm
from cortex_rm.allocator.state_store import MemoryStateStore, StoredState
from cortex_rm.allocator.user_credentials import DEFAULT_RENEW_INTERVAL_MS, UserCredentials
from cortex_rm.client_config import RMAddresses
from cortex_rm.events.request_proofs import KEY_DOMAIN, SCHEME, entry_key
from cortex_rm.rm_verification import judge
from cortex_rm.yarn.addresses import HostPort
from cortex_rm.yarn.rm_proof import DOMAIN, PROOF_PATH, ProofQuery, message, proof_matches, rm_proof
from cortex_rm.yarn.tokens import MasterKey
from cortex_rm.yarn_api.proto.Security_pb2 import TokenProto
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.rm_proof_web import (
    CLIENT_RATE, MAX_AGE_S, MIN_RELOAD_S, LiveSecrets, OwnAddresses, RmProofResource, RmProofs, StoredSecrets,
)  # fmt: skip
from cortex_rm.yarn_api.standby_web import StandbyWeb, standby_cluster_info
from cortex_rm.yarn_api.user_auth import UserAuthenticator

KEY = MasterKey(3, b"d" * 20)
RM = RMAddresses(HostPort("rm1.test", 8032), HostPort("rm1.test", 8030), HostPort("rm1.test", 8088))
OWN = OwnAddresses(RM.webapp, RM.client, RM.scheduler)
NONCE = "0123456789abcdef" * 2


class Cluster:
    """An RM's credentials on a memory store (its delegation key stored as ``RMKeys`` stores it)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = CountingStore()
        self.store.state.master_keys["delegation"] = (KEY.key_id, KEY.secret)
        self.credentials = UserCredentials(KEY, self.store, StoredState(), self.now_ms)
        self.auth = UserAuthenticator(self.credentials)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def tokens(self, user: str, application: str | None = None) -> tuple[TokenProto, TokenProto]:
        """A user's (or an application's) pair: the RM token and the WebHDFS token."""
        box: list[Any] = []
        self.credentials.issue(user, application).addBoth(box.append)
        [(_, rm_token), (_, fs_token)] = self.auth.tokens_for(box[0], "10.0.0.1:8032", "10.0.0.1:8088")
        return rm_token, fs_token


class CountingStore(MemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.with_applications = 0

    def load(self, applications: bool = True) -> defer.Deferred[StoredState]:
        self.loads += 1
        self.with_applications += applications
        return super().load(applications)


def args_of(query: ProofQuery) -> dict[bytes, list[bytes]]:
    """The query arguments twisted.web parses from the target a client sends."""
    parsed = parse_qs(urlsplit(query.target()).query, keep_blank_values=True)
    return {k.encode(): [v.encode() for v in vs] for k, vs in parsed.items()}


def outcome(proofs: RmProofs, args: dict[bytes, list[bytes]], host: str = "rm1.test:8088", origin: str = "10.9.9.9") -> Any:
    """The answer (a dict) or the RestError it was refused with."""
    box: list[Any] = []
    proofs.answer(args, host, origin).addBoth(box.append)
    assert box, "the answer did not fire"
    if isinstance(box[0], Failure):
        assert isinstance(box[0].value, RestError), box[0]
        return box[0].value
    return box[0]


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


def test_the_active_proves_its_own_addresses_and_the_clients_check_accepts_it(cluster: Cluster) -> None:
    """The proof the RM computes from the identifier alone is what the client computes from her password, for the
    address she asked (``Host``, in any case) and the client and scheduler addresses the directory listed."""
    _, fs = cluster.tokens("alice")
    proofs = RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN)
    answer = outcome(proofs, args_of(ProofQuery(fs.identifier, NONCE)), host="RM1.test:8088")
    assert set(answer) == {"proof"} and len(answer["proof"]) == 64
    assert judge(200, json.dumps(answer).encode(), RM, NONCE, fs.password) is None
    assert answer["proof"] == rm_proof(fs.password, NONCE, "rm1.test:8088", "rm1.test:8032", "rm1.test:8030").hex()


@pytest.mark.parametrize(
    "other",
    [
        {"nonce": "f" * 32},  # a replayed proof, for an earlier nonce
        {"webapp": "evil.test:8088"},  # relayed: the hostile address the client asked
        {"client": "evil.test:8032"},  # the real RM's web address beside a hostile IPC address
        {"scheduler": "evil.test:8030"},
    ],
)
def test_a_proof_is_good_for_its_nonce_and_its_addresses_only(cluster: Cluster, other: dict[str, str]) -> None:
    _, fs = cluster.tokens("alice")
    proof = outcome(RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN), args_of(ProofQuery(fs.identifier, NONCE)))
    expected = {"nonce": NONCE, "webapp": "rm1.test:8088", "client": "rm1.test:8032", "scheduler": "rm1.test:8030"}
    assert proof_matches(proof["proof"], fs.password, **expected)
    assert not proof_matches(proof["proof"], fs.password, **{**expected, **other})


def test_a_relay_through_a_hostile_address_gets_no_proof_for_it(cluster: Cluster) -> None:
    """A hostile node that passes the client's question on to the real RM: with the hostile ``Host`` the RM refuses;
    with its own, its proof is for its own web address, which the client's check for the hostile one refuses."""
    _, fs = cluster.tokens("alice")
    proofs = RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN)
    args = args_of(ProofQuery(fs.identifier, NONCE))
    refused = outcome(proofs, args, host="evil.test:8088")
    assert isinstance(refused, RestError) and refused.status == 403 and refused.exception == "ForbiddenException"
    assert "proves only its own" in refused.message
    relayed = json.dumps(outcome(proofs, args)).encode()
    hostile = RMAddresses(HostPort("evil.test", 8032), HostPort("evil.test", 8030), HostPort("evil.test", 8088))
    assert "does not match" in str(judge(200, relayed, hostile, NONCE, fs.password))
    mixed = RMAddresses(HostPort("evil.test", 8032), RM.scheduler, RM.webapp)  # the real web port, a hostile IPC port
    assert "does not match" in str(judge(200, relayed, mixed, NONCE, fs.password))


def test_another_key_proves_nothing(cluster: Cluster) -> None:
    """A hostile RM with a key of its own (and the identifier it was shown) answers a proof that does not match."""
    _, fs = cluster.tokens("alice")
    hostile = Cluster()
    hostile.credentials.key = MasterKey(3, b"e" * 20)
    hostile.tokens("alice")  # (it even honours an identifier with the same sequence number)
    answer = outcome(RmProofs(LiveSecrets(hostile.credentials), hostile.clock, OWN), args_of(ProofQuery(fs.identifier, NONCE)))
    assert isinstance(answer, dict)
    assert "does not match" in str(judge(200, json.dumps(answer).encode(), RM, NONCE, fs.password))


def _query(**fields: list[bytes]) -> dict[bytes, list[bytes]]:
    return {k.encode(): v for k, v in fields.items()}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (_query(nonce=[NONCE.encode()]), "exactly one identifier and one nonce"),
        (_query(identifier=[b"AA"], nonce=[NONCE.encode()] * 2), "exactly one identifier and one nonce"),
        (_query(identifier=[b"AA"], nonce=[NONCE.encode()], op=[b"x"]), "exactly one identifier and one nonce"),
        (_query(identifier=[b"A+/="], nonce=[NONCE.encode()]), "URL-safe base64"),
        (_query(identifier=[b"A"], nonce=[NONCE.encode()]), "URL-safe base64"),
        (_query(identifier=[b"A" * 1400], nonce=[NONCE.encode()]), "URL-safe base64"),
        (_query(identifier=[b"AA"], nonce=[NONCE.upper().encode()]), "nonce must be 32 lowercase hex digits"),
        (_query(identifier=[b"AA"], nonce=[b"0" * 31]), "nonce must be 32 lowercase hex digits"),
        (_query(identifier=[b"AA"], nonce=[b"0" * 32 + b"\n"]), "nonce must be 32 lowercase hex digits"),
    ],
)
def test_a_malformed_question_is_a_bad_request(cluster: Cluster, args: dict[bytes, list[bytes]], complaint: str) -> None:
    refused = outcome(RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN), args)
    assert isinstance(refused, RestError) and refused.status == 400 and refused.exception == "BadRequestException"
    assert complaint in refused.message
    assert refused.body()["RemoteException"]["javaClassName"] == "org.apache.hadoop.yarn.webapp.BadRequestException"


def test_identifiers_the_rm_does_not_honour_get_no_proof(cluster: Cluster) -> None:
    """403 ``InvalidToken`` for: the RM token's identifier (its password keys the entry keys, never a proof); an
    identifier the RM never issued; an application's token; a revoked user's; an expired one."""
    rm_token, fs = cluster.tokens("alice")
    _, app_fs = cluster.tokens("bob", application="application_1_0001")
    _, carol = cluster.tokens("carol")
    foreign = Cluster()
    foreign.credentials._sequence = 100  # (a sequence number this RM never issued)
    _, stranger = foreign.tokens("mallory")
    proofs = RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN)
    cluster.credentials.revoke_user("carol")

    def refusal(identifier: bytes) -> str:
        answer = outcome(proofs, args_of(ProofQuery(identifier, NONCE)), origin=identifier.hex())
        assert isinstance(answer, RestError) and answer.status == 403, answer
        assert answer.body()["RemoteException"]["javaClassName"] == "org.apache.hadoop.security.token.SecretManager$InvalidToken"
        return answer.message

    assert "not a delegation token identifier" in refusal(rm_token.identifier)
    assert "can't be found" in refusal(stranger.identifier)
    assert "may act on that application only" in refusal(app_fs.identifier)
    assert "can't be found" in refusal(carol.identifier)
    assert isinstance(outcome(proofs, args_of(ProofQuery(fs.identifier, NONCE))), dict)
    cluster.clock.advance(DEFAULT_RENEW_INTERVAL_MS / 1000 + 1)
    assert "is expired" in refusal(fs.identifier)


def test_questions_are_bounded_per_client_address(cluster: Cluster) -> None:
    """A burst, then ``RetriableException`` with ``Retry-After``; another address is still answered; the bucket
    refills with time."""
    _, fs = cluster.tokens("alice")
    proofs = RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN)
    args = args_of(ProofQuery(fs.identifier, NONCE))
    rate, burst = CLIENT_RATE
    assert all(isinstance(outcome(proofs, args), dict) for _ in range(int(burst)))
    refused = outcome(proofs, args)
    assert isinstance(refused, RestError) and refused.status == 503 and refused.exception == "RetriableException"
    assert (b"Retry-After", b"1") in refused.headers
    malformed = outcome(proofs, {})  # (refused before any parsing or work)
    assert isinstance(malformed, RestError) and malformed.status == 503
    assert isinstance(outcome(proofs, args, origin="10.9.9.10"), dict)
    cluster.clock.advance(1 / rate)
    assert isinstance(outcome(proofs, args), dict)


def test_an_rm_that_has_not_bound_its_ports_asks_to_retry(cluster: Cluster) -> None:
    _, fs = cluster.tokens("alice")
    proofs = RmProofs(LiveSecrets(cluster.credentials), cluster.clock)
    answer = outcome(proofs, args_of(ProofQuery(fs.identifier, NONCE)))
    assert isinstance(answer, RestError) and answer.status == 503
    proofs.claim(RM.webapp, RM.client, RM.scheduler)
    assert isinstance(outcome(proofs, args_of(ProofQuery(fs.identifier, NONCE))), dict)


def test_a_standby_proves_from_its_copy_of_the_store_and_reloads_it_sparingly(cluster: Cluster) -> None:
    """A standby (its copy: the same store here) answers the same proof as the active.  A token issued after it
    loaded is unknown until ``MIN_RELOAD_S`` has passed, then found by one reload; a revoked one still proves until
    the copy is ``MAX_AGE_S`` old.  A malformed identifier costs no load."""
    _, alice = cluster.tokens("alice")
    secrets = StoredSecrets(cluster.store, cluster.clock, cluster.now_ms)
    standby = RmProofs(secrets, cluster.clock, OWN)
    active = RmProofs(LiveSecrets(cluster.credentials), cluster.clock, OWN)
    args = args_of(ProofQuery(alice.identifier, NONCE))
    assert outcome(standby, args) == outcome(active, args, origin="10.0.0.7")
    assert cluster.store.loads == 1
    _, bob = cluster.tokens("bob")
    bob_args = args_of(ProofQuery(bob.identifier, NONCE))
    assert isinstance(outcome(standby, bob_args), RestError)  # within MIN_RELOAD_S of the load: not reloaded
    assert cluster.store.loads == 1
    cluster.clock.advance(MIN_RELOAD_S)
    assert judge(200, json.dumps(outcome(standby, bob_args)).encode(), RM, NONCE, bob.password) is None
    assert cluster.store.loads == 2
    assert isinstance(outcome(standby, _query(identifier=[b"AAAA"], nonce=[NONCE.encode()])), RestError)
    assert cluster.store.loads == 2
    cluster.credentials.revoke_user("alice")
    assert isinstance(outcome(standby, args), dict)  # the copy is younger than MAX_AGE_S
    cluster.clock.advance(MAX_AGE_S)
    revoked = outcome(standby, args)
    assert isinstance(revoked, RestError) and revoked.status == 403 and cluster.store.loads == 3
    assert cluster.store.with_applications == 0  # (the keys and tokens: no reload reads every application)


def test_a_standby_without_a_copy_of_the_keys_asks_to_retry(cluster: Cluster) -> None:
    _, fs = cluster.tokens("alice")
    empty = CountingStore()
    answer = outcome(RmProofs(StoredSecrets(empty, cluster.clock, cluster.now_ms), cluster.clock, OWN),
                     args_of(ProofQuery(fs.identifier, NONCE)))  # fmt: skip
    assert isinstance(answer, RestError) and answer.status == 503 and "no copy" in answer.message


def test_concurrent_questions_share_one_load() -> None:
    """Questions that arrive while the standby's copy loads wait for that load, not one each."""
    cluster = Cluster()
    _, fs = cluster.tokens("alice")
    held: list[defer.Deferred[StoredState]] = []

    class SlowStore(CountingStore):
        def load(self, applications: bool = True) -> defer.Deferred[StoredState]:
            self.loads += 1
            d: defer.Deferred[StoredState] = defer.Deferred()
            held.append(d)
            return d

    slow = SlowStore()
    proofs = RmProofs(StoredSecrets(slow, cluster.clock, cluster.now_ms), cluster.clock, OWN)
    answers: list[Any] = []
    for k in range(3):
        proofs.answer(args_of(ProofQuery(fs.identifier, NONCE)), "rm1.test:8088", f"10.0.0.{k}").addBoth(answers.append)
    assert slow.loads == 1 and not answers
    cluster.store.load().addCallback(held[0].callback)
    assert len(answers) == 3 and all(isinstance(a, dict) for a in answers)


def render(
    resource: Any, path: bytes, query: ProofQuery | None, host: bytes = b"rm1.test:8088", method: bytes = b"GET"
) -> tuple[DummyRequest, Any]:
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = method
    request.path = path  # type: ignore[attr-defined]
    request.uri = path
    request.args = args_of(query) if query is not None else {}
    request.requestHeaders.setRawHeaders(b"host", [host])
    result = request.render(resource)
    del result
    body = b"".join(request.written)
    return request, json.loads(body) if body else None


def test_a_standbys_web_port_answers_the_question(cluster: Cluster) -> None:
    """Through ``StandbyWeb``: the proof, as JSON with its Content-Type, even during an election (no active known)."""
    _, fs = cluster.tokens("alice")
    proofs = RmProofs(StoredSecrets(cluster.store, cluster.clock, cluster.now_ms), cluster.clock, OWN)
    web = StandbyWeb(lambda: None, lambda: standby_cluster_info("9.9", 1), RmProofResource(proofs))
    request, body = render(web, PROOF_PATH.encode(), ProofQuery(fs.identifier, NONCE))
    assert request.responseCode == 200 and judge(200, json.dumps(body).encode(), RM, NONCE, fs.password) is None
    assert request.responseHeaders.getRawHeaders(b"Content-Type") == [b"application/json; charset=utf-8"]
    request, body = render(web, PROOF_PATH.encode(), ProofQuery(fs.identifier, NONCE), method=b"POST")
    assert request.responseCode == 405 and body["RemoteException"]["exception"] == "WebApplicationException"


# -- domain separation --------------------------------------------------------------------------------------

#: Every HMAC Cortex computes, by module: what keys it and what its message starts with.  A new one must be
#: added here once it is checked that no message of it can equal an RM proof's (``DOMAIN``) or vice versa.
HMACS = {
    "events/request_proofs.py": 3,  # entry keys (a token's password; KEY_DOMAIN) and signatures (an entry key; SCHEME)
    "fs/tickets.py": 1,  # the file system's tickets: its own master key
    "yarn/tokens.py": 1,  # Hadoop's token passwords: HMAC-SHA1 under master keys (the identifier as message)
    "yarn/rm_proof.py": 1,  # RM proofs: a WebHDFS token's password; DOMAIN
}


def hmac_calls() -> Counter[str]:
    root = Path(cortex_rm.__file__).parent
    found: Counter[str] = Counter()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "new":
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "hmac":
                    found[str(path.relative_to(root))] += 1
    return found


def test_every_hmac_in_cortex_is_in_the_inventory_checked_against_rm_proofs() -> None:
    assert hmac_calls() == Counter(HMACS)


def test_the_proofs_domain_is_no_other_messages_prefix_nor_they_its() -> None:
    """The messages keyed by a token's password (or keys derived from one) start with these; none is a prefix of
    another, so no proof's message is any of theirs."""
    prefixes = [DOMAIN, KEY_DOMAIN, SCHEME.encode() + b"\n"]
    for a in prefixes:
        for b in prefixes:
            assert a is b or not b.startswith(a)


@given(st.text("0123456789abcdef", min_size=32, max_size=32), st.from_regex(r"[a-z0-9.]{1,20}:[0-9]{1,5}", fullmatch=True))
def test_a_proof_is_never_an_entry_key(nonce: str, address: str) -> None:
    """An entry key is HMAC-SHA256 under the same kind of key (a password) of ``KEY_DOMAIN`` + ring id + hour: the
    proof's message starts otherwise, so for the same password the two never coincide."""
    password = b"p" * 20
    proof = rm_proof(password, nonce, address, address, address)
    assert not message(nonce, address, address, address).startswith(KEY_DOMAIN)
    assert proof != entry_key(password, int(nonce, 16) % (1 << 160), 0)


@pytest.mark.parametrize("bad", ["a b:1", "a\x00b:1", "", "é:1"])
def test_an_address_that_could_blur_the_fields_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        message(NONCE, bad, "rm1.test:8032", "rm1.test:8030")
    with pytest.raises(ValueError):
        message(NONCE[:-1] + "\x00", "rm1.test:8088", "rm1.test:8032", "rm1.test:8030")


@pytest.mark.parametrize("anonymous_access", ["cluster-info", "none"])
def test_the_rms_rest_site_answers_without_a_credential_once_its_addresses_are_claimed(anonymous_access: str) -> None:
    """``/ws/v1/cortex/rm-proof`` on the active's REST site (``build_rest_site``), asked without any credential,
    even where anonymous callers may see nothing else; 503 until the RM claims its bound addresses."""
    from cortex_rm.yarn_api.rest import build_rest_site
    from tests.unit.test_rest_api import http, make_cluster

    rest = make_cluster()
    auth = UserAuthenticator(rest.auth.credentials, anonymous_access)
    site = build_rest_site(rest.rm, version="9.9", auth=auth)
    box: list[Any] = []
    auth.credentials.issue("alice").addBoth(box.append)
    [_, (_, fs)] = auth.tokens_for(box[0], "10.0.0.1:8032", "10.0.0.1:8088")
    target = ProofQuery(fs.identifier, NONCE).target()
    assert http(site, "GET", target).status == 503
    assert site.rm_proofs is not None
    site.rm_proofs.claim(HostPort("rm.test", 8088), HostPort("rm.test", 8032), HostPort("rm.test", 8030))
    response = http(site, "GET", target)  # (the test client's Host: rm.test:8088)
    assert response.status == 200 and response.headers["content-type"] == "application/json; charset=utf-8"
    rm = RMAddresses(HostPort("rm.test", 8032), HostPort("rm.test", 8030), HostPort("rm.test", 8088))
    assert judge(200, response.body, rm, NONCE, fs.password) is None
    assert http(site, "GET", target + "&op=x").json()["RemoteException"]["exception"] == "BadRequestException"
