"""SASL through the connection core: SIMPLE fallback, DIGEST-MD5 tokens, and refusals.

The client side follows Hadoop's ``SaslRpcClient``: NEGOTIATE, then INITIATE with the
chosen auth echoed back (challenge cleared) and, for TOKEN, the DIGEST-MD5 response
computed from the advertised challenge (``tests/support/ipc_frames.digest_md5_response``).
"""

from __future__ import annotations

import itertools

import pytest

from cortex_rm.yarn_api import errors
from cortex_rm.yarn_api.digest_md5 import DigestMd5Failure
from cortex_rm.yarn_api.ipc_connection import IpcConnection
from cortex_rm.yarn_api.ipc_events import ConnectionState
from cortex_rm.yarn_api.proto.IpcConnectionContext_pb2 import UserInformationProto
from cortex_rm.yarn_api.proto.RpcHeader_pb2 import RpcSaslProto
from cortex_rm.yarn_api.rpc_protocol import AuthMethod, CallContext, RpcProtocol
from cortex_rm.yarn_api.sasl import NegotiationState, SaslServer
from tests.support.ipc_frames import (
    AUTH_SASL,
    SUCCESS,
    TEST_PROTOCOL,
    TEST_SERVICE,
    call_frame,
    context_frame,
    delimited,
    digest_md5_response,
    frame,
    preamble,
    request_header,
    sasl_frame,
)
from tests.unit.test_ipc_connection import Outcome, drive, single_fatal

IDENTIFIER = b"\x0a\x0d\x0a\x09\x08\x01\x10\xc7\x81\x87\xd7\xa0\x34\x10\x01\x10\x07"
PASSWORD = b"amrm-token-password"
NEGOTIATE = sasl_frame(RpcSaslProto(state=RpcSaslProto.NEGOTIATE))
SIMPLE_AUTH = RpcSaslProto.SaslAuth(method="SIMPLE", mechanism="")
TOKEN_AUTH = RpcSaslProto.SaslAuth(method="TOKEN", mechanism="DIGEST-MD5", protocol="", serverId="default")


def who_am_i(call: CallContext, request: object) -> UserInformationProto:
    """Answer with how the server identified the caller."""
    return UserInformationProto(
        effectiveUser=call.auth_method.value, realUser=(call.token_identifier or b"").hex()
    )


PROTOCOL = RpcProtocol.from_service(TEST_PROTOCOL, TEST_SERVICE, {"whoAmI": who_am_i})


def counting_bytes(n: int) -> bytes:
    """Deterministic nonce material."""
    return bytes(itertools.islice(itertools.cycle(range(256)), n))


def token_port(*, allow_simple: bool = True, passwords: dict[bytes, bytes] | None = None) -> SaslServer:
    """A scheduler-style port: TOKEN (DIGEST-MD5) first, SIMPLE too unless disabled."""
    table = {IDENTIFIER: PASSWORD} if passwords is None else passwords
    return SaslServer(table.get, random_bytes=counting_bytes, allow_simple=allow_simple)


def connect(sasl_server: SaslServer) -> IpcConnection:
    """A connection of a port with ``sasl_server`` serving the test protocol."""
    return IpcConnection({PROTOCOL.name: PROTOCOL}, sasl_server, peer="127.0.0.1:50000")


def sasl_reply(outcome: Outcome) -> RpcSaslProto:
    """The single callId -33 SUCCESS reply of ``outcome``, decoded."""
    [reply] = outcome.replies
    assert (reply.call_id, reply.status) == (-33, SUCCESS)
    assert reply.header.clientId == b"" and reply.header.retryCount == -1
    return reply.parse_body(RpcSaslProto)  # type: ignore[return-value]


def initiate(auth: RpcSaslProto.SaslAuth, token: bytes | None = None) -> bytes:
    """INITIATE echoing ``auth`` (challenge cleared), with the first response token."""
    message = RpcSaslProto(state=RpcSaslProto.INITIATE)
    chosen = message.auths.add()
    chosen.CopyFrom(auth)
    chosen.ClearField("challenge")
    if token is not None:
        message.token = token
    return sasl_frame(message)


def who(connection: IpcConnection) -> UserInformationProto:
    """Make a whoAmI call on an established connection and return the answer."""
    [reply] = drive(connection, call_frame(1, "whoAmI", TEST_PROTOCOL)).replies
    assert reply.status == SUCCESS
    return reply.parse_body(UserInformationProto)  # type: ignore[return-value]


def negotiate_token(connection: IpcConnection) -> RpcSaslProto:
    """Preamble + NEGOTIATE on a token port; returns the server's NEGOTIATE reply."""
    return sasl_reply(drive(connection, preamble(AUTH_SASL) + NEGOTIATE))


# --- simple-only ports --------------------------------------------------------------------


def test_simple_only_port_answers_negotiate_with_success() -> None:
    """NEGOTIATE -> {state: SUCCESS}: the Java client falls back to SIMPLE and sends its context."""
    connection = connect(SaslServer.simple_only())
    reply = sasl_reply(drive(connection, preamble(AUTH_SASL) + NEGOTIATE))
    assert reply == RpcSaslProto(state=RpcSaslProto.SUCCESS)
    assert connection.state is ConnectionState.AWAIT_CONTEXT
    drive(connection, context_frame(TEST_PROTOCOL, user="root"))
    assert who(connection).effectiveUser == "SIMPLE"
    assert connection.effective_user == "root"


def test_sasl_after_simple_fallback_is_fatal() -> None:
    """Once switched to SIMPLE, another -33 frame is 'SASL protocol not requested by client'."""
    connection = connect(SaslServer.simple_only())
    fatal = single_fatal(drive(connection, preamble(AUTH_SASL) + NEGOTIATE + NEGOTIATE))
    assert fatal.call_id == -33
    assert fatal.header.errorMsg == "SASL protocol not requested by client"


# --- token ports ------------------------------------------------------------------------------


def test_token_port_advertises_token_first_with_a_challenge_then_simple() -> None:
    """NEGOTIATE lists TOKEN/DIGEST-MD5 (protocol '', serverId 'default', challenge) then SIMPLE."""
    reply = negotiate_token(connect(token_port()))
    assert reply.state == RpcSaslProto.NEGOTIATE
    token, simple = reply.auths
    assert (token.method, token.mechanism, token.protocol, token.serverId) == ("TOKEN", "DIGEST-MD5", "", "default")
    assert token.challenge.startswith(b'realm="default",nonce="')
    assert token.challenge.endswith(b'",qop="auth",charset=utf-8,algorithm=md5-sess')
    assert simple == SIMPLE_AUTH


def test_digest_md5_success_puts_the_token_identifier_in_every_call() -> None:
    """A correct response gets SUCCESS{rspauth}; calls then carry TOKEN and the identifier."""
    connection = connect(token_port())
    challenge = negotiate_token(connection).auths[0].challenge
    response, rspauth = digest_md5_response(challenge, identifier=IDENTIFIER, password=PASSWORD)
    reply = sasl_reply(drive(connection, initiate(TOKEN_AUTH, response)))
    assert reply == RpcSaslProto(state=RpcSaslProto.SUCCESS, token=rspauth)
    assert connection.state is ConnectionState.AWAIT_CONTEXT
    # Under TOKEN the Java client sends an empty userInfo: the token names the caller.
    drive(connection, context_frame(TEST_PROTOCOL, user=None))
    answer = who(connection)
    assert answer.effectiveUser == "TOKEN"
    assert bytes.fromhex(answer.realUser) == IDENTIFIER
    assert connection.auth_method is AuthMethod.TOKEN
    assert connection.effective_user is None


def test_client_choosing_simple_on_a_token_port_gets_no_reply() -> None:
    """INITIATE{SIMPLE} ends SASL silently; the context follows and calls are SIMPLE."""
    connection = connect(token_port())
    negotiate_token(connection)
    outcome = drive(connection, initiate(SIMPLE_AUTH))
    assert outcome.output == b""
    drive(connection, context_frame(TEST_PROTOCOL))
    assert who(connection).effectiveUser == "SIMPLE"


def test_unknown_token_is_refused_with_invalid_token() -> None:
    """A forged or expired identifier: FATAL_UNAUTHORIZED SecretManager$InvalidToken on callId -33."""
    connection = connect(token_port(passwords={}))
    challenge = negotiate_token(connection).auths[0].challenge
    response, _ = digest_md5_response(challenge, identifier=IDENTIFIER, password=PASSWORD)
    fatal = single_fatal(drive(connection, initiate(TOKEN_AUTH, response)))
    assert fatal.call_id == -33
    assert fatal.header.errorDetail == errors.FATAL_UNAUTHORIZED
    assert fatal.exception_class == "org.apache.hadoop.security.token.SecretManager$InvalidToken"
    assert connection.state is ConnectionState.CLOSED


def test_wrong_password_is_refused_with_sasl_exception() -> None:
    """A response computed with another password: FATAL_UNAUTHORIZED SaslException."""
    connection = connect(token_port())
    challenge = negotiate_token(connection).auths[0].challenge
    response, _ = digest_md5_response(challenge, identifier=IDENTIFIER, password=b"not-the-password")
    fatal = single_fatal(drive(connection, initiate(TOKEN_AUTH, response)))
    assert fatal.call_id == -33
    assert fatal.header.errorDetail == errors.FATAL_UNAUTHORIZED
    assert fatal.exception_class == errors.SASL_EXCEPTION
    assert "Mismatched response" in fatal.header.errorMsg


def test_response_to_another_connections_challenge_is_refused() -> None:
    """A response replayed from another connection (other nonce) does not authenticate."""
    first, second = connect(token_port()), connect(SaslServer({IDENTIFIER: PASSWORD}.get, random_bytes=lambda n: b"\x07" * n))
    response, _ = digest_md5_response(negotiate_token(first).auths[0].challenge, identifier=IDENTIFIER, password=PASSWORD)
    negotiate_token(second)
    fatal = single_fatal(drive(second, initiate(TOKEN_AUTH, response)))
    assert "nonce" in fatal.header.errorMsg


def test_password_lookup_can_answer_standby() -> None:
    """A standby RM's lookup may raise StandbyException; the client sees exactly that class."""

    def standby(identifier: bytes) -> bytes:
        raise DigestMd5Failure(errors.STANDBY_EXCEPTION, "Cortex RM is standby")

    connection = connect(SaslServer(standby, random_bytes=counting_bytes))
    challenge = negotiate_token(connection).auths[0].challenge
    response, _ = digest_md5_response(challenge, identifier=IDENTIFIER, password=PASSWORD)
    fatal = single_fatal(drive(connection, initiate(TOKEN_AUTH, response)))
    assert fatal.exception_class == errors.STANDBY_EXCEPTION


@pytest.mark.parametrize(
    ("messages", "java_class", "detail", "message"),
    [
        ([RpcSaslProto(state=RpcSaslProto.NEGOTIATE)], errors.ACCESS_CONTROL_EXCEPTION, errors.FATAL_UNAUTHORIZED,
         "Client already attempted negotiation"),
        ([RpcSaslProto(state=RpcSaslProto.INITIATE, auths=[RpcSaslProto.SaslAuth(method="KERBEROS", mechanism="GSSAPI")])],
         errors.ACCESS_CONTROL_EXCEPTION, errors.FATAL_UNAUTHORIZED,
         "KERBEROS authentication is not enabled.  Available:[TOKEN, SIMPLE]"),
        ([RpcSaslProto(state=RpcSaslProto.INITIATE, auths=[TOKEN_AUTH, SIMPLE_AUTH])], errors.SASL_EXCEPTION,
         errors.FATAL_UNAUTHORIZED, "Client mechanism is malformed"),
        ([RpcSaslProto(state=RpcSaslProto.INITIATE, auths=[TOKEN_AUTH])], errors.SASL_EXCEPTION,
         errors.FATAL_UNAUTHORIZED, "Client did not send a token"),
        ([RpcSaslProto(state=RpcSaslProto.CHALLENGE)], errors.SASL_EXCEPTION, errors.FATAL_UNAUTHORIZED,
         "Client sent unsupported state CHALLENGE"),
        ([RpcSaslProto(state=RpcSaslProto.WRAP, token=b"x")], errors.SASL_EXCEPTION, errors.FATAL_INVALID_RPC_HEADER,
         "Server is not wrapping data"),
    ],
    ids=["second-negotiate", "kerberos", "two-auths", "no-token", "challenge-from-client", "wrap"],
)
def test_sasl_protocol_violations_are_fatal(
    messages: list[RpcSaslProto], java_class: str, detail: int, message: str
) -> None:
    """Messages out of place in the exchange are answered FATAL on callId -33, as Hadoop does."""
    connection = connect(token_port())
    negotiate_token(connection)
    fatal = single_fatal(drive(connection, b"".join(sasl_frame(m) for m in messages)))
    assert fatal.call_id == -33
    assert (fatal.exception_class, fatal.header.errorDetail, fatal.header.errorMsg) == (java_class, detail, message)


def test_response_before_initiate_is_fatal() -> None:
    """RESPONSE with no INITIATE before it is refused."""
    connection = connect(token_port())
    fatal = single_fatal(
        drive(connection, preamble(AUTH_SASL) + sasl_frame(RpcSaslProto(state=RpcSaslProto.RESPONSE, token=b"x")))
    )
    assert fatal.exception_class == errors.SASL_EXCEPTION


def test_initiate_token_without_negotiate_is_fatal() -> None:
    """TOKEN needs the challenge of a NEGOTIATE; an INITIATE straight away cannot carry a valid response."""
    connection = connect(token_port())
    fatal = single_fatal(drive(connection, preamble(AUTH_SASL) + initiate(TOKEN_AUTH, b"username=x")))
    assert fatal.header.errorDetail == errors.FATAL_UNAUTHORIZED


def test_initiate_of_an_unoffered_auth_without_negotiate_gets_the_offer() -> None:
    """A client that skipped NEGOTIATE and asked for something else is told what is offered."""
    connection = connect(token_port())
    kerberos = RpcSaslProto.SaslAuth(method="KERBEROS", mechanism="GSSAPI")
    reply = sasl_reply(drive(connection, preamble(AUTH_SASL) + initiate(kerberos)))
    assert reply.state == RpcSaslProto.NEGOTIATE
    assert [a.method for a in reply.auths] == ["TOKEN", "SIMPLE"]


def test_sasl_after_token_success_is_fatal() -> None:
    """After authentication, another SASL message is 'Negotiation is already complete'."""
    connection = connect(token_port())
    challenge = negotiate_token(connection).auths[0].challenge
    response, _ = digest_md5_response(challenge, identifier=IDENTIFIER, password=PASSWORD)
    drive(connection, initiate(TOKEN_AUTH, response))
    fatal = single_fatal(drive(connection, NEGOTIATE))
    assert fatal.header.errorDetail == errors.FATAL_INVALID_RPC_HEADER
    assert fatal.header.errorMsg == "Negotiation is already complete"


def test_context_during_sasl_is_fatal() -> None:
    """The context may only follow a finished negotiation."""
    connection = connect(token_port())
    negotiate_token(connection)
    fatal = single_fatal(drive(connection, context_frame(TEST_PROTOCOL)))
    assert fatal.call_id == -3
    assert fatal.header.errorMsg == "Connection header sent during SASL negotiation"


def test_call_during_sasl_is_fatal() -> None:
    """No call before SASL and the context are done."""
    connection = connect(token_port())
    fatal = single_fatal(drive(connection, preamble(AUTH_SASL) + call_frame(0, "whoAmI", TEST_PROTOCOL)))
    assert fatal.header.errorMsg == "Connection context not established"


def test_undecodable_sasl_message_is_fatal() -> None:
    """A -33 frame whose RpcSaslProto is garbage (or lacks 'state'): FATAL_DESERIALIZING_REQUEST."""
    header = delimited(request_header(-33, client_id=b"", retry_count=-1))
    for payload in (b"\x05\xff\xff", delimited(b"")):  # overrun; empty message without required state
        connection = connect(token_port())
        fatal = single_fatal(drive(connection, preamble(AUTH_SASL) + frame(header, payload)))
        assert fatal.call_id == -33
        assert fatal.header.errorDetail == errors.FATAL_DESERIALIZING_REQUEST


def test_token_only_port_refuses_simple_clients() -> None:
    """With allow_simple=False: auth byte NONE and INITIATE{SIMPLE} are AccessControlException."""
    fatal = single_fatal(drive(connect(token_port(allow_simple=False)), preamble()))
    assert fatal.call_id == -1
    assert fatal.exception_class == errors.ACCESS_CONTROL_EXCEPTION
    assert fatal.header.errorMsg == "SIMPLE authentication is not enabled.  Available:[TOKEN]"

    connection = connect(token_port(allow_simple=False))
    assert [a.method for a in negotiate_token(connection).auths] == ["TOKEN"]
    fatal = single_fatal(drive(connection, initiate(SIMPLE_AUTH)))
    assert fatal.exception_class == errors.ACCESS_CONTROL_EXCEPTION


def test_a_port_needs_some_authentication_method() -> None:
    """Neither TOKEN nor SIMPLE is a configuration error."""
    with pytest.raises(ValueError):
        SaslServer(None, allow_simple=False)


def test_negotiation_reports_its_states() -> None:
    """AWAIT_NEGOTIATE -> NEGOTIATED -> TOKEN_SUCCEEDED, visible to the policy's user."""
    negotiation = token_port().start()
    assert negotiation.state is NegotiationState.AWAIT_NEGOTIATE
    step = negotiation.receive(RpcSaslProto(state=RpcSaslProto.NEGOTIATE))
    assert negotiation.state is NegotiationState.NEGOTIATED and step.outcome is None
    assert step.reply is not None
    response, _ = digest_md5_response(step.reply.auths[0].challenge, identifier=IDENTIFIER, password=PASSWORD)
    message = RpcSaslProto(state=RpcSaslProto.INITIATE, token=response, auths=[TOKEN_AUTH])
    step = negotiation.receive(message)
    assert negotiation.state is NegotiationState.TOKEN_SUCCEEDED and negotiation.done
    assert step.outcome is not None and step.outcome.token_identifier == IDENTIFIER
