"""Fuzzing the RM proof endpoint (``yarn/rm_proof.parse_query``, ``yarn_api/rm_proof_web.RmProofs``) with the query
arguments and ``Host`` anyone may send it (random bytes, mutations of a valid question), and the client's reading of
an answer (``rm_verification.judge``) with what any server may answer: the endpoint's answer is a proof or a
``RestError`` of the REST API's form (4xx, or 503 to retry), never another exception; ``parse_query`` gives back
what a valid question asked; the client's verdict is a reason string unless the proof matches."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.python.failure import Failure

from cortex_rm.rm_verification import judge
from cortex_rm.yarn.rm_proof import MalformedProofQuery, ProofQuery, encode_identifier, parse_query
from cortex_rm.yarn_api.rest_errors import RestError
from cortex_rm.yarn_api.rm_proof_web import LiveSecrets, RmProofs
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.unit.test_rm_proof import NONCE, OWN, RM, Cluster, args_of

CLUSTER = Cluster()
_, TOKEN = CLUSTER.tokens("alice")
VALID = {b"identifier": [encode_identifier(TOKEN.identifier).encode()], b"nonce": [NONCE.encode()]}
KEYS = st.sampled_from([b"identifier", b"nonce", b"op", b"", b"Identifier"]) | st.binary(max_size=12)
VALUES = st.binary(max_size=80) | mutated(st.just(VALID[b"identifier"][0])) | mutated(st.just(NONCE.encode()))
ARGS = st.one_of(
    st.dictionaries(KEYS, st.lists(VALUES, min_size=0, max_size=3), max_size=4),
    st.builds(lambda k, v: {**VALID, k: [v]}, st.sampled_from([b"identifier", b"nonce"]), VALUES),
    st.just(VALID),
)
HOSTS = st.sampled_from(["rm1.test:8088", "RM1.TEST:8088", "evil.test:8088", ""]) | st.text(max_size=30)


@fuzz_settings(400)
@given(ARGS)
def test_a_query_parses_into_a_question_or_is_refused(args: dict[bytes, list[bytes]]) -> None:
    try:
        query = parse_query(args)
    except MalformedProofQuery:
        return
    assert 0 < len(query.identifier) <= 1024 and len(query.nonce) == 32
    assert parse_query(args_of(query)) == query


@fuzz_settings(400)
@given(ARGS, HOSTS)
def test_any_question_gets_a_proof_or_a_rest_error(args: dict[bytes, list[bytes]], host: str) -> None:
    proofs = RmProofs(LiveSecrets(CLUSTER.credentials), CLUSTER.clock, OWN)  # (a fresh rate limit each time)
    box: list[Any] = []
    proofs.answer(args, host, "10.0.0.1").addBoth(box.append)
    assert box
    if isinstance(box[0], Failure):
        error = box[0].value
        assert isinstance(error, RestError), box[0].getTraceback()
        assert error.status in (400, 403) and json.dumps(error.body())
        return
    assert host.lower() == "rm1.test:8088" and len(box[0]["proof"]) == 64
    assert parse_query(args) == ProofQuery(TOKEN.identifier, NONCE)


ANSWERS = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda v: json.dumps({"proof": v}).encode(), st.text(max_size=70) | st.integers() | st.none()),
    mutated(st.just(json.dumps({"proof": "ab" * 32}).encode())),
    mutated(st.just(b'{"RemoteException": {"exception": "InvalidToken", "message": "expired"}}')),
)


@fuzz_settings(400)
@given(st.integers(100, 599), ANSWERS)
def test_any_answer_is_a_reason_to_drop_the_rm(status: int, body: bytes) -> None:
    reason = judge(status, body, RM, NONCE, TOKEN.password)
    assert isinstance(reason, str) and reason.isascii() and reason.isprintable()
