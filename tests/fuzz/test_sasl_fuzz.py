"""Fuzzing the SASL negotiation and DIGEST-MD5: any client message is a valid step or ``SaslRejected``.

* ``SaslNegotiation.receive`` over sequences of random ``RpcSaslProto`` messages (every
  state, random auths, random tokens), on a token port and a simple-only one: each step
  is a reply that serializes, or ``SaslRejected`` with a FATAL error code; after a
  rejection every later message is rejected too; TOKEN success names the one known token.
* ``DigestMd5Server.verify`` over random bytes and over mutations of a valid response
  (directive values replaced, directives dropped or repeated, bytes flipped): a
  ``DigestMd5Failure``, or success for the known identifier only.
* The client side (``DigestMd5Client``) over random challenges and final tokens from a
  server it does not trust: a response or ``DigestMd5Failure``.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from cortex_rm.yarn_api.digest_md5 import DigestMd5Client, DigestMd5Failure, DigestMd5Server, parse_directives
from cortex_rm.yarn_api.errors import FATAL_UNKNOWN
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod
from cortex_rm.yarn_api.sasl import MECHANISM_DIGEST_MD5, NegotiationState, SaslRejected, SaslServer
from tests.fuzz.fuzzing import fuzz_settings, mutated
from tests.fuzz.messages import protobuf_messages, texts
from tests.support.ipc_frames import digest_md5_response

IDENTIFIER = b"fuzz-token-identifier"
PASSWORD = b"fuzz-token-password"


def _nonce_bytes(n: int) -> bytes:
    return bytes(range(1, n + 1))


def _password_for(identifier: bytes) -> bytes | None:
    return PASSWORD if identifier == IDENTIFIER else None


CHALLENGE = DigestMd5Server(password_for=_password_for, random_bytes=_nonce_bytes).challenge()
VALID_RESPONSE, _ = digest_md5_response(CHALLENGE, identifier=IDENTIFIER, password=PASSWORD)

TOKEN_AUTH = RpcSaslProto.SaslAuth(method="TOKEN", mechanism=MECHANISM_DIGEST_MD5, protocol="", serverId="default")
SIMPLE_AUTH = RpcSaslProto.SaslAuth(method="SIMPLE", mechanism="")

auths = st.one_of(
    st.sampled_from([TOKEN_AUTH, SIMPLE_AUTH]),
    st.builds(
        RpcSaslProto.SaslAuth,
        method=st.sampled_from(["TOKEN", "SIMPLE", "KERBEROS", ""]) | texts(),
        mechanism=st.sampled_from([MECHANISM_DIGEST_MD5, "", "GSSAPI"]) | texts(),
        protocol=st.sampled_from(["", "yarn"]),
        serverId=st.sampled_from(["default", ""]),
    ),
)
tokens = st.one_of(st.none(), st.just(VALID_RESPONSE), st.binary(max_size=64), mutated(st.just(VALID_RESPONSE)))


def _sasl(state: int, auth_list: list[RpcSaslProto.SaslAuth], token: bytes | None) -> RpcSaslProto:
    message = RpcSaslProto(state=state)  # type: ignore[arg-type]
    message.auths.extend(auth_list)
    if token is not None:
        message.token = token
    return message


sasl_messages = st.one_of(
    st.builds(
        _sasl,
        st.sampled_from([v.number for v in RpcSaslProto.SaslState.DESCRIPTOR.values]),
        st.lists(auths, max_size=3),
        tokens,
    ),
    protobuf_messages(RpcSaslProto, initialized=True),
)


@fuzz_settings(140)
@given(messages=st.lists(sasl_messages, min_size=1, max_size=5), token_port=st.booleans())
@example(
    messages=[
        _sasl(RpcSaslProto.NEGOTIATE, [], None),
        _sasl(RpcSaslProto.INITIATE, [TOKEN_AUTH], VALID_RESPONSE),
    ],
    token_port=True,
).via("the valid TOKEN exchange")
def test_any_message_sequence_is_a_step_or_rejected(messages: list[RpcSaslProto], token_port: bool) -> None:
    """Each message: a step whose reply serializes, or SaslRejected (FATAL); once rejected, always rejected."""
    server = SaslServer(_password_for, random_bytes=_nonce_bytes) if token_port else SaslServer.simple_only()
    negotiation = server.start()
    rejected = False
    for message in messages:
        try:
            step = negotiation.receive(message)
        except SaslRejected as exc:
            assert exc.error_detail >= FATAL_UNKNOWN  # a FATAL reply's code
            assert negotiation.state is NegotiationState.FAILED or negotiation.done
            rejected = True
            continue
        assert not rejected, "a step after a rejection"
        if step.reply is not None:
            step.reply.SerializeToString()  # complete: every required field set
        if step.outcome is not None:
            assert negotiation.done
            if step.outcome.auth_method is AuthMethod.TOKEN:
                assert step.outcome.token_identifier == IDENTIFIER


def _replace_directive(response: bytes, name: str, value: str, quoted: bool) -> bytes:
    text = response.decode()
    new = f'{name}="{value}"' if quoted else f"{name}={value}"
    return re.sub(rf'{name}=("[^"]*"|[^,]*)', lambda _: new, text, count=1).encode("utf-8")


DIRECTIVES = [
    "username",
    "realm",
    "nonce",
    "nc",
    "cnonce",
    "digest-uri",
    "response",
    "qop",
    "charset",
    "authzid",
    "maxbuf",
]
responses = st.one_of(
    st.binary(max_size=300),
    mutated(st.just(VALID_RESPONSE), max_mutations=6),
    st.builds(_replace_directive, st.just(VALID_RESPONSE), st.sampled_from(DIRECTIVES), texts(40), st.booleans()),
    st.builds(
        lambda extra, first: VALID_RESPONSE + b"," + extra if first else extra + b"," + VALID_RESPONSE,
        st.sampled_from([b"realm=x", b"cipher=rc4", b'qop="auth-int"', b"nc=00000001", b'authzid="x"', b"a", b"="]),
        st.booleans(),
    ),
    st.just(b"x" * 5000),
)


@fuzz_settings(280)
@given(response=responses)
@example(response=VALID_RESPONSE).via("the valid response")
@example(response=b'username="\\').via("an escape at the end of a quoted value")
@example(response=_replace_directive(VALID_RESPONSE, "nc", "\u0661" * 8, False)).via("a nonce count in Arabic digits")
def test_digest_md5_responses_verify_or_fail(response: bytes) -> None:
    """Any response: DigestMd5Failure, or success naming the known identifier with an rspauth token."""
    server = DigestMd5Server(password_for=_password_for, random_bytes=_nonce_bytes)
    server.challenge()
    try:
        success = server.verify(response)
    except DigestMd5Failure as failure:
        assert failure.java_class and failure.message
        return
    assert success.identifier == IDENTIFIER
    assert re.fullmatch(rb"rspauth=[0-9a-f]{32}", success.rspauth)


@fuzz_settings(140)
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=100).map(lambda t: t.encode("utf-8"))))
def test_directives_parse_or_fail(data: bytes) -> None:
    """parse_directives over anything: lower-case names mapped to text, or DigestMd5Failure."""
    try:
        directives = parse_directives(data)
    except DigestMd5Failure:
        return
    assert all(name == name.lower() for name in directives)


challenges = st.one_of(
    st.binary(max_size=200),
    mutated(st.just(CHALLENGE), max_mutations=6),
    st.builds(
        _replace_directive,
        st.just(CHALLENGE),
        st.sampled_from(["realm", "nonce", "qop", "charset", "algorithm"]),
        texts(30),
        st.booleans(),
    ),
)


@fuzz_settings(140)
@given(challenge=challenges, final=st.one_of(st.binary(max_size=80), mutated(st.just(b"rspauth=" + b"0" * 32))))
def test_the_client_answers_any_challenge_or_fails(challenge: bytes, final: bytes) -> None:
    """A hostile server's challenge and final token: a response and a checked rspauth, or DigestMd5Failure."""
    client = DigestMd5Client(IDENTIFIER, PASSWORD, random_bytes=_nonce_bytes)
    try:
        response = client.respond(challenge, "/default")
    except DigestMd5Failure:
        return
    assert response.startswith(b"charset=utf-8,")
    try:
        client.check(final)
    except DigestMd5Failure:
        pass
